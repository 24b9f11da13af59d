"""A CAST-style condition gate: steer where the activation's projection on a condition direction
exceeds a threshold chosen on a held-out split.

Conditional activation steering (CAST; Lee et al., 2024) checks a *condition vector* before
steering: it projects the hidden state on the condition direction, compares the similarity with a
threshold found by a grid search on held-out examples, and steers only where the condition holds.
fairlens' version is the baseline beside FairSteer's logistic gate:

* **direction** ``u``: the unit difference of class means on the fit split, *steer* class minus
  *leave alone* class (with the BAD labels: mean biased minus mean unbiased activation at ``:``);
* **threshold** ``θ``: on a separate selection split, the value that maximises the balanced accuracy
  of "fires" against the labels (fires = should be steered), ties to the highest ``θ`` (the gate
  that fires least). The rule is fixed here, before any steering is scored.
* **fires** where ``a · u > θ``.

CAST compares the *cosine* of the hidden state with its projection; fairlens thresholds the raw
projection, so the gate is linear and the steerer runs it as a logistic gate with weights ``-u``
and intercept ``θ + logit(τ)``: ``sigmoid(-a·u + θ + logit τ) < τ`` exactly when ``a·u > θ``
(:meth:`ConditionGate.linear_gate`). Label convention as everywhere in fairlens: ``y = 1`` leave
alone (unbiased), ``y = 0`` steer (biased).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from sklearn.base import BaseEstimator
from torch import Tensor

from fairlens.errors import ArtifactError, ConfigError, NotFittedError

__all__ = ["MIN_PER_CLASS_GATE", "ConditionGate"]

MIN_PER_CLASS_GATE = 2
"""Fewest labels of each class the direction and the threshold are fitted on."""

SELECTION_RULE = (
    "threshold maximising balanced accuracy of 'fires' (a.u > threshold) against the labels "
    "(fires = label 0, steer) on the selection split; ties to the highest threshold"
)


def _xy(X: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(X.detach().cpu() if isinstance(X, Tensor) else X, dtype=np.float64)
    labels = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if x.ndim != 2 or labels.shape != (x.shape[0],):
        raise ConfigError(
            f"{what}: X must be [n, d] and y [n]; got {x.shape} and {labels.shape}.",
            "pass one activation row per label.",
        )
    if not np.isfinite(x).all():
        raise ConfigError(
            f"{what}: the activations contain NaN or infinite values.",
            "drop or fix the rows with NaN or infinite values first.",
        )
    if not np.isin(labels, (0, 1)).all():
        raise ConfigError(
            f"{what}: labels must be 0 (steer) or 1 (leave alone).",
            "encode steer as 0 and leave alone as 1.",
        )
    counts = np.bincount(labels.astype(np.int64), minlength=2)
    if counts.min() < MIN_PER_CLASS_GATE:
        raise ConfigError(
            f"{what}: {counts[0]} 'steer' (0) and {counts[1]} 'leave alone' (1) labels; the "
            f"condition gate needs >= {MIN_PER_CLASS_GATE} of each.",
            "use more items (a larger split) or another gate.",
        )
    return x, labels.astype(np.int64)


class ConditionGate(BaseEstimator):
    """CAST-style gate: fires where ``a · direction_ > threshold_`` (see the module docstring).

    Args:
        hook_name: The hook point the gate reads (recorded, and checked by the steering that uses it).

    Attributes:
        direction_: ``[d]`` unit condition direction (mean steer-class minus mean leave-alone
            activation on the fit split).
        threshold_: The threshold chosen by :meth:`select_threshold`.
        selection_: How it was chosen: rule, n, label counts, balanced accuracy, firing rates.
        n_fit_: Label counts the direction was fitted on.
    """

    def __init__(self, hook_name: str = "") -> None:
        self.hook_name = hook_name

    def fit(self, X: Any, y: Any) -> ConditionGate:
        """Fit the direction on ``X [n, d]`` with labels ``y`` (1 leave alone, 0 steer)."""
        x, labels = _xy(X, y, "condition gate fit")
        diff = x[labels == 0].mean(0) - x[labels == 1].mean(0)
        norm = float(np.linalg.norm(diff))
        if not norm > 0:
            raise ConfigError(
                "condition gate fit: the two classes have the same mean activation.",
                "fit on other labelled rows (or more items), or use another gate.",
            )
        self.direction_ = diff / norm
        self.n_fit_ = {"steer": int((labels == 0).sum()), "leave": int((labels == 1).sum())}
        return self

    def projection(self, X: Any) -> np.ndarray:
        """``X @ direction_`` (float64)."""
        if not hasattr(self, "direction_"):
            raise NotFittedError("This ConditionGate has no direction yet.", "call .fit(X, y).")
        x = np.asarray(X.detach().cpu() if isinstance(X, Tensor) else X, dtype=np.float64)
        return x @ self.direction_

    def select_threshold(self, X: Any, y: Any) -> ConditionGate:
        """Choose ``threshold_`` on a selection split by the rule of :data:`SELECTION_RULE`."""
        x, labels = _xy(X, y, "condition gate threshold")
        proj = self.projection(x)
        order = np.argsort(proj, kind="stable")
        s, steer = proj[order], labels[order] == 0
        n_steer, n_leave = int(steer.sum()), int((~steer).sum())
        # candidate k: threshold s[k-1] (k = 0: -inf), fires on rows k.. of the sorted order
        below_steer = np.concatenate([[0], np.cumsum(steer)])
        below_leave = np.concatenate([[0], np.cumsum(~steer)])
        tpr = (n_steer - below_steer) / n_steer
        tnr = below_leave / n_leave
        bal = (tpr + tnr) / 2
        # a threshold between tied projections is not a candidate: keep the last k of each run
        valid = np.ones(len(s) + 1, dtype=bool)
        valid[1:-1] = s[1:] != s[:-1]
        bal = np.where(valid, bal, -1.0)
        k = int(np.flatnonzero(bal == bal.max())[-1])  # ties: the highest threshold
        self.threshold_ = -math.inf if k == 0 else float(s[k - 1])
        fires = proj > self.threshold_
        self.selection_ = {
            "rule": SELECTION_RULE,
            "n": len(labels),
            "steer": n_steer,
            "leave": n_leave,
            "balanced_accuracy": float(bal[k]),
            "fires_on_steer": float(fires[labels == 0].mean()),
            "fires_on_leave": float(fires[labels == 1].mean()),
        }
        return self

    def _check(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(
                "This ConditionGate has no threshold yet.",
                "call .fit(X, y).select_threshold(X, y).",
            )

    def fires(self, X: Float[Tensor, "n d"]) -> Bool[Tensor, " n"]:
        """Where the gate fires (``a · u > θ``), computed in float64."""
        self._check()
        u = torch.as_tensor(self.direction_, dtype=torch.float64, device=X.device)
        return (X.double() @ u) > self.threshold_

    def predict(self, X: Any) -> np.ndarray:
        """1 = leave alone, 0 = steer (fairlens' gate label convention)."""
        self._check()
        return (self.projection(X) <= self.threshold_).astype(np.int64)

    def linear_gate(self, tau: float) -> tuple[Tensor, Tensor]:
        """``(coef, intercept)`` of the logistic gate that fires exactly where this one does under
        a steerer with threshold ``tau`` (``sigmoid(a @ coef + intercept) < tau``)."""
        self._check()
        if not 0 < tau < 1:
            raise ConfigError(
                f"tau must be in (0, 1) for a condition gate; got {tau}.",
                "pass tau strictly between 0 and 1, e.g. 0.5.",
            )
        coef = -torch.as_tensor(self.direction_, dtype=torch.float32)
        theta = self.threshold_ if math.isfinite(self.threshold_) else -1e30
        return coef, torch.tensor(theta + math.log(tau / (1 - tau)), dtype=torch.float32)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, **provenance: Any) -> Path:
        """Write the gate as safetensors + JSON (with ``provenance``) under ``path``."""
        from fairlens.artifacts import save_artifact

        self._check()
        meta = {
            "hook_name": self.hook_name,
            "threshold": None if not math.isfinite(self.threshold_) else self.threshold_,
            "selection": self.selection_,
            "n_fit": self.n_fit_,
            "provenance": provenance,
        }
        return save_artifact(
            path, "condition_gate", {"direction": torch.as_tensor(self.direction_)}, meta
        )

    @classmethod
    def load(cls, path: str | Path) -> tuple[ConditionGate, dict[str, Any]]:
        """A gate written by :meth:`save`, and its provenance."""
        from fairlens.artifacts import load_artifact

        tensors, meta = load_artifact(path, "condition_gate")
        direction = tensors.get("direction")
        if direction is None or direction.ndim != 1 or not bool(torch.isfinite(direction).all()):
            raise ArtifactError(
                f"{path}: the condition gate's direction is missing, not [d] or not finite.",
                "refit it (delete the folder and run again).",
            )
        gate = cls(str(meta.get("hook_name", "")))
        gate.direction_ = direction.double().numpy()
        threshold = meta.get("threshold")
        gate.threshold_ = -math.inf if threshold is None else float(threshold)
        gate.selection_ = dict(meta.get("selection") or {})
        gate.n_fit_ = dict(meta.get("n_fit") or {})
        return gate, dict(meta.get("provenance") or {})
