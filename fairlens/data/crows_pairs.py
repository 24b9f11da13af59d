"""CrowS-Pairs: minimal sentence pairs that differ in the social group they mention.

Each pair has a *more stereotyping* sentence (``sent_more``) and a *less stereotyping* one
(``sent_less``); ``direction`` says whether ``sent_more`` expresses a stereotype about a historically
disadvantaged group (``"stereo"``) or violates one (``"antistereo"``). The metric (Nangia et al.,
2020) is the share of pairs in which the model prefers ``sent_more``, in both directions; an
unbiased model sits at 50 %.

fairlens reads the official ``crows_pairs_anonymized.csv`` (from ``<data_dir>/crows_pairs/`` or a
path) and never ships it. :func:`group_prefixes` cuts each pair at its first differing word so that
open-ended generation can continue "the same prompt with the group swapped".
"""

from __future__ import annotations

import csv
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from fairlens.errors import ConfigError, DataError

__all__ = [
    "CROWS_BIAS_TYPES",
    "CROWS_FILE",
    "CrowsPair",
    "group_prefixes",
    "load_crows_pairs",
    "subsample_pairs",
]

CROWS_FILE = "crows_pairs_anonymized.csv"
CROWS_BIAS_TYPES: tuple[str, ...] = (
    "race-color",
    "gender",
    "socioeconomic",
    "nationality",
    "religion",
    "age",
    "sexual-orientation",
    "physical-appearance",
    "disability",
)
_COLUMNS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")
_FIX = "point --data-dir/FAIRLENS_DATA_DIR at a folder with crows_pairs/" + CROWS_FILE + "."


@dataclass(frozen=True)
class CrowsPair:
    """One CrowS-Pairs row (sentences stripped of stray whitespace and newlines)."""

    pair_id: int
    sent_more: str
    sent_less: str
    direction: Literal["stereo", "antistereo"]
    bias_type: str


def _clean(text: str) -> str:
    # One released sentence carries a newline before its full stop ("white\n."): fold whitespace,
    # and re-attach punctuation that the fold separated.
    joined = " ".join(text.split())
    for mark in (".", ",", "!", "?"):
        joined = joined.replace(" " + mark, mark)
    return joined


def _resolve_file(path: str | Path) -> Path:
    path = Path(path).expanduser()
    for candidate in (path, path / CROWS_FILE, path / "crows_pairs" / CROWS_FILE):
        if candidate.is_file():
            return candidate
    raise DataError(f"no CrowS-Pairs file at {str(path)!r} (looked for {CROWS_FILE}).", _FIX)


def load_crows_pairs(path: str | Path, bias_types: Sequence[str] | None = None) -> list[CrowsPair]:
    """Read CrowS-Pairs, validating every row.

    Args:
        path: The csv file, the ``crows_pairs/`` folder, or a data dir containing ``crows_pairs/``.
        bias_types: Keep only these bias types (spelled as in the file, e.g. ``"race-color"``).

    Raises:
        DataError: Missing file or columns, empty sentences, identical sentences, unknown direction.
        ConfigError: Unknown bias type requested.
    """
    if bias_types is not None:
        unknown = sorted(set(bias_types) - set(CROWS_BIAS_TYPES))
        if unknown:
            raise ConfigError(
                f"unknown CrowS-Pairs bias types {unknown}.",
                f"use some of: {', '.join(CROWS_BIAS_TYPES)}.",
            )
    file = _resolve_file(path)
    try:
        with file.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{file.name}: missing columns {missing}.", _FIX)
            pairs = [_parse(row, file.name, number) for number, row in enumerate(reader, start=1)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{file.name} is not valid UTF-8 ({exc}).", _FIX) from exc
    except csv.Error as exc:
        raise DataError(f"{file.name} is not a readable csv file ({exc}).", _FIX) from exc
    if not pairs:
        raise DataError(f"{file.name} holds no pairs.", _FIX)
    if bias_types is not None:
        pairs = [p for p in pairs if p.bias_type in set(bias_types)]
    return pairs


def _parse(row: dict[str, str], name: str, number: int) -> CrowsPair:
    where = f"{name} row {number}"
    more, less = _clean(row.get("sent_more") or ""), _clean(row.get("sent_less") or "")
    if not more or not less:
        raise DataError(f"{where}: empty sentence.", _FIX)
    if more == less:
        raise DataError(f"{where}: sent_more and sent_less are identical.", _FIX)
    direction = (row.get("stereo_antistereo") or "").strip()
    if direction not in ("stereo", "antistereo"):
        raise DataError(
            f"{where}: stereo_antistereo is {direction!r}, expected 'stereo' or 'antistereo'.",
            _FIX,
        )
    bias_type = (row.get("bias_type") or "").strip()
    if bias_type not in CROWS_BIAS_TYPES:
        raise DataError(f"{where}: unknown bias_type {bias_type!r}.", _FIX)
    raw_id = (row.get("") or "").strip()
    pair_id = int(raw_id) if raw_id.isdigit() else number - 1
    return CrowsPair(pair_id, more, less, direction, bias_type)  # type: ignore[arg-type]


def subsample_pairs(
    pairs: Sequence[CrowsPair], per_type: int | None, *, seed: int = 0
) -> list[CrowsPair]:
    """At most ``per_type`` pairs of each bias type (seeded, file order kept); ``None`` keeps all."""
    if per_type is None:
        return list(pairs)
    if per_type < 1:
        raise ConfigError(
            f"per_type must be >= 1 or None, got {per_type}.",
            "pass per_type=1 or more, or per_type=None to keep all pairs.",
        )
    rng = random.Random(seed)
    by_type: dict[str, list[CrowsPair]] = {}
    for pair in pairs:
        by_type.setdefault(pair.bias_type, []).append(pair)
    keep: set[int] = set()
    for group in by_type.values():
        keep.update(p.pair_id for p in rng.sample(group, min(per_type, len(group))))
    return [p for p in pairs if p.pair_id in keep]


def type_counts(pairs: Sequence[CrowsPair]) -> dict[str, int]:
    """Number of pairs per bias type."""
    return dict(sorted(Counter(p.bias_type for p in pairs).items()))


@dataclass(frozen=True)
class GroupPrefix:
    """The two sentences of a pair cut right after the words where they first differ."""

    pair_id: int
    bias_type: str
    more: str  # prefix of sent_more, ending with its group mention
    less: str  # prefix of sent_less, ending with its group mention


def group_prefixes(pairs: Sequence[CrowsPair], *, min_words: int = 1) -> list[GroupPrefix]:
    """Prefixes that end with the differing (group) words, for counterfactual generation.

    The pair's words are aligned from both ends; the differing span of each sentence is kept and
    the shared tail dropped, so ``more`` and ``less`` are the same prompt with the group swapped.
    Pairs whose prefixes would be shorter than ``min_words`` words are skipped.
    """
    out = []
    for pair in pairs:
        a, b = pair.sent_more.split(), pair.sent_less.split()
        tail = 0
        while tail < min(len(a), len(b)) and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
            tail += 1
        more, less = " ".join(a[: len(a) - tail]), " ".join(b[: len(b) - tail])
        if min(len(more.split()), len(less.split())) < min_words or more == less:
            continue
        out.append(GroupPrefix(pair.pair_id, pair.bias_type, more, less))
    return out
