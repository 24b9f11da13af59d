"""Linear probes: a batched logistic-regression solver and a scikit-learn compatible estimator.

FairSteer detects "biased" activations with one L2-regularised logistic regression per layer.
Fitting 30+ layers one by one with scikit-learn's lbfgs is the slow part of a layer sweep, so
:func:`fit_logistic_batched` fits every layer at once with a batched Newton (IRLS) method in torch.
It minimises *exactly* scikit-learn's objective, so its solution is the lbfgs solution (to solver
tolerance), and it runs on CPU or GPU.

:class:`LinearProbe` wraps a single layer's probe as a scikit-learn classifier (``clone``,
``cross_val_score``, ``Pipeline`` work) and adds the torch helpers the steering hook needs: an
on-device ``P(unbiased | activation)`` without host synchronisation, and tensor (de)serialisation.

Label convention (used everywhere in fairlens): ``y = 1`` means *unbiased*, ``y = 0`` *biased*.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import Tensor

from fairlens.detect.logistic import (
    _np,
    fit_logistic_batched,
)
from fairlens.errors import ConfigError, NotFittedError

__all__ = ["LinearProbe", "fit_logistic_batched"]

"""Above this many features ``method="auto"`` uses matrix-free Newton-CG (no d x d Hessians)."""
"""Memory budget (bytes, float64 work arrays) for one chunk of layers fitted together."""


def _as_2d_float(X: Any, name: str = "X") -> np.ndarray:
    """Validate a feature matrix (numpy or torch) and return it as a float64 ``[n, d]`` array."""
    arr = _np(X)
    if arr.ndim != 2:
        raise ConfigError(
            f"{name} must be 2-D [n_examples, d_model]; received shape {arr.shape}.",
            "Select one layer (e.g. acts[:, layer]) and flatten any other axes.",
        )
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != np.bool_:
        raise ConfigError(
            f"{name} must be numeric; received dtype {arr.dtype}.",
            f"Convert {name} to a float array or tensor.",
        )
    arr = arr.astype(np.float64, copy=False)
    if not np.isfinite(arr).all():
        raise ConfigError(
            f"{name} contains NaN or infinite values.", "Drop or fix those rows first."
        )
    return arr


class LinearProbe(ClassifierMixin, BaseEstimator):
    """L2 logistic-regression probe for one layer: ``P(unbiased | activation)``.

    A scikit-learn classifier (``__init__`` stores parameters only, ``fit`` returns ``self``), so
    ``clone``, ``cross_val_score``, ``GridSearchCV`` and ``Pipeline`` work. Fitting uses
    :func:`fit_logistic_batched` (same optimum as ``LogisticRegression(C=C)``). Class 1 is
    *unbiased*: ``predict_proba(X)[:, 1]`` and :meth:`p_unbiased_torch` are ``P(unbiased)``.

    Args:
        C: Inverse L2 regularisation strength (FairSteer uses 1.0).
        fit_intercept: Whether to fit an unpenalised intercept.
        max_iter: Maximum Newton iterations.
        tol: Convergence tolerance of the solver (see :func:`fit_logistic_batched`).

    Attributes:
        coef_: ``[1, d_model]`` float64 weights (numpy, as in scikit-learn).
        intercept_: ``[1]`` float64 intercept.
        classes_: ``array([0, 1])``.
        n_features_in_: ``d_model``.
    """

    def __init__(
        self, C: float = 1.0, fit_intercept: bool = True, max_iter: int = 100, tol: float = 1e-6
    ) -> None:
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: Any, y: Any) -> LinearProbe:
        """Fit the probe on ``X`` ``[n, d_model]`` (numpy or torch) and labels ``y`` in {0, 1}.

        Raises:
            ConfigError: If shapes disagree, values are not finite, or ``y`` is not binary with
                both classes present.
        """
        Xa = _as_2d_float(X)
        ya = _np(y)
        ya = ya.reshape(-1) if ya.ndim == 2 and 1 in ya.shape else ya
        if ya.ndim != 1 or ya.shape[0] != Xa.shape[0]:
            raise ConfigError(
                f"y must be 1-D with one label per row of X ({Xa.shape[0]}); "
                f"received shape {ya.shape}.",
                "Pass one label per row of X.",
            )
        if ya.dtype.kind not in "biuf":
            raise ConfigError(
                f"y must be numeric 0/1 labels; received dtype {ya.dtype}.",
                "Map your labels to {0, 1} first.",
            )
        labels = {int(v) if float(v).is_integer() else v for v in np.unique(ya).tolist()}
        if not labels <= {0, 1}:
            raise ConfigError(
                "y must contain only 0 (biased) and 1 (unbiased); "
                f"received labels {sorted(labels)}.",
                "Map your labels to {0, 1} first.",
            )
        if labels != {0, 1}:
            raise ConfigError(
                f"y must contain both classes 0 and 1; received only {sorted(labels)} "
                f"in {len(ya)} examples.",
                "Collect examples of both biased (0) and unbiased (1) answers.",
            )
        coef, intercept = fit_logistic_batched(
            torch.from_numpy(Xa)[None],
            torch.from_numpy(ya.astype(np.float64)),
            C=self.C,
            fit_intercept=self.fit_intercept,
            max_iter=self.max_iter,
            tol=self.tol,
        )
        self._set_fitted(coef[0].numpy(), float(intercept[0]))
        return self

    def _set_fitted(self, coef: np.ndarray, intercept: float) -> None:
        self.coef_ = np.asarray(coef, dtype=np.float64).reshape(1, -1)
        self.intercept_ = np.array([intercept], dtype=np.float64)
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = self.coef_.shape[1]
        self._torch_cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "coef_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise NotFittedError(
                "This LinearProbe is not fitted yet.",
                "Call .fit(X, y) or build one with LinearProbe.from_weights(coef, intercept).",
            )

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits ``X @ coef + intercept`` as a float64 ``[n]`` array (> 0 means unbiased)."""
        self._check_fitted()
        Xa = _as_2d_float(X)
        if Xa.shape[1] != self.n_features_in_:
            raise ConfigError(
                f"X has {Xa.shape[1]} features but the probe was fitted on {self.n_features_in_}.",
                "Pass activations of the same hook/model the probe was trained on.",
            )
        return Xa @ self.coef_[0] + self.intercept_[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """``[n, 2]`` probabilities; column 1 is ``P(unbiased)``."""
        p1 = expit(self.decision_function(X))
        return np.stack([1.0 - p1, p1], axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (1 = unbiased) as an int ``[n]`` array."""
        return (self.decision_function(X) > 0).astype(np.int64)

    @property
    def direction_(self) -> np.ndarray:
        """Unit-norm weight vector ``[d_model]``: the direction along which P(unbiased) grows."""
        self._check_fitted()
        w = self.coef_[0]
        return w / max(float(np.linalg.norm(w)), np.finfo(np.float64).tiny)

    def p_unbiased_torch(self, acts: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """``sigmoid(acts @ w + b)`` in float32 on ``acts``' device, without host synchronisation.

        For use inside hooks; the weights are copied to each device once and cached.
        """
        self._check_fitted()
        key = (acts.device, torch.float32)
        if key not in self._torch_cache:
            w = torch.from_numpy(self.coef_[0]).to(device=acts.device, dtype=torch.float32)
            b = torch.from_numpy(self.intercept_).to(device=acts.device, dtype=torch.float32)
            self._torch_cache[key] = (w, b[0])
        w, b = self._torch_cache[key]
        return torch.sigmoid(acts.to(torch.float32) @ w + b)

    @classmethod
    def from_weights(
        cls, coef: Tensor | np.ndarray, intercept: Tensor | np.ndarray | float, C: float = 1.0
    ) -> LinearProbe:
        """A fitted probe from saved weights (``coef`` ``[d_model]`` or ``[1, d_model]``)."""
        c, i = _np(coef).astype(np.float64), _np(intercept).astype(np.float64)
        if c.ndim not in (1, 2) or (c.ndim == 2 and c.shape[0] != 1) or i.size != 1:
            raise ConfigError(
                f"Expected coef [d_model] or [1, d_model] and a scalar intercept; received coef "
                f"{c.shape} and intercept {i.shape}.",
                "Pass coef as [d_model] (or [1, d_model]) and intercept as a single number.",
            )
        if not (np.isfinite(c).all() and np.isfinite(i).all()):
            raise ConfigError(
                "Probe weights contain NaN or infinite values.",
                "Pass finite coef and intercept (refit the probe if they came out NaN).",
            )
        probe = cls(C=C)
        probe._set_fitted(c.reshape(-1), float(i.reshape(())))
        return probe

    def to_tensors(self) -> dict[str, Tensor]:
        """``{"coef": [d_model], "intercept": []}`` float64 tensors, ready for safetensors."""
        self._check_fitted()
        return {
            "coef": torch.from_numpy(self.coef_[0].copy()),
            "intercept": torch.tensor(float(self.intercept_[0]), dtype=torch.float64),
        }
