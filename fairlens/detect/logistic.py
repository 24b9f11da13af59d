"""Batched L2-regularised logistic regression in torch: one probe per layer (or per anything), all fitted at once by Newton/PCG steps, chunked to bound memory."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from fairlens.errors import ConfigError

_NEWTON_MAX_D = 1024


_CHUNK_BYTES = 512 * 2**20


_LS_STEPS = 40


@dataclass(frozen=True)
class _Opts:
    """Solver settings shared by every chunk of layers."""

    C: float
    fit_intercept: bool
    max_iter: int
    tol: float
    use_cg: bool


def fit_logistic_batched(
    X: Float[Tensor, "layer batch d_model"],
    y: Float[Tensor, " batch"] | Float[Tensor, "layer batch"],
    *,
    C: float = 1.0,
    fit_intercept: bool = True,
    max_iter: int = 100,
    tol: float = 1e-6,
    sample_weight: Tensor | np.ndarray | None = None,
    method: Literal["auto", "newton", "newton-cg"] = "auto",
    init: tuple[Tensor, Tensor] | None = None,
) -> tuple[Float[Tensor, "layer d_model"], Float[Tensor, " layer"]]:
    """Fit one L2 logistic regression per layer, all layers at once.

    Minimises scikit-learn's objective ``C * sum_i s_i * logloss_i + 0.5 * ||w||^2`` (the intercept
    is not penalised), so the result equals ``LogisticRegression(C=C, solver="lbfgs")`` fitted to
    convergence. Internally the features are centred and scaled per layer; the penalty is rescaled
    with them, so this is an exact reparametrisation (better conditioned, same optimum), and the
    weights are returned in the raw coordinates the probe is applied to. Work is done in float64
    on ``X``'s device, a chunk of layers at a time to bound memory.

    Args:
        X: Features per layer (e.g. residual-stream activations), any float dtype.
        y: Labels in {0, 1}; shared by all layers (``[batch]``) or per layer (``[layer, batch]``).
        C: Inverse regularisation strength, as in scikit-learn.
        fit_intercept: Whether to fit an (unpenalised) intercept.
        max_iter: Maximum Newton iterations.
        tol: Stop when half the squared Newton decrement (an estimate of the objective's distance
            to its optimum) is below ``tol`` for every layer.
        sample_weight: Optional per-example weights, ``[batch]`` or ``[layer, batch]``.
        method: ``"newton"`` forms and Cholesky-factorises the ``d x d`` Hessians; ``"newton-cg"``
            solves the Newton systems matrix-free with preconditioned conjugate gradients (for
            large ``d``); ``"auto"`` picks Newton for ``d <= 1024``. Both take exact Newton steps
            (to a tight CG tolerance); Newton uses a float32 Cholesky factor of the Hessian as
            preconditioner, Newton-CG a diagonal one.
        init: Optional warm start ``(coef [layer, d_model], intercept [layer])`` in raw
            coordinates, e.g. the solution on an overlapping data set (cross-validation folds).

    Returns:
        ``(coef, intercept)`` in float64 on ``X``'s device; ``intercept`` is zero when
        ``fit_intercept`` is False.

    Raises:
        ConfigError: On inconsistent shapes, non-finite values or invalid hyper-parameters.
    """
    if X.ndim != 3:
        raise ConfigError(
            f"X must have shape [layer, batch, d_model]; received shape {tuple(X.shape)}.",
            "Add a leading layer axis (X[None]) for a single layer.",
        )
    n_layers, n, d = X.shape
    if not C > 0 or max_iter < 1 or not tol > 0:
        raise ConfigError(
            f"Need C > 0, max_iter >= 1, tol > 0; received {C=}, {max_iter=}, {tol=}.",
            "Pass C > 0, max_iter >= 1 and tol > 0.",
        )
    if method not in ("auto", "newton", "newton-cg"):
        raise ConfigError(
            f"Unknown method {method!r}; expected 'auto', 'newton' or 'newton-cg'.",
            "Pass method='auto', 'newton' or 'newton-cg'.",
        )
    device = X.device
    yy = _per_layer(y, n_layers, n, device, "y")
    sw = torch.ones(n) if sample_weight is None else sample_weight
    sw = _per_layer(sw, n_layers, n, device, "sample_weight")
    if not bool(((yy == 0) | (yy == 1)).all()):
        raise ConfigError("y must contain only 0 and 1.", "Encode unbiased as 1 and biased as 0.")
    if bool((sw < 0).any()):
        raise ConfigError(
            "sample_weight must be non-negative.", "Pass sample_weight >= 0 for every example."
        )
    use_cg = method == "newton-cg" or (method == "auto" and d > _NEWTON_MAX_D)
    opts = _Opts(float(C), bool(fit_intercept), int(max_iter), float(tol), use_cg)
    if init is not None:
        if tuple(init[0].shape) != (n_layers, d) or tuple(init[1].shape) != (n_layers,):
            raise ConfigError(
                f"init must be (coef [{n_layers}, {d}], intercept [{n_layers}]); received "
                f"{tuple(init[0].shape)} and {tuple(init[1].shape)}.",
                "Pass init from a fit with the same layers and d_model, or init=None.",
            )
        init = (init[0].to(device, torch.float64), init[1].to(device, torch.float64))
    p = d + int(fit_intercept)
    per_layer = 8 * (2 * n * p + (0 if use_cg else n * p + 2 * p * p))
    chunk = max(1, _CHUNK_BYTES // per_layer)
    coefs, intercepts = [], []
    for s in range(0, n_layers, chunk):
        Xc = X[s : s + chunk].to(torch.float64)
        if not bool(torch.isfinite(Xc).all()):
            raise ConfigError("X contains NaN or infinite values.", "Drop or fix those rows first.")
        sl = slice(s, s + chunk)
        w, b = _fit_chunk(
            Xc, yy[sl], sw[sl], opts, None if init is None else (init[0][sl], init[1][sl])
        )
        coefs.append(w)
        intercepts.append(b)
    return torch.cat(coefs), torch.cat(intercepts)


def _per_layer(v: Any, n_layers: int, n: int, device: torch.device, name: str) -> Tensor:
    """``v`` as a float64 ``[layer, batch]`` tensor on ``device`` (broadcasting ``[batch]``)."""
    t = torch.as_tensor(_np(v) if not isinstance(v, Tensor) else v).to(device, torch.float64)
    if t.shape == (n,):
        return t.expand(n_layers, n)
    if t.shape == (n_layers, n):
        return t
    raise ConfigError(
        f"{name} must have shape [{n}] or [{n_layers}, {n}] to match X; received {tuple(t.shape)}.",
        f"Pass {name} with one entry per row of X (or one row per layer).",
    )


@dataclass(frozen=True)
class _Problem:
    """One chunk's objective in centred/scaled coordinates: ``Z [layer, n, p]``, penalty ``pen``."""

    Z: Tensor
    y: Tensor
    sw: Tensor
    pen: Tensor
    C: float

    def value(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``z`` and ``C * sum s * logloss + 0.5 * sum pen * theta^2`` (stable) per layer."""
        z = torch.bmm(self.Z, theta.unsqueeze(-1)).squeeze(-1)
        loss = (self.sw * (torch.nn.functional.softplus(z) - self.y * z)).sum(-1)
        return z, self.C * loss + 0.5 * (self.pen * theta**2).sum(-1)

    def rmatvec(self, r: Tensor) -> Tensor:
        """``Z^T r`` per layer."""
        return torch.bmm(r.unsqueeze(1), self.Z).squeeze(1)

    def hvp(self, curv: Tensor, v: Tensor) -> Tensor:
        """Hessian-vector product ``(Z^T diag(curv) Z + diag(pen)) v``, matrix-free."""
        return self.rmatvec(curv * torch.bmm(self.Z, v.unsqueeze(-1)).squeeze(-1)) + self.pen * v


def _fit_chunk(
    X: Tensor, y: Tensor, sw: Tensor, opts: _Opts, init: tuple[Tensor, Tensor] | None
) -> tuple[Tensor, Tensor]:
    """Damped Newton on centred/scaled features for a chunk of layers; returns raw ``(w, b)``."""
    n_layers, n, d = X.shape
    wsum = sw.sum(-1, keepdim=True).clamp_min(torch.finfo(X.dtype).tiny)
    mu = (sw.unsqueeze(-1) * X).sum(1) / wsum if opts.fit_intercept else X.new_zeros(n_layers, d)
    Z = X - mu.unsqueeze(1)
    sigma = ((sw.unsqueeze(-1) * Z**2).sum(1) / wsum).sqrt()
    sigma = torch.where(sigma > 1e-12, sigma, torch.ones_like(sigma))
    Z, pen = Z / sigma.unsqueeze(1), 1.0 / sigma**2  # 0.5 ||w||^2 with w = theta / sigma
    theta = Z.new_zeros(n_layers, d + int(opts.fit_intercept))
    if opts.fit_intercept:
        Z = torch.cat([Z, Z.new_ones(n_layers, n, 1)], dim=-1)
        pen = torch.cat([pen, pen.new_zeros(n_layers, 1)], dim=-1)
    if init is not None:
        theta[:, :d] = init[0] * sigma
        if opts.fit_intercept:
            theta[:, d] = init[1] + (mu * init[0]).sum(-1)
    problem = _Problem(Z, y, sw, pen, opts.C)
    Z32 = None if opts.use_cg else Z.to(torch.float32)
    z, f = problem.value(theta)
    active = torch.ones(n_layers, dtype=torch.bool, device=X.device)
    precond, stale = None, True
    for _ in range(opts.max_iter):
        prob = torch.sigmoid(z)
        g = opts.C * problem.rmatvec(sw * (prob - y)) + pen * theta
        curv = opts.C * sw * prob * (1 - prob)
        if Z32 is None:
            inv_diag = 1.0 / (torch.bmm(curv.unsqueeze(1), Z**2).squeeze(1) + pen).clamp_min(1e-12)
            precond = lambda r, inv=inv_diag: inv * r  # noqa: E731 (Jacobi)
        elif precond is None or stale:
            precond = _cholesky32(Z32, curv, pen)
        step, n_cg = _pcg(problem, curv, g * active.unsqueeze(-1), precond)
        stale = n_cg > 4  # a stale factor costs CG iterations; each reads all of Z once
        dec = -(g * step).sum(-1)  # squared Newton decrement: ~2x the distance to the optimum
        done = active & (dec <= 2 * opts.tol)
        # Batched backtracking (Armijo); converged/inactive layers take the full (tiny) step.
        t, skip = torch.ones_like(f), done | ~active
        theta_new, z_new, f_new, ok = theta, z, f, skip
        for _ls in range(_LS_STEPS):
            theta_new = theta + t.unsqueeze(-1) * step
            z_new, f_new = problem.value(theta_new)
            ok = (f_new <= f - 1e-4 * t * dec) | skip
            if bool(ok.all()):
                break
            t = torch.where(ok, t, 0.5 * t)
        else:  # no decrease found: at numerical precision, keep the old point and stop
            keep = ~ok
            theta_new = torch.where(keep.unsqueeze(-1), theta, theta_new)
            z_new, f_new = torch.where(keep.unsqueeze(-1), z, z_new), torch.where(keep, f, f_new)
            done = done | keep
        theta, z, f = theta_new, z_new, f_new
        active = active & ~done
        if not bool(active.any()):
            break
    else:
        warnings.warn(
            f"fit_logistic_batched: {int(active.sum())} layer(s) did not converge in "
            f"{opts.max_iter} iterations; increase max_iter or tol.",
            RuntimeWarning,
            stacklevel=3,
        )
    w = theta[:, :d] / sigma
    b = theta[:, d] - (mu * w).sum(-1) if opts.fit_intercept else w.new_zeros(n_layers)
    return w, b


def _cholesky32(Z32: Tensor, curv: Tensor, pen: Tensor) -> Callable[[Tensor], Tensor]:
    """Preconditioner ``H^{-1}`` from a float32 Cholesky factor of the Hessian (float64 fallback).

    Forming ``H`` dominates the cost; float32 halves it, and the exact float64 Hessian-vector
    products in :func:`_pcg` remove the rounding error, so the Newton step stays exact.
    """
    H = torch.bmm(Z32.transpose(1, 2), Z32 * curv.to(torch.float32).unsqueeze(-1))
    H.diagonal(dim1=-2, dim2=-1).add_(pen.to(torch.float32))
    chol, info = torch.linalg.cholesky_ex(H)
    dtype = torch.float32
    if bool((info != 0).any()):  # ill-conditioned in float32: redo in float64 with a tiny ridge
        Z64 = Z32.to(torch.float64)
        H = torch.bmm(Z64.transpose(1, 2), Z64 * curv.unsqueeze(-1))
        H.diagonal(dim1=-2, dim2=-1).add_(pen + 1e-10 * H.diagonal(dim1=-2, dim2=-1).amax(-1, True))
        chol, dtype = torch.linalg.cholesky(H), torch.float64
    return lambda r: torch.cholesky_solve(r.to(dtype).unsqueeze(-1), chol).squeeze(-1).to(r.dtype)


def _pcg(
    prob: _Problem, curv: Tensor, g: Tensor, precond: Callable[[Tensor], Tensor], max_cg: int = 250
) -> tuple[Tensor, int]:
    """Newton step ``s``: preconditioned CG on ``H s = -g`` with exact, matrix-free ``H`` products.

    Stops per layer at residual ``min(1e-2, sqrt(|g|)) * |g|`` (a forcing term that keeps Newton's
    fast local convergence). Returns the step and the number of CG iterations used.
    """
    gnorm = g.norm(dim=-1)
    eta = torch.clamp(gnorm.sqrt(), max=1e-2) * gnorm
    x, r = torch.zeros_like(g), -g
    zr = precond(r)
    p, rz = zr.clone(), (r * zr).sum(-1)
    for it in range(max_cg):
        running = r.norm(dim=-1) > eta
        if not bool(running.any()):
            return x, it
        hp = prob.hvp(curv, p)
        alpha = torch.where(running, rz / (p * hp).sum(-1).clamp_min(1e-300), torch.zeros_like(rz))
        x, r = x + alpha.unsqueeze(-1) * p, r - alpha.unsqueeze(-1) * hp
        zr = precond(r)
        rz_new = (r * zr).sum(-1)
        p, rz = zr + (rz_new / rz.clamp_min(1e-300)).unsqueeze(-1) * p, rz_new
    return x, max_cg


def _np(v: Any) -> np.ndarray:
    """``v`` (tensor on any device/dtype, array, list or scalar) as a numpy array."""
    if isinstance(v, Tensor):
        t = v.detach().cpu()
        return (t.double() if t.is_floating_point() else t).numpy()
    return np.asarray(v)
