"""Layer sweep: fit one linear probe per layer and score how well each layer separates biased
from unbiased activations (FairSteer's detection stage).

:func:`probe_sweep` splits the examples once into train/validation (stratified 80/20 with seed 42,
as in the paper, or by group so that no BBQ template leaks across the split), fits all layers at
once with the batched solver, and reports validation accuracy/AUROC plus k-fold cross-validation
accuracy on the train part. The result keeps the train-part probe weights for every layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float, Int
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    StratifiedKFold,
    train_test_split,
)
from torch import Tensor

from fairlens.backend import hook_name
from fairlens.detect.probes import fit_logistic_batched
from fairlens.detect.sweep_result import LayerScore, SweepResult
from fairlens.errors import ConfigError

__all__ = ["LayerScore", "SweepResult", "probe_sweep", "train_val_split"]

MIN_PER_CLASS = 10
"""Fewest examples of each class a sweep accepts (below it, accuracies are noise)."""


def probe_sweep(
    acts: Float[Tensor, "batch layer d_model"],
    labels: Int[Tensor, " batch"] | np.ndarray,
    *,
    layers: Sequence[int] | None = None,
    hook_names: Sequence[str] | None = None,
    C: float = 1.0,
    val_fraction: float = 0.2,
    seed: int = 42,
    cv_folds: int = 5,
    groups: Sequence[Any] | np.ndarray | None = None,
    solver: Literal["batched", "sklearn"] = "batched",
    device: torch.device | str | None = None,
    progress: bool = False,
) -> SweepResult:
    """Fit and score one logistic-regression probe per layer.

    The examples are split once into train and validation parts. Without ``groups`` the split is
    stratified by label (``val_fraction`` = 0.2 and ``seed`` = 42 reproduce the paper). With
    ``groups`` (e.g. BBQ template ids ``category/question_index``) the split is by group: no group
    appears in both parts, so the probe is never validated on templates it was trained on;
    ``val_fraction`` is then the fraction of *groups*. Probes are fitted on the train part and
    scored on the validation part (accuracy, AUROC). ``cv_mean``/``cv_std`` come from
    ``cv_folds``-fold CV on the train part (stratified, or group k-fold with ``groups``), all
    layers fitted at once per fold.

    Args:
        acts: Activations, one row per example and one entry per swept layer.
        labels: ``[batch]`` labels, 1 = unbiased, 0 = biased.
        layers: Layer index of each entry of ``acts``' layer axis (default ``0..n_layer-1``). To
            sweep a subset, slice ``acts`` (``acts[:, idx]``) and pass ``layers=idx``.
        hook_names: Hook name of each entry (default ``blocks.{layer}.hook_resid_post``).
        C: Inverse L2 regularisation strength (FairSteer: 1.0).
        val_fraction: Fraction held out for validation, in (0, 1).
        seed: Seed of the split and of the CV folds.
        cv_folds: Number of CV folds on the train part; 0 disables CV (``cv_mean`` is NaN).
        groups: Optional ``[batch]`` group id per example for a group-disjoint split.
        solver: ``"batched"`` (all layers at once, torch) or ``"sklearn"`` (one
            ``LogisticRegression`` per layer; slower, for reference).
        device: Where the batched solver runs (default: ``acts``' device).
        progress: Show a tqdm progress bar over the fits (one per fold, plus the final fit).

    Returns:
        A :class:`SweepResult`; ``best_layer()`` is the layer with the highest validation accuracy.

    Raises:
        ConfigError: If shapes disagree, values are not finite, a class has fewer than
            ``MIN_PER_CLASS`` examples, or the split/CV settings cannot be satisfied.
    """
    X, y, grp = _validate(acts, labels, groups, val_fraction, cv_folds, solver)
    n, n_layers, _ = X.shape
    layer_ids = tuple(range(n_layers)) if layers is None else tuple(int(v) for v in layers)
    if len(layer_ids) != n_layers:
        raise ConfigError(
            f"layers has {len(layer_ids)} entries but acts has {n_layers} layer entries "
            f"(shape {tuple(X.shape)}).",
            "Pass one layer index per entry; to sweep a subset use acts[:, idx] with layers=idx.",
        )
    names = (
        tuple(hook_name("resid_post", v) for v in layer_ids)
        if hook_names is None
        else tuple(hook_names)
    )
    if len(names) != n_layers:
        raise ConfigError(
            f"hook_names has {len(names)} entries but acts has {n_layers} layers.",
            "Pass one hook name per layer entry, or hook_names=None.",
        )
    train, val = train_val_split(y, grp, val_fraction=val_fraction, seed=seed)
    dev = torch.device(device) if device is not None else X.device
    Xl = X.to(dev).transpose(0, 1)  # [layer, batch, d_model]
    yt = torch.from_numpy(y.astype(np.float64)).to(dev)
    folds = list(_cv_folds(y[train], None if grp is None else grp[train], cv_folds, seed))
    bar = _progress(len(folds) + 1, progress)

    def fit(idx: np.ndarray) -> tuple[Tensor, Tensor]:
        it = torch.from_numpy(idx).to(dev)
        if solver == "sklearn":
            return _fit_sklearn(Xl[:, it], y[idx], C)
        return fit_logistic_batched(Xl[:, it], yt[it], C=C)

    coef, intercept = fit(train)
    _tick(bar)
    logits_val = _logits(Xl, coef, intercept, val)
    fold_acc = np.empty((len(folds), n_layers))
    for k, (tr, te) in enumerate(folds):
        w, b = fit(train[tr])
        fold_acc[k] = _accuracy(_logits(Xl, w, b, train[te]), y[train[te]])
        _tick(bar)
    if bar is not None:
        bar.close()
    acc = _accuracy(logits_val, y[val])
    scores = tuple(
        LayerScore(
            layer=layer_ids[i],
            accuracy=float(acc[i]),
            auroc=float(roc_auc_score(y[val], logits_val[i])),
            cv_mean=float(fold_acc[:, i].mean()) if folds else math.nan,
            cv_std=float(fold_acc[:, i].std()) if folds else math.nan,
            n_train=len(train),
            n_val=len(val),
        )
        for i in range(n_layers)
    )
    return SweepResult(
        hook_names=names,
        layers=layer_ids,
        scores=scores,
        class_balance=float(y.mean()),
        n=n,
        val_fraction=float(val_fraction),
        seed=seed,
        C=float(C),
        coef=coef.detach().to("cpu", torch.float64),
        intercept=intercept.detach().to("cpu", torch.float64),
    )


def _validate(
    acts: Any, labels: Any, groups: Any, val_fraction: float, cv_folds: int, solver: str
) -> tuple[Tensor, np.ndarray, np.ndarray | None]:
    """Check the sweep inputs; return activations, labels as int array and groups as array."""
    X = acts if isinstance(acts, Tensor) else torch.as_tensor(np.asarray(acts))
    if X.ndim != 3:
        raise ConfigError(
            f"acts must have shape [batch, layer, d_model]; received shape {tuple(X.shape)}.",
            "Stack per-layer activations with torch.stack(per_layer, dim=1).",
        )
    if not X.is_floating_point():
        X = X.to(torch.float32)
    if not bool(torch.isfinite(X).all()):
        raise ConfigError("acts contains NaN or infinite values.", "Drop or fix those rows first.")
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ConfigError(
            f"labels must have shape [{X.shape[0]}] (one per row of acts); received {y.shape}.",
            "Pass one label per row of acts.",
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ConfigError(
            "labels contain NaN or infinite values.",
            "Drop or fix the rows with NaN or infinite labels first.",
        )
    values = sorted(set(np.unique(y).tolist()))
    if not set(values) <= {0, 1}:
        raise ConfigError(
            f"labels must be 0 (biased) or 1 (unbiased); received values {values[:10]}.",
            "Map your labels to {0, 1} first.",
        )
    y = y.astype(np.int64)
    counts = np.bincount(y, minlength=2)
    if counts.min() < MIN_PER_CLASS:
        raise ConfigError(
            f"A probe sweep needs at least {MIN_PER_CLASS} examples of each class; received "
            f"{counts[0]} biased (0) and {counts[1]} unbiased (1).",
            "Label more examples (or use more BBQ items) so both classes are represented.",
        )
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(
            f"val_fraction must be in (0, 1); received {val_fraction}.",
            "Pass val_fraction strictly between 0 and 1, e.g. 0.2.",
        )
    if cv_folds != 0 and cv_folds < 2:
        raise ConfigError(
            f"cv_folds must be 0 (off) or >= 2; received {cv_folds}.",
            "Pass cv_folds=0 to turn CV off, or 2 or more.",
        )
    if solver not in ("batched", "sklearn"):
        raise ConfigError(
            f"Unknown solver {solver!r}; expected 'batched' or 'sklearn'.",
            "Pass solver='batched' or solver='sklearn'.",
        )
    grp = None
    if groups is not None:
        grp = np.asarray(groups)
        if grp.shape != (X.shape[0],):
            raise ConfigError(
                f"groups must have one entry per example ({X.shape[0]}); "
                f"received shape {grp.shape}.",
                "Pass one group id per row of acts.",
            )
        if len(np.unique(grp)) < 2:
            raise ConfigError(
                "groups has a single group; a group split needs at least 2.",
                "Pass groups with at least 2 distinct ids, or groups=None.",
            )
    return X, y, grp


def train_val_split(
    labels: Int[Tensor, " batch"] | np.ndarray,
    groups: Sequence[Any] | np.ndarray | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 42,
) -> tuple[np.ndarray, np.ndarray]:
    """The train/validation split :func:`probe_sweep` uses, as sorted index arrays.

    Stratified by label without ``groups``; with ``groups`` a group-disjoint split in which
    ``val_fraction`` of the groups go to validation, so no group is in both parts.

    Raises:
        ConfigError: If either part would contain a single class.
    """
    y = labels.detach().cpu().numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    idx = np.arange(len(y))
    if groups is None:
        train, val = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=y)
    else:
        gss = GroupShuffleSplit(n_splits=1, test_size=val_fraction, random_state=seed)
        train, val = next(gss.split(idx, y, np.asarray(groups)))
    for name, part in (("train", train), ("validation", val)):
        if len(np.unique(y[part])) < 2:
            raise ConfigError(
                f"The {name} part of the split has only one class ({len(part)} examples).",
                "Use more groups/examples or a different val_fraction or seed.",
            )
    return np.sort(train), np.sort(val)


def _cv_folds(
    y: np.ndarray, grp: np.ndarray | None, k: int, seed: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``k`` CV folds over the train part (stratified, or group k-fold); none when ``k == 0``."""
    if k == 0:
        return iter(())
    counts = np.bincount(y, minlength=2)
    if grp is None and counts.min() < k:
        raise ConfigError(
            f"cv_folds={k} needs at least {k} train examples per class; "
            f"received {counts.tolist()}.",
            "Lower cv_folds or set cv_folds=0.",
        )
    if grp is not None:
        if len(np.unique(grp)) < k:
            raise ConfigError(
                f"cv_folds={k} needs at least {k} groups in the train part; received "
                f"{len(np.unique(grp))}.",
                "Lower cv_folds, set cv_folds=0, or use more groups.",
            )
        return GroupKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y, grp)
    return StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(y, y)


def _fit_sklearn(X: Tensor, y: np.ndarray, C: float) -> tuple[Tensor, Tensor]:
    """Reference path: one scikit-learn ``LogisticRegression`` (lbfgs) per layer."""
    coefs, intercepts = [], []
    for layer in range(X.shape[0]):
        m = LogisticRegression(C=C, max_iter=10_000)
        m.fit(X[layer].detach().to("cpu", torch.float64).numpy(), y)
        coefs.append(torch.as_tensor(np.asarray(m.coef_)[0]))
        intercepts.append(float(np.asarray(m.intercept_)[0]))
    return torch.stack(coefs).to(X.device), torch.tensor(
        intercepts, dtype=torch.float64, device=X.device
    )


def _logits(Xl: Tensor, w: Tensor, b: Tensor, idx: np.ndarray) -> np.ndarray:
    """``[layer, len(idx)]`` float64 logits of the probes ``(w, b)`` on the rows ``idx``."""
    it = torch.from_numpy(idx).to(Xl.device)
    z = torch.bmm(Xl[:, it].to(torch.float64), w.to(torch.float64).unsqueeze(-1)).squeeze(-1)
    return (z + b.to(torch.float64).unsqueeze(-1)).cpu().numpy()


def _accuracy(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-layer accuracy of ``logits > 0`` against ``y``."""
    return ((logits > 0).astype(np.int64) == y[None, :]).mean(axis=1)


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="probe sweep", unit="fit")


def _tick(bar: Any) -> None:
    if bar is not None:
        bar.update(1)
