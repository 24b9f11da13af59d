"""Direction finders as scikit-learn estimators: one direction per layer, fitted on the fit split.

Every estimator takes per-layer activations ``X`` of shape ``[n, layer, d]`` (a torch tensor or an
array) and labels ``y`` in {0, 1}, and learns ``directions_`` of shape ``[layer, d]`` pointing from
the ``y = 0`` side to the ``y = 1`` side (the side steering should move towards). ``__init__`` stores
parameters only and ``fit`` returns ``self``, so ``clone`` and ``get_params`` work.

* :class:`MeanDifference` — ``mean(X | y=1) - mean(X | y=0)``, unnormalised (the DSV and its kin);
  with ``groups`` and ``balance=True`` each side is the mean of its per-group means, so that, e.g.,
  every answer letter weighs the same on both sides (the letter-balanced DSV).
* :class:`ProbeDirection` — the weight vector of an L2 logistic-regression probe per layer.
* :class:`PCADirection` — the first principal component, signed towards the ``y = 1`` mean.
* :class:`OptimisedDirection` — a vector of fixed norm per layer, optimised by gradient through the
  model (a :class:`~fairlens.scoring.prefix_cache.PrefixCache`) to raise the "unknown"-letter margin at ``:``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.base import BaseEstimator
from torch import Tensor

from fairlens.distributed import from_rank
from fairlens.errors import ConfigError, NotFittedError
from fairlens.model_types import Model

__all__ = ["MeanDifference", "OptimisedDirection", "PCADirection", "ProbeDirection"]


def _as_xy(X: Any, y: Any) -> tuple[Tensor, Tensor]:
    x = X if isinstance(X, Tensor) else torch.as_tensor(np.asarray(X))
    if x.ndim != 3:
        raise ConfigError(
            f"X must be per-layer activations [n, layer, d]; got shape {tuple(x.shape)}.",
            "stack the layers on axis 1 (Activations.acts has this shape).",
        )
    if not bool(torch.isfinite(x).all()):
        raise ConfigError("X contains NaN or infinite values.", "drop or fix those rows first.")
    labels = torch.as_tensor(np.asarray(y)).long().flatten()
    if labels.shape[0] != x.shape[0]:
        raise ConfigError(
            f"{x.shape[0]} rows of X but {labels.shape[0]} labels.", "pass one label per row of X."
        )
    values = set(labels.unique().tolist())
    if not values <= {0, 1}:
        raise ConfigError(
            f"labels must be 0 or 1; got {sorted(values)[:5]}.",
            "encode unbiased rows as 1 and biased rows as 0.",
        )
    if len(values) < 2:
        raise ConfigError(
            f"need rows of both classes; got only class {values.pop() if values else '-'}.",
            "use more fit items, or another direction method.",
        )
    return x.float(), labels


class _Direction(BaseEstimator):
    directions_: Tensor

    def _check(self) -> None:
        if not hasattr(self, "directions_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet.", "call .fit first."
            )

    def transform(self, X: Any) -> Tensor:
        """Projections ``[n, layer]`` of ``X`` on the unit directions."""
        self._check()
        x = X if isinstance(X, Tensor) else torch.as_tensor(np.asarray(X))
        unit = self.directions_ / self.directions_.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        return torch.einsum("nld,ld->nl", x.float(), unit)


class MeanDifference(_Direction):
    """Class-mean difference per layer (the DSV when ``X`` are contrastive-pair activations).

    Args:
        balance: With ``groups`` given to ``fit``, average the per-group means on each side instead
            of pooling rows, so no group (e.g. answer letter) dominates either side.
    """

    def __init__(self, balance: bool = False) -> None:
        self.balance = balance

    def fit(
        self, X: Any, y: Any, groups: Sequence[Any] | np.ndarray | None = None
    ) -> MeanDifference:
        x, labels = _as_xy(X, y)
        if self.balance and groups is None:
            raise ConfigError(
                "balance=True needs groups (e.g. the answer letter of each row).",
                "pass groups=... to fit(), or use balance=False.",
            )
        sides = []
        for cls in (1, 0):
            mask = labels == cls
            if not self.balance:
                sides.append(x[mask].mean(0))
                continue
            g = np.asarray(groups, dtype=object)[mask.numpy()]
            xs = x[mask]
            means = [xs[torch.as_tensor(g == key)].mean(0) for key in sorted(set(g.tolist()))]
            sides.append(torch.stack(means).mean(0))
        self.directions_ = sides[0] - sides[1]
        self.n_pos_ = int((labels == 1).sum())
        self.n_neg_ = int((labels == 0).sum())
        return self


class ProbeDirection(_Direction):
    """Weights of an L2 logistic-regression probe per layer (``y = 1`` side positive).

    Args:
        C: Inverse regularisation strength (FairSteer's probes: 1.0).
    """

    def __init__(self, C: float = 1.0) -> None:
        self.C = C

    def fit(self, X: Any, y: Any) -> ProbeDirection:
        from fairlens.detect.probes import fit_logistic_batched

        x, labels = _as_xy(X, y)
        coef, intercept = fit_logistic_batched(x.transpose(0, 1), labels.double(), C=self.C)
        self.directions_ = coef.float().cpu()
        self.intercept_ = intercept.float().cpu()
        self.n_pos_ = int((labels == 1).sum())
        self.n_neg_ = int((labels == 0).sum())
        return self


class PCADirection(_Direction):
    """First principal component per layer, signed so the ``y = 1`` rows project higher."""

    def fit(self, X: Any, y: Any) -> PCADirection:
        x, labels = _as_xy(X, y)
        vecs = []
        for layer in range(x.shape[1]):
            xl = x[:, layer].double()
            xl = xl - xl.mean(0)
            v = torch.linalg.svd(xl, full_matrices=False)[2][0]
            proj = xl @ v
            if proj[labels == 1].mean() < proj[labels == 0].mean():
                v = -v
            vecs.append(v.float())
        self.directions_ = torch.stack(vecs)
        self.n_pos_ = int((labels == 1).sum())
        self.n_neg_ = int((labels == 0).sum())
        return self


class OptimisedDirection(_Direction):
    """A vector per layer optimised by gradient on the "unknown"-letter margin at ``:``.

    The vector has a fixed norm, ``norm`` times the layer's mean residual norm, and is added at the
    last prompt position of the fit items' prompts (through the prefix cache: only the layers after
    it are differentiated). The objective is the mean of ``z_unknown - logsumexp(z_other letters)``
    over the ``y = 1`` rows (ambiguous fit items, whose answer is "unknown"); with
    ``disambig_weight > 0`` the cross-entropy of the gold letter on the ``y = 0`` rows (disambiguated
    items) is subtracted, so the vector is pushed not to overwrite answerable questions.

    Args:
        steps: Adam steps per layer (each on one chunk of the cache, cycling).
        lr: Adam learning rate on the unit direction.
        norm: Norm of the vector relative to the mean residual norm at that layer.
        disambig_weight: Weight of the disambiguated-items term (0: the pure margin).
        seed: Seed of the initial direction.
    """

    def __init__(
        self,
        steps: int = 30,
        lr: float = 0.05,
        norm: float = 0.4,
        disambig_weight: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.steps = steps
        self.lr = lr
        self.norm = norm
        self.disambig_weight = disambig_weight
        self.seed = seed

    def fit(
        self,
        X: Any = None,
        y: Any = None,
        *,
        cache: Any,
        answers: Tensor,
        hooks: Sequence[str],
        residual_norms: Sequence[float],
        progress: bool = False,
    ) -> OptimisedDirection:
        """Fit one vector per hook.

        Args:
            X: Unused (the cache holds the prompts); kept for the estimator signature.
            y: ``[n]`` 1 for rows whose "unknown" margin is raised, 0 for rows whose gold answer
                is kept (only with ``disambig_weight > 0``), in the cache's row order.
            cache: A :class:`~fairlens.scoring.prefix_cache.PrefixCache` over the fit prompts (letter read ids).
            answers: ``[n]`` index of the "unknown" letter (``y = 1`` rows) or of the gold letter
                (``y = 0`` rows).
            hooks: One hook name per layer to optimise at.
            residual_norms: Mean residual norm at each hook (sets the vector's norm).
        """
        if self.steps < 1 or not self.norm > 0 or not self.lr > 0:
            raise ConfigError(
                "steps must be >= 1 and norm, lr > 0.",
                "pass steps >= 1, norm > 0 and lr > 0 to OptimisedDirection(...).",
            )
        if len(residual_norms) != len(hooks):
            raise ConfigError(
                f"{len(hooks)} hooks but {len(residual_norms)} residual norms.",
                "pass one residual norm per hook.",
            )
        labels = torch.as_tensor(np.asarray(y)).long()
        answers = torch.as_tensor(answers).long()
        if labels.shape != (cache.n,) or answers.shape != (cache.n,):
            raise ConfigError(
                f"y and answers must have one entry per cached prompt ({cache.n}).",
                "pass one y and one answer per cached prompt, in the cache's row order.",
            )
        if not bool((labels == 1).any()):
            raise ConfigError(
                "no y = 1 rows (ambiguous items) to raise the unknown margin on.",
                "include ambiguous fit items (y = 1 rows) in the cache.",
            )
        gen = torch.Generator().manual_seed(self.seed)
        d = cache.d_model
        vecs = []
        with _frozen(cache.model):
            vecs = self._optimise(cache, labels, answers, hooks, residual_norms, gen, d, progress)
        self.directions_: Float[Tensor, "layer d"] = torch.stack(vecs)
        self.n_pos_ = int((labels == 1).sum())
        self.n_neg_ = int((labels == 0).sum())
        return self

    def _optimise(
        self,
        cache: Any,
        labels: Tensor,
        answers: Tensor,
        hooks: Sequence[str],
        residual_norms: Sequence[float],
        gen: torch.Generator,
        d: int,
        progress: bool,
    ) -> list[Tensor]:
        from tqdm.auto import tqdm

        vecs = []
        for hook, rnorm in tqdm(
            list(zip(hooks, residual_norms, strict=True)),
            desc="optimising direction",
            disable=not progress,
        ):
            u = torch.randn(d, generator=gen).mul_(1e-3).requires_grad_(True)
            opt = torch.optim.Adam([u], lr=self.lr)
            radius = float(rnorm) * self.norm
            for step in range(self.steps):
                chunk = step % cache.n_chunks
                rows = cache.chunk_rows(chunk)
                pos = labels[rows] == 1
                neg = labels[rows] == 0
                if not bool(pos.any()) and not (self.disambig_weight > 0 and bool(neg.any())):
                    continue
                if not cache.owns(chunk):  # another process holds this chunk: take its step
                    u.grad = from_rank(None, cache.owner(chunk))
                    opt.step()
                    continue
                v = radius * u / u.norm().clamp_min(1e-12)
                with torch.enable_grad():
                    _, z = cache.forward_with(chunk, {hook: v})
                    z = z.float()
                    ans = answers[rows].to(z.device)
                    zi = z.gather(1, ans[:, None]).squeeze(1)
                    other = z.masked_fill(
                        torch.nn.functional.one_hot(ans, z.shape[1]).bool(), float("-inf")
                    )
                    margin = zi - other.logsumexp(1)
                    loss = -margin[pos.to(z.device)].mean() if bool(pos.any()) else z.sum() * 0
                    if self.disambig_weight > 0 and bool(neg.any()):
                        ce = torch.nn.functional.cross_entropy(
                            z[neg.to(z.device)], ans[neg.to(z.device)]
                        )
                        loss = loss + self.disambig_weight * ce
                opt.zero_grad()
                loss.backward()
                from_rank(u.grad, cache.owner(chunk))  # the same step on every process
                opt.step()
            with torch.no_grad():
                vecs.append((radius * u / u.norm().clamp_min(1e-12)).detach().float().cpu())
        return vecs


@contextmanager
def _frozen(model: Model) -> Iterator[None]:
    """Turn off gradients of the model's weights (only the direction is optimised); restore after."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
