"""Template-disjoint splits and deterministic subsets of BBQ items.

BBQ items built from one template (``category`` + ``question_index``) share their context and
question up to names, so a probe trained on some of them and evaluated on others is tested on
near-duplicates. FairSteer's reference code has exactly that leak. :func:`split_by_template` keeps
every template in one split only (probe training, DSV, layer selection, evaluation), stratified by
category so each split covers every category where the template count allows.

Randomness comes from hashing ``(seed, key)`` with SHA-256, never from the input order or Python's
salted ``hash``, so the same items and seed give the same split on every machine and run.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fairlens.errors import ConfigError

from .bbq import BBQItem

__all__ = ["Split", "content_hash", "split_by_template", "subsample"]


def _rank(seed: int, key: str) -> str:
    """A seeded pseudo-random sort key for ``key``, stable across runs and platforms."""
    return hashlib.sha256(f"{seed}\x00{key}".encode()).hexdigest()


def _item_order(item: BBQItem) -> tuple[str, int]:
    return (item.category, item.example_id)


def content_hash(items: Iterable[BBQItem]) -> str:
    """16 hex characters of SHA-256 over the sorted item uids (recorded in reports/artifacts)."""
    uids = sorted(item.uid for item in items)
    return hashlib.sha256("\n".join(uids).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Split:
    """A named subset of BBQ items, disjoint by template from the other splits of its call.

    Attributes:
        name: Split name, e.g. ``"probe"``.
        items: Items sorted by ``(category, example_id)``.
        templates: Sorted ``(category, question_index)`` pairs the items come from.
        content_hash: :func:`content_hash` of ``items``.
    """

    name: str
    items: tuple[BBQItem, ...]
    templates: tuple[tuple[str, str], ...]
    content_hash: str

    def __len__(self) -> int:
        return len(self.items)

    @property
    def categories(self) -> tuple[str, ...]:
        """Sorted categories present in this split."""
        return tuple(sorted({item.category for item in self.items}))

    def summary(self) -> dict[str, object]:
        """JSON-ready description for reports: name, sizes and hash."""
        return {
            "name": self.name,
            "n_items": len(self.items),
            "n_templates": len(self.templates),
            "categories": list(self.categories),
            "content_hash": self.content_hash,
        }


def _check_fractions(fractions: Mapping[str, float]) -> list[tuple[str, float]]:
    pairs = list(fractions.items())
    if not pairs:
        raise ConfigError("fractions is empty.", 'pass e.g. {"probe": 0.5, "eval": 0.5}.')
    for name, value in pairs:
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"split names must be non-empty strings, got {name!r}.",
                "name each split with a non-empty string, e.g. 'probe'.",
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(
                f"fraction of split {name!r} must be a number, got {value!r}.",
                "give each split's fraction as a number, e.g. 0.5.",
            )
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(
                f"fraction of split {name!r} must be positive, got {value!r}.",
                "drop the split instead of giving it 0.",
            )
    total = sum(v for _, v in pairs)
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(
            f"split fractions must sum to 1, got {total:.6g} ({dict(pairs)}).",
            "rescale the fractions so they add up to 1.",
        )
    return [(n, float(v)) for n, v in pairs]


def _allocate(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` templates by ``fractions`` (largest remainder), at least 1 each if possible."""
    targets = [f * n for f in fractions]
    counts = [math.floor(t) for t in targets]
    # Largest remainder first; rounding makes ties (e.g. 2.5 vs 12.5) exact, broken by order.
    by_remainder = sorted(
        range(len(fractions)), key=lambda i: (round(counts[i] - targets[i], 9), i)
    )
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    if n >= len(fractions):
        for i in range(len(counts)):
            if counts[i] == 0:
                donor = max(
                    (j for j in range(len(counts)) if counts[j] > 1),
                    key=lambda j: (counts[j] - targets[j], -j),
                )
                counts[donor] -= 1
                counts[i] = 1
    return counts


def split_by_template(
    items: Iterable[BBQItem], fractions: Mapping[str, float], *, seed: int = 0
) -> dict[str, Split]:
    """Partition items into named splits with no template shared between splits.

    Within each category the templates are shuffled (seeded) and cut into consecutive blocks of
    sizes proportional to ``fractions`` (so fractions are over templates, not items); every split
    gets at least one template of a category that has as many templates as there are splits.

    Args:
        items: BBQ items (any order; duplicates by uid are an error).
        fractions: Split name -> fraction, e.g. ``{"probe": 0.5, "dsv": 0.1, "select": 0.1,
            "eval": 0.3}``; positive, summing to 1.
        seed: Shuffling seed.

    Returns:
        ``{name: Split}`` in the order of ``fractions``.

    Raises:
        ConfigError: Invalid fractions or duplicated items.
    """
    pairs = _check_fractions(fractions)
    by_template: dict[tuple[str, str], list[BBQItem]] = defaultdict(list)
    seen: set[str] = set()
    for item in items:
        if item.uid in seen:
            raise ConfigError(f"item {item.uid} appears twice.", "pass each item once.")
        seen.add(item.uid)
        by_template[item.template_id].append(item)

    templates_of: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for template in by_template:
        templates_of[template[0]].append(template)

    assigned: dict[str, list[tuple[str, str]]] = {name: [] for name, _ in pairs}
    for category in sorted(templates_of):
        shuffled = sorted(templates_of[category], key=lambda t: _rank(seed, f"{t[0]}/{t[1]}"))
        counts = _allocate(len(shuffled), [f for _, f in pairs])
        start = 0
        for (name, _), count in zip(pairs, counts, strict=True):
            assigned[name].extend(shuffled[start : start + count])
            start += count

    splits: dict[str, Split] = {}
    for name, _ in pairs:
        chosen = sorted(
            (it for t in assigned[name] for it in by_template[t]),
            key=_item_order,
        )
        splits[name] = Split(
            name=name,
            items=tuple(chosen),
            templates=tuple(sorted(assigned[name])),
            content_hash=content_hash(chosen),
        )
    return splits


def subsample(
    items: Iterable[BBQItem],
    n_per_category: int,
    *,
    seed: int = 0,
    balance_context: bool = True,
) -> list[BBQItem]:
    """Pick up to ``n_per_category`` items of each category, deterministically.

    Args:
        items: BBQ items (any order).
        n_per_category: Items to keep per category (all of them if a category has fewer).
        seed: Selection seed; the result does not depend on the input order.
        balance_context: Take half ambiguous and half disambiguated items (the odd one
            ambiguous), topping up from the other condition when one runs short.

    Returns:
        Selected items sorted by ``(category, example_id)``.
    """
    if isinstance(n_per_category, bool) or not isinstance(n_per_category, int):
        raise ConfigError(
            f"n_per_category must be an integer, got {n_per_category!r}.",
            "pass n_per_category as an int, e.g. 10.",
        )
    if n_per_category < 1:
        raise ConfigError(
            f"n_per_category must be at least 1, got {n_per_category}.",
            "pass n_per_category=1 or more.",
        )
    by_category: dict[str, list[BBQItem]] = defaultdict(list)
    for item in items:
        by_category[item.category].append(item)
    chosen: list[BBQItem] = []
    for group in by_category.values():
        ranked = sorted(group, key=lambda it: (_rank(seed, it.uid), it.uid))
        if not balance_context:
            chosen.extend(ranked[:n_per_category])
            continue
        ambig = [it for it in ranked if it.is_ambiguous]
        disambig = [it for it in ranked if not it.is_ambiguous]
        n_ambig = min(len(ambig), n_per_category - n_per_category // 2)
        n_dis = min(len(disambig), n_per_category - n_ambig)
        n_ambig = min(len(ambig), n_per_category - n_dis)
        chosen.extend(ambig[:n_ambig] + disambig[:n_dis])
    return sorted(chosen, key=_item_order)
