"""Multiple-choice QA benchmarks for the utility suites, as one item type.

* ARC-Easy and ARC-Challenge, and OpenBookQA (Main): AI2's JSON Lines
  (``{"id", "question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}``). Labels are
  letters or, for some ARC questions, ``1``-``4``; a question has 3 to 5 choices. The answer is mapped
  by its label's *position* among the choices, never by assuming letters.
* MMLU: its CSVs through :func:`fairlens.data.mmlu.load_mmlu`, converted by :func:`mmlu_items`.

Every loader refuses a malformed line naming the file, the line and the field, and checks the count
of the official release (the numbers the data folders' READMEs give).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fairlens.data.fetch import read_utf8
from fairlens.data.mmlu import MMLUItem
from fairlens.errors import DataError

__all__ = [
    "ARC_OFFICIAL_COUNTS",
    "MC_LETTERS",
    "OPENBOOKQA_OFFICIAL_COUNTS",
    "MCItem",
    "load_arc",
    "load_openbookqa",
    "mmlu_items",
    "sample_mc",
]

MC_LETTERS = "ABCDE"
"""Answer letters of a multiple-choice prompt (ARC has up to five choices)."""

ARC_OFFICIAL_COUNTS: dict[tuple[str, str], int] = {
    ("challenge", "test"): 1_172,
    ("challenge", "dev"): 299,
    ("easy", "test"): 2_376,
    ("easy", "dev"): 570,
}
"""Questions per ARC subset and split (ARC-V1-Feb2018)."""

OPENBOOKQA_OFFICIAL_COUNTS: dict[str, int] = {"test": 500, "dev": 500}
"""Questions per OpenBookQA (Main) split (OpenBookQA-V1-Sep2018)."""


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question.

    Attributes:
        dataset: ``"mmlu"``, ``"arc_easy"``, ``"arc_challenge"`` or ``"openbookqa"``.
        split: The release's split (``"test"``, ``"dev"``, ``"val"``).
        uid: Unique id (dataset, split and the release's id or row).
        question: The question (ARC / OpenBookQA stem).
        choices: The options in the release's order (2 to 5).
        answer: Index of the correct option.
        subject: MMLU subject (None elsewhere).
    """

    dataset: str
    split: str
    uid: str
    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str | None = None


def _folder(root: str | Path, name: str) -> Path:
    base = Path(root)
    return base / name if (base / name).is_dir() else base


def _field(obj: Any, key: str, kind: type, where: str, fix: str) -> Any:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: field {key!r} is missing, empty or not a {kind.__name__}.", fix)
    return value


def _load_ai2_jsonl(path: Path, dataset: str, split: str, expected: int, fix: str) -> list[MCItem]:
    if not path.is_file():
        raise DataError(f"no {dataset} {split} file at {str(path)!r}.", fix)
    lines = read_utf8(path, fix).split("\n")
    items: list[MCItem] = []
    seen: set[str] = set()
    for line_no, line in enumerate(lines, start=1):
        where = f"{path.name} line {line_no}"
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON ({exc.msg}); the file may be cut.", fix) from exc
        qid = _field(row, "id", str, where, fix)
        question = _field(row, "question", dict, where, fix)
        stem = _field(question, "stem", str, where, fix)
        choices = _field(question, "choices", list, where, fix)
        if not 2 <= len(choices) <= len(MC_LETTERS):
            raise DataError(f"{where}: field 'choices' has {len(choices)} options.", fix)
        labels = [
            _field(c, "label", str, f"{where} choice {i}", fix) for i, c in enumerate(choices)
        ]
        texts = [_field(c, "text", str, f"{where} choice {i}", fix) for i, c in enumerate(choices)]
        key = _field(row, "answerKey", str, where, fix)
        if len(set(labels)) != len(labels) or key not in labels:
            raise DataError(
                f"{where}: field 'answerKey' {key!r} is not one of the labels {labels}.", fix
            )
        if qid in seen:
            raise DataError(f"{where}: id {qid!r} appears twice.", fix)
        seen.add(qid)
        items.append(
            MCItem(
                dataset,
                split,
                f"{dataset}/{split}/{qid}",
                stem,
                tuple(texts),
                labels.index(key),
            )
        )
    if len(items) != expected:
        raise DataError(
            f"{dataset} {split} has {len(items)} questions in {str(path)!r}; the release has "
            f"{expected}.",
            fix,
        )
    return items


def load_arc(
    root: str | Path,
    subset: Literal["easy", "challenge"] = "challenge",
    split: Literal["test", "dev"] = "test",
) -> list[MCItem]:
    """ARC-Easy or ARC-Challenge under ``root`` (the ``arc`` folder, or a data dir holding it).

    Raises:
        DataError: A missing file, a malformed line (file, line and field named) or a count other
            than the release's (:data:`ARC_OFFICIAL_COUNTS`).
    """
    if (subset, split) not in ARC_OFFICIAL_COUNTS:
        raise DataError(
            f"unknown ARC subset/split {subset!r}/{split!r}.",
            "use subset 'easy' or 'challenge' and split 'test' or 'dev'.",
        )
    name = f"ARC-{subset.capitalize()}"
    path = _folder(root, "arc") / name / f"{name}-{split.capitalize()}.jsonl"
    fix = "restore the official ARC files (ARC-V1-Feb2018) or point --data-dir at a good copy."
    return _load_ai2_jsonl(path, f"arc_{subset}", split, ARC_OFFICIAL_COUNTS[(subset, split)], fix)


def load_openbookqa(root: str | Path, split: Literal["test", "dev"] = "test") -> list[MCItem]:
    """OpenBookQA (Main) under ``root`` (the ``openbookqa`` folder, or a data dir holding it).

    Raises:
        DataError: A missing file, a malformed line or a count other than the release's.
    """
    if split not in OPENBOOKQA_OFFICIAL_COUNTS:
        raise DataError(f"unknown OpenBookQA split {split!r}.", "use 'test' or 'dev'.")
    path = _folder(root, "openbookqa") / "Main" / f"{split}.jsonl"
    fix = "restore the official OpenBookQA files (Main/) or point --data-dir at a good copy."
    return _load_ai2_jsonl(path, "openbookqa", split, OPENBOOKQA_OFFICIAL_COUNTS[split], fix)


def mmlu_items(items: Sequence[MMLUItem]) -> list[MCItem]:
    """MMLU questions as :class:`MCItem` (the subject kept for per-subject accuracy and shots)."""
    return [
        MCItem("mmlu", it.split, it.uid, it.question, tuple(it.choices), it.answer, it.subject)
        for it in items
    ]


def sample_mc(items: Sequence[MCItem], n: int | None, *, seed: int = 0) -> list[MCItem]:
    """``n`` items chosen by a seeded hash of their uid, in the release's order (None: all).

    MMLU is sampled per subject (``n`` per subject) so every subject stays represented.
    """
    if n is None:
        return list(items)
    if n < 1:
        raise DataError(f"asked for {n} questions.", "give at least 1 (or None for all).")

    def rank(it: MCItem) -> str:
        return hashlib.sha256(f"{seed}\x00{it.uid}".encode()).hexdigest()

    groups: dict[str | None, list[MCItem]] = {}
    for it in items:
        groups.setdefault(it.subject, []).append(it)
    keep = {it.uid for group in groups.values() for it in sorted(group, key=rank)[:n]}
    return [it for it in items if it.uid in keep]
