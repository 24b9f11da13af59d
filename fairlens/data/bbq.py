"""BBQ items as typed records: loading and validation of the official jsonl files.

BBQ (Parrish et al., 2022) ships one jsonl file per bias category. :func:`load_bbq` reads them into
frozen :class:`BBQItem` records and checks every line against the official format, because a single
malformed line (a wrong label, a missing "unknown" answer) would silently corrupt every accuracy and
bias score computed downstream. The first bad line raises a :class:`~fairlens.errors.DataError`
naming the file, the line and the field; nothing is skipped.

Each item also carries its bias target (``target_loc``, ``bias_target_loc``), derived in
:mod:`fairlens.data.targets` the way BBQ's own analysis script does (the jsonl has no such field).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from fairlens.errors import ConfigError, DataError

from .fetch import BBQ_CATEGORIES, BBQ_OFFICIAL_COUNTS, check_categories, resolve_data_dir
from .targets import (
    INTERSECTIONAL_CATEGORIES,
    bias_target_loc,
    derive_target_loc,
    infer_template_var2,
)

__all__ = [
    "BBQ_CATEGORIES",
    "BBQ_OFFICIAL_COUNTS",
    "LETTERS",
    "BBQItem",
    "check_categories",
    "load_bbq",
]

LETTERS: tuple[str, str, str] = ("A", "B", "C")
"""Answer letters in prompt order: ``ans0`` is "A", ``ans1`` is "B", ``ans2`` is "C"."""

_ANSWER_KEYS = ("ans0", "ans1", "ans2")
_DATA_FIX = (
    "Restore the official file with `fairlens data fetch bbq --force`, or correct that line "
    "(format: https://github.com/nyu-mll/BBQ/tree/main/data)."
)


@dataclass(frozen=True)
class BBQItem:
    """One BBQ question with its context, three answers and derived bias target.

    Attributes:
        category: Category name as in the jsonl ``category`` field, e.g. ``"Age"``.
        example_id: Item id, unique within a category.
        question_index: Template id within the category (BBQ's ``question_index``).
        question_polarity: ``"neg"`` (question names the stereotyped behaviour) or ``"nonneg"``.
        context_condition: ``"ambig"`` (answer is "unknown") or ``"disambig"``.
        context: The context passage.
        question: The question.
        answers: Answer texts ``(ans0, ans1, ans2)``.
        answer_groups: Social group of each answer (``answer_info[k][1]``), e.g. ``"old"``,
            ``"unknown"``, ``"F-Black"``.
        answer_info_text: Short answer descriptor (``answer_info[k][0]``), e.g. ``"grandfather"``.
        stereotyped_groups: ``additional_metadata.stereotyped_groups``.
        subcategory: ``additional_metadata.subcategory``.
        label: Index (0..2) of the gold answer.
        unknown_loc: Index of the "unknown" answer.
        target_loc: Index of the answer of the stereotyped group as BBQ's analysis script finds it
            (before the polarity swap); ``None`` when no answer, or more than one, matches.
        bias_target_loc: The answer a *biased* model picks: ``target_loc`` for ``neg`` questions,
            the other non-unknown answer for ``nonneg`` ones; ``None`` when ``target_loc`` is.
        source_file: Name of the file the item was read from.
        line_number: 1-based line number in that file.
    """

    category: str
    example_id: int
    question_index: str
    question_polarity: Literal["neg", "nonneg"]
    context_condition: Literal["ambig", "disambig"]
    context: str
    question: str
    answers: tuple[str, str, str]
    answer_groups: tuple[str, str, str]
    answer_info_text: tuple[str, str, str]
    stereotyped_groups: tuple[str, ...]
    subcategory: str
    label: int
    unknown_loc: int
    target_loc: int | None
    bias_target_loc: int | None
    source_file: str
    line_number: int

    @property
    def uid(self) -> str:
        """Identifier unique across BBQ: ``"{category}/{example_id}"``."""
        return f"{self.category}/{self.example_id}"

    @property
    def template_id(self) -> tuple[str, str]:
        """``(category, question_index)``: items sharing it come from one hand-written template."""
        return (self.category, self.question_index)

    @property
    def is_ambiguous(self) -> bool:
        """Whether the context leaves the question unanswerable (gold answer is "unknown")."""
        return self.context_condition == "ambig"

    def letter(self, index: int) -> str:
        """Prompt letter of answer ``index`` (0 -> "A", 1 -> "B", 2 -> "C")."""
        if index not in (0, 1, 2):
            raise ConfigError(f"answer index must be 0, 1 or 2, got {index!r}.")
        return LETTERS[index]


def load_bbq(
    path: str | Path | None = None,
    categories: Sequence[str] | None = None,
    *,
    limit_per_category: int | None = None,
) -> list[BBQItem]:
    """Load and validate BBQ items.

    Args:
        path: A directory of ``*.jsonl`` files, or one file. ``None`` looks up the data directory
            with :func:`fairlens.data.resolve_data_dir` and reads its ``bbq/`` folder.
        categories: Category names to keep (e.g. ``["Age", "SES"]``); ``None`` keeps all.
        limit_per_category: Keep only the first ``n`` items (file order) of each category.
            Intersectional targets still use every item of the file to infer each template's
            stereotyped SES/gender (see :mod:`fairlens.data.targets`), so they do not change.

    Returns:
        Items in file order (files sorted by name).

    Raises:
        DataError: Missing path, no jsonl file, a requested category without a file, a malformed
            line (file, line and field are named) or a duplicated ``example_id``.
        ConfigError: Unknown category name or a bad ``limit_per_category``.
    """
    wanted = None if categories is None else check_categories(categories)
    if limit_per_category is not None and (
        isinstance(limit_per_category, bool) or limit_per_category < 1
    ):
        raise ConfigError(
            f"limit_per_category must be a positive integer or None, got {limit_per_category!r}."
        )
    files = _find_files(path, wanted)
    items: list[BBQItem] = []
    seen: dict[str, str] = {}
    for file in files:
        records = _read_file(file)
        var2 = infer_template_var2(
            (r["category"], r["question_index"], r["groups"], r["sg"])
            for r in records
            if r["category"] in INTERSECTIONAL_CATEGORIES
        )
        counts: dict[str, int] = {}
        for rec in records:
            if wanted is not None and rec["category"] not in wanted:
                continue
            if limit_per_category is not None:
                if counts.get(rec["category"], 0) >= limit_per_category:
                    continue
                counts[rec["category"]] = counts.get(rec["category"], 0) + 1
            item = _build_item(rec, var2.get((rec["category"], rec["question_index"])))
            where = f"{file.name} line {item.line_number}"
            if item.uid in seen:
                raise DataError(
                    f"{where}: example_id {item.example_id} of category {item.category!r} "
                    f"already appeared at {seen[item.uid]}.",
                    "load each category from one file only (remove copies from the folder).",
                )
            seen[item.uid] = where
            items.append(item)
    if wanted is not None:
        missing = [c for c in wanted if c not in {it.category for it in items}]
        if missing:
            raise DataError(
                f"no items of categories {missing} in {', '.join(str(f) for f in files)}.",
                "run `fairlens data fetch bbq` or point --data-dir/FAIRLENS_DATA_DIR at the data.",
            )
    return items


def _find_files(path: str | Path | None, wanted: tuple[str, ...] | None) -> list[Path]:
    """The jsonl files to read for ``path`` (see :func:`load_bbq`)."""
    if path is None:
        path = resolve_data_dir(None) / "bbq"
    path = Path(path).expanduser()
    fix = "run `fairlens data fetch bbq`, or pass --data-dir / set FAIRLENS_DATA_DIR to a copy."
    if not path.exists():
        raise DataError(f"BBQ data path {str(path)!r} does not exist.", fix)
    if path.is_file():
        return [path]
    if wanted is not None:
        named = [path / f"{c}.jsonl" for c in wanted]
        missing = [p.name for p in named if not p.is_file()]
        if missing:
            raise DataError(f"{str(path)!r} has no file {', '.join(missing)}.", fix)
        return named
    files = sorted(path.glob("*.jsonl"))
    if not files:
        raise DataError(f"{str(path)!r} contains no *.jsonl file.", fix)
    return files


def _read_file(file: Path) -> list[dict[str, Any]]:
    """Parse and validate every line of ``file`` into plain field dicts."""
    records: list[dict[str, Any]] = []
    try:
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    raise DataError(f"{file.name} line {number}: empty line.", _DATA_FIX)
                records.append(_parse_line(line, file.name, number))
    except UnicodeDecodeError as exc:
        raise DataError(f"{file.name} is not valid UTF-8 ({exc}).", _DATA_FIX) from exc
    except OSError as exc:
        raise DataError(f"cannot read {str(file)!r}: {exc}.", _DATA_FIX) from exc
    return records


def _parse_line(line: str, file_name: str, number: int) -> dict[str, Any]:
    """Decode and validate one jsonl line into its fields (DataError on the first bad field)."""
    where = f"{file_name} line {number}"
    try:
        raw = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg}).", _DATA_FIX) from exc
    fields = _fast_fields(raw)
    if fields is None:  # something is wrong: find it and name it
        fields = _checked_fields(raw, where)
    fields["source_file"] = file_name
    fields["line_number"] = number
    return fields


_POLARITIES = frozenset({"neg", "nonneg"})
_CONDITIONS = frozenset({"ambig", "disambig"})


def _fast_fields(raw: Any) -> dict[str, Any] | None:
    """The fields of a well-formed record, or None if any check fails.

    A speed path for the common case (all 58k lines load in ~1.5 s instead of ~4 s): the same
    checks as :func:`_checked_fields`, without building messages. A unit test keeps them in sync.
    """
    try:
        info, meta = raw["answer_info"], raw["additional_metadata"]
        pairs = (info["ans0"], info["ans1"], info["ans2"])
        answers = (raw["ans0"], raw["ans1"], raw["ans2"])
        sg, label = meta["stereotyped_groups"], raw["label"]
        fields = {
            "category": raw["category"],
            "example_id": raw["example_id"],
            "question_index": raw["question_index"],
            "question_polarity": raw["question_polarity"],
            "context_condition": raw["context_condition"],
            "context": raw["context"],
            "question": raw["question"],
            "answers": answers,
            "groups": tuple(p[1] for p in pairs),
            "info_text": tuple(p[0] for p in pairs),
            "sg": tuple(sg),
            "subcategory": meta["subcategory"],
            "label": label,
        }
        ok = (
            type(raw) is dict
            and type(info) is dict
            and type(meta) is dict
            and fields["category"] in BBQ_OFFICIAL_COUNTS
            and type(fields["example_id"]) is int
            and type(label) is int
            and label in (0, 1, 2)
            and fields["question_polarity"] in _POLARITIES
            and fields["context_condition"] in _CONDITIONS
            and all(type(p) is list and len(p) == 2 for p in pairs)
            and type(sg) is list
            and all(
                type(fields[key]) is str
                for key in ("question_index", "context", "question", "subcategory")
            )
            and all(type(v) is str for v in (*answers, *fields["groups"], *fields["info_text"]))
            and all(type(g) is str for g in sg)
            and fields["groups"].count("unknown") == 1
        )
    except (KeyError, TypeError, IndexError):
        return None
    if not ok:
        return None
    fields["unknown_loc"] = fields["groups"].index("unknown")
    return fields


def _checked_fields(raw: Any, where: str) -> dict[str, Any]:
    """Validate a decoded record field by field, raising a DataError that names the field."""

    def bad(field: str, expected: str, got: object) -> DataError:
        shown = repr(got) if len(repr(got)) <= 80 else repr(got)[:77] + "..."
        return DataError(f"{where}: field {field!r} must be {expected}, got {shown}.", _DATA_FIX)

    def need(obj: dict[str, Any], key: str, field: str) -> Any:
        if key not in obj:
            raise DataError(f"{where}: field {field!r} is missing.", _DATA_FIX)
        return obj[key]

    def text(obj: dict[str, Any], key: str, field: str | None = None) -> str:
        value = need(obj, key, field or key)
        if not isinstance(value, str):
            raise bad(field or key, "a string", value)
        return value

    if not isinstance(raw, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(raw).__name__}.", _DATA_FIX)

    example_id = need(raw, "example_id", "example_id")
    if isinstance(example_id, bool) or not isinstance(example_id, int):
        raise bad("example_id", "an integer", example_id)
    category = text(raw, "category")
    if category not in BBQ_OFFICIAL_COUNTS:
        raise bad("category", f"one of {', '.join(BBQ_CATEGORIES)}", category)
    polarity = text(raw, "question_polarity")
    if polarity not in ("neg", "nonneg"):
        raise bad("question_polarity", "'neg' or 'nonneg'", polarity)
    condition = text(raw, "context_condition")
    if condition not in ("ambig", "disambig"):
        raise bad("context_condition", "'ambig' or 'disambig'", condition)
    label = need(raw, "label", "label")
    if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1, 2):
        raise bad("label", "0, 1 or 2", label)

    info = need(raw, "answer_info", "answer_info")
    if not isinstance(info, dict):
        raise bad("answer_info", "an object with keys ans0, ans1, ans2", info)
    pairs: list[tuple[str, str]] = []
    for key in _ANSWER_KEYS:
        pair = need(info, key, f"answer_info.{key}")
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)
        ):
            raise bad(f"answer_info.{key}", "a list of 2 strings", pair)
        pairs.append((pair[0], pair[1]))
    groups = tuple(p[1] for p in pairs)
    unknown = [k for k, g in enumerate(groups) if g == "unknown"]
    if len(unknown) != 1:
        raise bad("answer_info", "exactly one answer of group 'unknown'", list(groups))

    meta = need(raw, "additional_metadata", "additional_metadata")
    if not isinstance(meta, dict):
        raise bad("additional_metadata", "an object", meta)
    sg = need(meta, "stereotyped_groups", "additional_metadata.stereotyped_groups")
    if not (isinstance(sg, list) and all(isinstance(g, str) for g in sg)):
        raise bad("additional_metadata.stereotyped_groups", "a list of strings", sg)

    return {
        "category": category,
        "example_id": example_id,
        "question_index": text(raw, "question_index"),
        "question_polarity": polarity,
        "context_condition": condition,
        "context": text(raw, "context"),
        "question": text(raw, "question"),
        "answers": tuple(text(raw, key) for key in _ANSWER_KEYS),
        "groups": groups,
        "info_text": tuple(p[0] for p in pairs),
        "sg": tuple(sg),
        "subcategory": text(meta, "subcategory", "additional_metadata.subcategory"),
        "label": label,
        "unknown_loc": unknown[0],
    }


def _build_item(rec: dict[str, Any], known_var2: str | None) -> BBQItem:
    """Turn validated fields into a :class:`BBQItem`, deriving the bias targets."""
    target = derive_target_loc(
        rec["category"],
        rec["groups"],
        rec["info_text"],
        rec["sg"],
        unknown_loc=rec["unknown_loc"],
        known_var2=known_var2,
    )
    return BBQItem(
        category=rec["category"],
        example_id=rec["example_id"],
        question_index=rec["question_index"],
        question_polarity=cast(Literal["neg", "nonneg"], rec["question_polarity"]),
        context_condition=cast(Literal["ambig", "disambig"], rec["context_condition"]),
        context=rec["context"],
        question=rec["question"],
        answers=rec["answers"],
        answer_groups=rec["groups"],
        answer_info_text=rec["info_text"],
        stereotyped_groups=rec["sg"],
        subcategory=rec["subcategory"],
        label=rec["label"],
        unknown_loc=rec["unknown_loc"],
        target_loc=target,
        bias_target_loc=bias_target_loc(target, rec["question_polarity"], rec["unknown_loc"]),
        source_file=rec["source_file"],
        line_number=rec["line_number"],
    )
