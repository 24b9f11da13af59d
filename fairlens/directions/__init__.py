"""Fairness directions per layer: FairSteer's DSV, a registry of other direction methods, comparisons.

* :mod:`.core` — :class:`Directions` (one vector per hook), :func:`compute_dsv`,
  :func:`mean_difference`, :func:`pca_direction`, :func:`cosine`, :func:`project_out`.
* :mod:`.estimators` — the direction finders as scikit-learn estimators.
* :mod:`.registry` — :data:`DIRECTION_METHODS`: which estimator, fitted on which fit-split data.
"""

from __future__ import annotations

from .core import (
    Directions,
    DSVPosition,
    compute_dsv,
    cosine,
    dsv_at_colon,
    mean_difference,
    pca_direction,
    project_out,
)
from .estimators import MeanDifference, OptimisedDirection, PCADirection, ProbeDirection
from .registry import (
    DIRECTION_METHODS,
    RECIPES,
    DirectionMethod,
    get_direction_method,
    register_direction_method,
)

__all__ = [
    "DIRECTION_METHODS",
    "RECIPES",
    "DSVPosition",
    "DirectionMethod",
    "Directions",
    "MeanDifference",
    "OptimisedDirection",
    "PCADirection",
    "ProbeDirection",
    "compute_dsv",
    "cosine",
    "dsv_at_colon",
    "get_direction_method",
    "mean_difference",
    "pca_direction",
    "project_out",
    "register_direction_method",
]
