"""Gates for dynamic steering, and what they actually detect.

FairSteer's gate is the BAD probe: ``P(unbiased | a) < tau`` on the activation at ``:``. Its labels
come from the model's own answers (1 = answered the gold label, 0 = picked the bias target), and on
a model that almost never says "unknown" nearly every *biased* label is an ambiguous item and most
*unbiased* labels are disambiguated ones, so the probe can score well by detecting the context
condition alone. :func:`label_composition` measures that, and two control gates are fitted the same
way (one probe per layer, validated across templates) so the three can be compared on one plot:

* ``"bad"`` — the BAD labels (FairSteer's gate);
* ``"context"`` — the context condition alone: 1 = disambiguated (do not steer), 0 = ambiguous;
* ``"ambig"`` — ambiguous items only: 1 = answered "unknown", 0 = answered the bias target.

Every gate uses the same convention: a probe's positive class is "leave alone", so the steerer
fires where ``P(y=1 | a) < tau``. Any of the three can drive FairSteer (``FairSteerConfig.gate``).
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairlens.data import BBQItem
from fairlens.errors import ConfigError
from fairlens.scoring.metrics import probe_labels

__all__ = ["GATES", "GateSpec", "gate_labels", "label_composition"]


@dataclass(frozen=True)
class GateSpec:
    """A gate's label recipe.

    Attributes:
        name: Registry key.
        labels: ``labels(items, predictions) -> (keep, y)``: rows used and their labels
            (1 = leave alone, 0 = steer).
        description: One line for reports.
    """

    name: str
    labels: Callable[[Sequence[BBQItem], np.ndarray], tuple[np.ndarray, np.ndarray]]
    description: str


def _context(items: Sequence[BBQItem], preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.array([0 if it.is_ambiguous else 1 for it in items], dtype=np.int64)
    return np.arange(len(items), dtype=np.int64), y


def _ambig(items: Sequence[BBQItem], preds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep, y = [], []
    for i, (it, p) in enumerate(zip(items, preds, strict=True)):
        if not it.is_ambiguous or it.bias_target_loc is None:
            continue
        if p == it.unknown_loc:
            keep.append(i)
            y.append(1)
        elif p == it.bias_target_loc:
            keep.append(i)
            y.append(0)
    return np.asarray(keep, dtype=np.int64), np.asarray(y, dtype=np.int64)


GATES: dict[str, GateSpec] = {
    "bad": GateSpec("bad", probe_labels, "BAD labels: answered gold (1) vs bias target (0)"),
    "context": GateSpec(
        "context", _context, "context condition: disambiguated (1) vs ambiguous (0)"
    ),
    "ambig": GateSpec(
        "ambig", _ambig, "ambiguous items only: answered unknown (1) vs bias target (0)"
    ),
}


def get_gate(name: str) -> GateSpec:
    """The gate ``name``; an unknown name lists the valid ones."""
    if name not in GATES:
        close = difflib.get_close_matches(name, list(GATES), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown gate {name!r}.{hint}", f"use one of: {', '.join(GATES)}.")
    return GATES[name]


def gate_labels(
    name: str, items: Sequence[BBQItem], predictions: Any
) -> tuple[np.ndarray, np.ndarray]:
    """``(keep, y)`` of gate ``name`` for items answered with ``predictions``."""
    preds = np.asarray(predictions, dtype=np.int64)
    if preds.shape != (len(items),):
        raise ConfigError(
            f"{len(items)} items but predictions of shape {preds.shape}.",
            "pass one prediction (answer index) per item.",
        )
    return get_gate(name).labels(items, preds)


def label_composition(items: Sequence[BBQItem], predictions: Any) -> dict[str, Any]:
    """How much of each BAD label class is ambiguous items, pooled and per category.

    Returns a JSON-ready dict: for ``"unbiased"`` and ``"biased"`` labels the count and the share
    of ambiguous items among them, pooled and per category, plus the share of ambiguous items in
    all the items (the chance level of the comparison).
    """
    keep, y = gate_labels("bad", items, predictions)
    kept = [items[i] for i in keep]

    def share(sel: list[BBQItem]) -> dict[str, Any]:
        n = len(sel)
        amb = sum(it.is_ambiguous for it in sel)
        return {"n": n, "n_ambig": amb, "share_ambig": amb / n if n else None}

    classes = {"unbiased": 1, "biased": 0}
    pooled = {
        c: share([it for it, lab in zip(kept, y, strict=True) if lab == v])
        for c, v in classes.items()
    }
    per_category: dict[str, dict[str, Any]] = {}
    for cat in sorted(Counter(it.category for it in items)):
        per_category[cat] = {
            c: share(
                [it for it, lab in zip(kept, y, strict=True) if lab == v and it.category == cat]
            )
            for c, v in classes.items()
        }
    return {
        "n_items": len(items),
        "share_ambig_all_items": sum(it.is_ambiguous for it in items) / len(items)
        if items
        else None,
        "pooled": pooled,
        "per_category": per_category,
    }
