"""The registry of direction methods: which estimator, fitted on which fit-split data.

A :class:`DirectionMethod` names a scikit-learn-style estimator (:mod:`.estimators`) and the
*recipe* of fit-split data it is fitted on. The recipes are built by :class:`fairlens.steer.fit_data.FitData`
(once each, shared by every method that uses them):

* ``"pairs"`` — activations at the appended answer letter of FairSteer's contrastive pairs
  (ambiguous items + " {unknown letter}" as ``y = 1``, + " {bias-target letter}" as ``y = 0``);
  the groups are the appended letters;
* ``"bad"`` — the BAD activations at ``:`` of the probe items with their labels (1 answered gold,
  0 answered the bias target);
* ``"ambig_unknown"`` — ``:`` activations of the ambiguous probe items, 1 where the model answered
  "unknown", 0 elsewhere;
* ``"instruction"`` — ``:`` activations of the probe items with the debiasing instruction (1) and
  without (0), the same items on both sides;
* ``"optimise"`` — the probe items' prefix cache (the estimator runs the model).

Add a method with :func:`register_direction_method`; nothing else needs to change.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fairlens.errors import ConfigError

from .estimators import MeanDifference, OptimisedDirection, PCADirection, ProbeDirection

__all__ = [
    "DIRECTION_METHODS",
    "RECIPES",
    "DirectionMethod",
    "get_direction_method",
    "register_direction_method",
]

RECIPES: tuple[str, ...] = ("pairs", "bad", "ambig_unknown", "instruction", "optimise")


@dataclass(frozen=True)
class DirectionMethod:
    """One way of finding a steering direction per layer.

    Attributes:
        name: Registry key (used in configs, reports and the CLI).
        recipe: Fit-split data it is fitted on (one of :data:`RECIPES`).
        make: ``make(C=..., seed=...) -> estimator`` (extra keywords are ignored by most).
        position: Where its activations are read: ``"answer"`` (the appended letter) or ``"colon"``.
        description: One line for reports.
    """

    name: str
    recipe: str
    make: Callable[..., Any]
    position: str
    description: str

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise ConfigError(
                f"unknown recipe {self.recipe!r}.", f"use one of: {', '.join(RECIPES)}."
            )


DIRECTION_METHODS: dict[str, DirectionMethod] = {}


def register_direction_method(method: DirectionMethod) -> DirectionMethod:
    """Add ``method`` to the registry (replacing one of the same name)."""
    DIRECTION_METHODS[method.name] = method
    return method


def get_direction_method(name: str) -> DirectionMethod:
    """The registered method ``name``; an unknown name lists the valid ones."""
    if name not in DIRECTION_METHODS:
        close = difflib.get_close_matches(name, list(DIRECTION_METHODS), n=2, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(
            f"unknown direction method {name!r}.{hint}",
            f"use one of: {', '.join(DIRECTION_METHODS)}.",
        )
    return DIRECTION_METHODS[name]


for _method in (
    DirectionMethod(
        "dsv",
        "pairs",
        lambda **_: MeanDifference(),
        "answer",
        "FairSteer's DSV: contrastive pairs, read at the appended answer letter",
    ),
    DirectionMethod(
        "dsv_balanced",
        "pairs",
        lambda **_: MeanDifference(balance=True),
        "answer",
        "the DSV with pairs reweighted so every answer letter weighs the same on both sides",
    ),
    DirectionMethod(
        "colon",
        "bad",
        lambda **_: MeanDifference(),
        "colon",
        "class-mean difference of the BAD activations at ':' (unbiased minus biased)",
    ),
    DirectionMethod(
        "probe",
        "bad",
        lambda C=1.0, **_: ProbeDirection(C=C),
        "colon",
        "weights of the BAD probe (logistic regression) at ':'",
    ),
    DirectionMethod(
        "pca",
        "bad",
        lambda **_: PCADirection(),
        "colon",
        "first principal component of the BAD activations at ':', signed towards unbiased",
    ),
    DirectionMethod(
        "say_unknown",
        "ambig_unknown",
        lambda **_: MeanDifference(),
        "colon",
        "':' activations of ambiguous items answered 'unknown' minus the other ambiguous items",
    ),
    DirectionMethod(
        "instruction",
        "instruction",
        lambda **_: MeanDifference(),
        "colon",
        "':' activation with the debiasing instruction minus without (same items)",
    ),
    DirectionMethod(
        "optimised",
        "optimise",
        lambda seed=0, **_: OptimisedDirection(seed=seed),
        "colon",
        "a vector optimised by gradient on the 'unknown'-letter margin at ':' (fit split)",
    ),
):
    register_direction_method(_method)
