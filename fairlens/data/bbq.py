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

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from fairlens.data.bbq_records import (
    _DATA_FIX,
    _parse_line,
)
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
            raise ConfigError(f"answer index must be 0, 1 or 2, got {index!r}.", "pass 0, 1 or 2.")
        return LETTERS[index]


def load_bbq(
    path: str | Path | None = None,
    categories: Sequence[str] | None = None,
    *,
    limit_per_category: int | None = None,
    official_counts: bool = False,
) -> list[BBQItem]:
    """Load and validate BBQ items.

    Args:
        path: A directory of ``*.jsonl`` files, or one file. ``None`` looks up the data directory
            with :func:`fairlens.data.resolve_data_dir` and reads its ``bbq/`` folder.
        categories: Category names to keep (e.g. ``["Age", "SES"]``); ``None`` keeps all.
        limit_per_category: Keep only the first ``n`` items (file order) of each category.
            Intersectional targets still use every item of the file to infer each template's
            stereotyped SES/gender (see :mod:`fairlens.data.targets`), so they do not change.
        official_counts: Refuse a file whose record count of a kept category differs from the
            official BBQ release (:data:`BBQ_OFFICIAL_COUNTS`): a cut or edited file would change
            the template-disjoint splits and every score without notice. The command line sets
            it; library users who load a subset on purpose leave it off.

    Returns:
        Items in file order (files sorted by name).

    Raises:
        DataError: Missing path, no jsonl file, a requested category without a file, a malformed
            line (file, line and field are named), a duplicated ``example_id``, or (with
            ``official_counts``) a file with another record count than the official release.
        ConfigError: Unknown category name or a bad ``limit_per_category``.
    """
    wanted = None if categories is None else check_categories(categories)
    if limit_per_category is not None and (
        isinstance(limit_per_category, bool) or limit_per_category < 1
    ):
        raise ConfigError(
            f"limit_per_category must be a positive integer or None, got {limit_per_category!r}.",
            "pass limit_per_category=1 or more, or None for every item.",
        )
    files = _find_files(path, wanted)
    items: list[BBQItem] = []
    seen: dict[str, str] = {}
    for file in files:
        records = _read_file(file)
        if official_counts:
            _check_official_counts(file, records, wanted)
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


def _check_official_counts(
    file: Path, records: list[dict[str, Any]], wanted: tuple[str, ...] | None
) -> None:
    """DataError when ``file`` holds another number of records of a kept category than BBQ's
    official release (see :func:`load_bbq`'s ``official_counts``)."""
    found = Counter(rec["category"] for rec in records)
    for category, n in sorted(found.items()):
        expected = BBQ_OFFICIAL_COUNTS[category]
        if (wanted is None or category in wanted) and n != expected:
            raise DataError(
                f"{file.name} holds {n} {category} records; the official BBQ file has {expected}, "
                "so the template-disjoint splits and every score would differ from BBQ's without "
                "notice.",
                "restore the official file (`fairlens data fetch bbq --force`, or point --data-dir "
                "at a full copy); to score fewer items, use the per-category size flags instead "
                "of cutting the file.",
            )


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
