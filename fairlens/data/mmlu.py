"""MMLU questions: a validating loader, and the 3-option "unbiased anchor" prompts of the paper preset.

The official files are headerless CSVs (``question,A,B,C,D,answer``), one per subject and split
(``test/``, ``dev/``, ``val/``). Fields contain newlines, line endings are mixed and some options are
the literal text ``None``: :func:`load_mmlu` reads them with Python's CSV parser (never turning
``None`` into a missing value) and refuses a malformed row naming the file, the row and the field.

FairSteer's reference code adds MMLU questions to the BAD probe's training data as *unbiased*
anchors, formatted with three options (``{question}\\nA. ..\\nB. ..\\nC. ..\\nAnswer:``);
:func:`mmlu_anchor_prompts` builds those (the gold option and two others, seeded).
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from fairlens.data.fetch import read_utf8
from fairlens.errors import DataError

__all__ = ["MMLU_OFFICIAL_COUNTS", "MMLUItem", "load_mmlu", "mmlu_anchor_prompts"]

MMLU_OFFICIAL_COUNTS: dict[str, int] = {"test": 14_042, "dev": 285, "val": 1_531}
"""Questions per split in the released ``data.tar`` (57 subjects)."""

_FIX = "restore the official MMLU CSV (hendrycks/test data.tar) or point --data-dir at a good copy."


@dataclass(frozen=True)
class MMLUItem:
    """One MMLU question.

    Attributes:
        subject: File stem without the split suffix, e.g. ``"anatomy"``.
        split: ``"test"``, ``"dev"`` or ``"val"``.
        index: 0-based row in its file.
        question: The question text.
        choices: The four options A-D (``"None"`` stays text).
        answer: Index 0-3 of the correct option.
    """

    subject: str
    split: str
    index: int
    question: str
    choices: tuple[str, str, str, str]
    answer: int

    @property
    def uid(self) -> str:
        return f"mmlu/{self.split}/{self.subject}/{self.index}"


def load_mmlu(
    root: str | Path, split: str = "val", subjects: list[str] | None = None
) -> list[MMLUItem]:
    """Read and validate one MMLU split under ``root`` (the folder holding ``test/ dev/ val/``).

    Args:
        root: The ``mmlu`` folder (or a data dir containing ``mmlu/``).
        split: ``"test"``, ``"dev"`` or ``"val"``.
        subjects: Only these subjects (default: all files of the split). With all subjects the
            total is checked against :data:`MMLU_OFFICIAL_COUNTS`.

    Raises:
        DataError: Missing folder, unknown subject, a malformed row (file, row and field named), or a
            count that differs from the official release.
    """
    if split not in MMLU_OFFICIAL_COUNTS:
        raise DataError(
            f"unknown MMLU split {split!r}.", f"use one of: {', '.join(MMLU_OFFICIAL_COUNTS)}."
        )
    base = Path(root)
    if (base / "mmlu").is_dir():
        base = base / "mmlu"
    folder = base / split
    if not folder.is_dir():
        raise DataError(f"no MMLU {split} folder at {str(folder)!r}.", _FIX)
    files = sorted(folder.glob(f"*_{split}.csv"))
    if subjects is not None:
        known = {f.name.removesuffix(f"_{split}.csv") for f in files}
        unknown = sorted(set(subjects) - known)
        if unknown:
            raise DataError(
                f"unknown MMLU subjects {unknown} in {str(folder)!r}.", "check the names."
            )
        files = [f for f in files if f.name.removesuffix(f"_{split}.csv") in set(subjects)]
    items: list[MMLUItem] = []
    for path in files:
        items += _read_subject(path, path.name.removesuffix(f"_{split}.csv"), split)
    if not items:
        raise DataError(f"no MMLU questions in {str(folder)!r}.", _FIX)
    expected = MMLU_OFFICIAL_COUNTS[split]
    if subjects is None and len(items) != expected:
        raise DataError(
            f"MMLU {split} has {len(items)} questions in {str(folder)!r}; the release has {expected}.",
            _FIX,
        )
    return items


def _read_subject(path: Path, subject: str, split: str) -> list[MMLUItem]:
    """The questions of one subject file, or a DataError naming the file, row and field."""
    items: list[MMLUItem] = []
    row_no = 0
    text = io.StringIO(read_utf8(path, _FIX), newline="")
    try:
        for row_no, row in enumerate(csv.reader(text), start=1):
            items.append(_item(row, f"{path.name} row {row_no}", subject, split, row_no - 1))
    except csv.Error as exc:
        raise DataError(f"{path.name} row {row_no + 1}: not valid CSV ({exc}).", _FIX) from exc
    return items


def _item(row: list[str], where: str, subject: str, split: str, index: int) -> MMLUItem:
    if len(row) != 6:
        raise DataError(
            f"{where}: expected 6 fields (question, A-D, answer), got {len(row)}.", _FIX
        )
    question, *choices, answer = row
    if not question.strip():
        raise DataError(f"{where}: field 'question' is empty.", _FIX)
    for letter, text in zip("ABCD", choices, strict=True):
        if text == "":
            raise DataError(f"{where}: option {letter} is empty.", _FIX)
    if answer not in ("A", "B", "C", "D"):
        raise DataError(f"{where}: field 'answer' must be A-D, got {answer!r}.", _FIX)
    a, b, c, d = choices
    return MMLUItem(subject, split, index, question, (a, b, c, d), "ABCD".index(answer))


def _rank(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def mmlu_anchor_prompts(items: list[MMLUItem], n: int, *, seed: int = 0) -> list[str]:
    """``n`` seeded 3-option MMLU prompts (gold + two other options, in their original order).

    Raises:
        DataError: ``n`` larger than the number of items.
    """
    if n > len(items):
        raise DataError(
            f"asked for {n} MMLU anchors but only {len(items)} questions are loaded.",
            f"pass --mmlu-anchors {len(items)} or fewer.",
        )
    chosen = sorted(items, key=lambda it: _rank(seed, it.uid))[:n]
    prompts = []
    for it in chosen:
        others = sorted(
            (i for i in range(4) if i != it.answer), key=lambda i: _rank(seed, f"{it.uid}/{i}")
        )
        keep = sorted([it.answer, *others[:2]])
        body = "\n".join(f"{'ABC'[k]}. {it.choices[i]}" for k, i in enumerate(keep))
        prompts.append(f"{it.question}\n{body}\nAnswer:")
    return prompts
