"""Where in the network are biased and unbiased answers linearly separable?

FairSteer's detection stage probes one hook kind (``resid_post``). These functions ask the same
question more broadly, so that the choice of hook and layer can be justified rather than assumed:

* :func:`hook_type_sweep` — one probe per (hook kind, layer), with cross-validation spread;
* :func:`layer_pca` — 2-D PCA of the activations at each layer (for small-multiples plots);
* :func:`projections` — each example's coordinate along a direction (DSV, probe weights);
* :func:`separability_metrics` — probe accuracy, Fisher ratio, silhouette and margin per layer;
* :func:`head_probe_sweep` — probe accuracy of each attention head's output (``hook_z``), with the
  key/value group of each head recorded so grouped-query models can be read per group.

All functions take already extracted :class:`~fairlens.activations.extraction.Activations` (extraction is the
expensive part, done once), except :func:`head_probe_sweep`, which extracts ``hook_z`` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from sklearn.metrics import silhouette_score
from torch import Tensor

from fairlens.activations.extraction import Activations
from fairlens.analysis.heads import HeadSweep, head_probe_sweep
from fairlens.backend import HOOK_KINDS, parse_hook_name
from fairlens.detect.layer_sweep import SweepResult, probe_sweep, train_val_split
from fairlens.errors import ConfigError

__all__ = [
    "HeadSweep",
    "HookTypeSweep",
    "LayerMetrics",
    "PCAResult",
    "ProjectionResult",
    "head_probe_sweep",
    "hook_type_sweep",
    "layer_pca",
    "projections",
    "separability_metrics",
]


def _labels(acts: Activations, labels: Any | None) -> np.ndarray:
    """Labels from the argument or from ``acts.labels``, as an int numpy array."""
    if labels is None:
        if acts.labels is None:
            raise ConfigError(
                "These activations carry no labels.",
                "Pass labels=... or use Activations.with_labels(labels).",
            )
        labels = acts.labels
    y = labels.numpy() if isinstance(labels, Tensor) else np.asarray(labels)
    if y.shape != (len(acts.uids),):
        raise ConfigError(
            f"Expected {len(acts.uids)} labels, received shape {y.shape}.",
            "pass one 0/1 label per row of acts.",
        )
    return y.astype(np.int64)


@dataclass(frozen=True)
class HookTypeSweep:
    """Probe accuracy for every (hook kind, layer): the layers x hook-type heatmap.

    Attributes:
        kinds: Hook kinds on axis 0 (``"resid_pre"``, ``"resid_post"``...).
        layers: Layer indices on axis 1.
        accuracy: ``[kind, layer]`` validation accuracy (NaN where a hook was not extracted).
        cv_mean: ``[kind, layer]`` mean k-fold accuracy on the train part.
        cv_std: ``[kind, layer]`` standard deviation of the fold accuracies (the spread).
        auroc: ``[kind, layer]`` validation ROC AUC.
        n: Number of labelled examples.
    """

    kinds: tuple[str, ...]
    layers: tuple[int, ...]
    accuracy: np.ndarray
    cv_mean: np.ndarray
    cv_std: np.ndarray
    auroc: np.ndarray
    n: int

    def best(self) -> tuple[str, int]:
        """``(kind, layer)`` with the highest validation accuracy (earliest layer on ties)."""
        acc = np.nan_to_num(self.accuracy, nan=-1.0)
        k, layer = np.unravel_index(int(np.argmax(acc)), acc.shape)
        return self.kinds[int(k)], self.layers[int(layer)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes ``None``)."""

        def clean(a: np.ndarray) -> list[list[float | None]]:
            return [[None if not np.isfinite(v) else float(v) for v in row] for row in a]

        return {
            "kinds": list(self.kinds),
            "layers": list(self.layers),
            "accuracy": clean(self.accuracy),
            "cv_mean": clean(self.cv_mean),
            "cv_std": clean(self.cv_std),
            "auroc": clean(self.auroc),
            "n": self.n,
            "best": list(self.best()),
        }


def hook_type_sweep(
    acts: Activations,
    labels: Any | None = None,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    C: float = 1.0,
    cv_folds: int = 5,
    seed: int = 42,
    progress: bool = False,
) -> HookTypeSweep:
    """Fit one probe per hook of ``acts`` and arrange the scores as ``[kind, layer]``.

    Extract all kinds in one pass first, e.g.
    ``extract_activations(model, seqs, hooks=["resid_pre", "resid_mid", "resid_post", "attn_out",
    "mlp_out"])``. Every kind uses the same train/validation split (same ``seed``/``groups``), so
    the cells of the heatmap are directly comparable.

    Args:
        acts: Residual-width activations at several hook kinds and layers.
        labels: ``[n]`` 1 = unbiased, 0 = biased (default ``acts.labels``).
        groups: Group id per row (BBQ template) for a template-disjoint split.
        C: Inverse L2 strength of the probes.
        cv_folds: Folds for the spread (``cv_std``); 0 disables it.
        seed: Split seed.
        progress: Show progress bars.
    """
    y = _labels(acts, labels)
    parsed = [parse_hook_name(h) for h in acts.hook_names]
    if any(kind == "z" for kind, _ in parsed):
        raise ConfigError(
            "hook_type_sweep takes residual-width hooks; hook_z has one vector per head.",
            "Use head_probe_sweep for hook_z.",
        )
    kinds = tuple(k for k in HOOK_KINDS if any(p[0] == k for p in parsed))
    layers = tuple(sorted({layer for _, layer in parsed}))
    shape = (len(kinds), len(layers))
    out = {name: np.full(shape, np.nan) for name in ("accuracy", "cv_mean", "cv_std", "auroc")}
    for kind in kinds:
        idx = [i for i, p in enumerate(parsed) if p[0] == kind]
        sweep = probe_sweep(
            acts.acts[:, idx],
            y,
            layers=[parsed[i][1] for i in idx],
            hook_names=[acts.hook_names[i] for i in idx],
            C=C,
            cv_folds=cv_folds,
            seed=seed,
            groups=groups,
            progress=progress,
        )
        for score in sweep.scores:
            cell = (kinds.index(kind), layers.index(score.layer))
            for name in out:
                out[name][cell] = getattr(score, name)
    return HookTypeSweep(kinds, layers, n=len(y), **out)


@dataclass(frozen=True)
class PCAResult:
    """2-D PCA of the activations at each hook.

    Attributes:
        hook_names: One entry per panel.
        coords: ``[hook, n, 2]`` coordinates on the first two principal components.
        explained: ``[hook, 2]`` fraction of variance explained by each component.
        labels: ``[n]`` class labels (or None).
        uids: Row ids (BBQ item uid), for hover text.
    """

    hook_names: tuple[str, ...]
    coords: np.ndarray
    explained: np.ndarray
    labels: np.ndarray | None
    uids: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "hook_names": list(self.hook_names),
            "explained": self.explained.tolist(),
            "n": len(self.uids),
        }


def layer_pca(acts: Activations, hooks: Sequence[str] | None = None) -> PCAResult:
    """Project each hook's activations on its own first two principal components.

    Args:
        acts: Activations (labels are carried along for colouring, if present).
        hooks: Subset of ``acts.hook_names`` to keep (default: all).
    """
    names = tuple(hooks) if hooks is not None else acts.hook_names
    coords, explained = [], []
    for name in names:
        x = acts.at(name).double()
        x = x - x.mean(0)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        var = s**2
        coords.append((x @ vh[:2].T).numpy())
        explained.append((var[:2] / var.sum().clamp_min(1e-30)).numpy())
    labels = None if acts.labels is None else acts.labels.numpy()
    return PCAResult(names, np.stack(coords), np.stack(explained), labels, acts.uids)


@dataclass(frozen=True)
class ProjectionResult:
    """Scalar projection of every example on a unit direction, per hook.

    Attributes:
        hook_names: Hooks on axis 1.
        values: ``[n, hook]`` projections ``a . v / |v|`` (activation units).
        labels: ``[n]`` labels or None.
        uids: Row ids.
        direction: Name of the direction (``"dsv"``, ``"probe"``...).
    """

    hook_names: tuple[str, ...]
    values: np.ndarray
    labels: np.ndarray | None
    uids: tuple[str, ...]
    direction: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "hook_names": list(self.hook_names),
            "direction": self.direction,
            "n": len(self.uids),
        }


def projections(
    acts: Activations,
    directions: Float[Tensor, "hook d"],
    *,
    hook_names: Sequence[str] | None = None,
    name: str = "dsv",
) -> ProjectionResult:
    """Project ``acts`` on one direction per hook (normalised, so units are activation units).

    Args:
        acts: Activations.
        directions: ``[hook, d]`` rows aligned with ``hook_names``.
        hook_names: Hook of each row of ``directions`` (default ``acts.hook_names``).
        name: Label of the direction for plots.
    """
    names = tuple(hook_names) if hook_names is not None else acts.hook_names
    dirs = torch.as_tensor(directions, dtype=torch.float64)
    if dirs.ndim != 2 or dirs.shape[0] != len(names):
        raise ConfigError(
            f"directions must be [{len(names)}, d] (one per hook); received {tuple(dirs.shape)}.",
            "pass one direction row per hook, or hook_names= naming the rows.",
        )
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    cols = [acts.at(h).double() @ unit[i] for i, h in enumerate(names)]
    labels = None if acts.labels is None else acts.labels.numpy()
    return ProjectionResult(names, torch.stack(cols, 1).numpy(), labels, acts.uids, name)


@dataclass(frozen=True)
class LayerMetrics:
    """Separability of the two classes at each hook, by four complementary measures.

    Attributes:
        hook_names: Hooks (one per layer, usually).
        layers: Layer index of each hook.
        probe_accuracy: Validation accuracy of a logistic probe.
        fisher: Fisher ratio ``(m1 - m0)^2 / (s1^2 + s0^2)`` of the projections on the
            class-mean difference (the DSV estimator): signal relative to within-class spread.
        silhouette: Silhouette score of the labels in the full space (euclidean; -1..1).
        margin: Median signed distance of validation examples to the probe hyperplane
            (activation units; > 0 = on the correct side).
    """

    hook_names: tuple[str, ...]
    layers: tuple[int, ...]
    probe_accuracy: np.ndarray
    fisher: np.ndarray
    silhouette: np.ndarray
    margin: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "hook_names": list(self.hook_names),
            "layers": list(self.layers),
            **{
                k: getattr(self, k).tolist()
                for k in ("probe_accuracy", "fisher", "silhouette", "margin")
            },
        }


def separability_metrics(
    acts: Activations,
    labels: Any | None = None,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    C: float = 1.0,
    seed: int = 42,
    sweep: SweepResult | None = None,
) -> LayerMetrics:
    """Probe accuracy, Fisher ratio, silhouette and probe margin at every hook of ``acts``.

    Args:
        acts: Activations, one hook per layer.
        labels: ``[n]`` labels (default ``acts.labels``).
        groups: Group ids for a template-disjoint split (as in :func:`~fairlens.probe_sweep`).
        C: Probe regularisation.
        seed: Split seed.
        sweep: A precomputed probe sweep on the same rows and hooks (skips refitting).
    """
    y = _labels(acts, labels)
    if sweep is None:
        sweep = probe_sweep(
            acts.acts, y, layers=acts.layers, hook_names=acts.hook_names, C=C, seed=seed,
            groups=groups, cv_folds=0,
        )  # fmt: skip
    if sweep.hook_names != acts.hook_names:
        raise ConfigError(
            "sweep was computed on other hooks than acts.",
            "pass sweep=None to refit, or a sweep run on acts.hook_names.",
        )
    _, val = train_val_split(y, groups, val_fraction=sweep.val_fraction, seed=sweep.seed)
    fisher, sil, margin = [], [], []
    sign = 2.0 * y - 1.0
    for i in range(len(acts.hook_names)):
        x = acts.acts[:, i].double().numpy()
        d = x[y == 1].mean(0) - x[y == 0].mean(0)
        p = x @ (d / max(float(np.linalg.norm(d)), 1e-30))
        within = p[y == 1].var() + p[y == 0].var()
        fisher.append((p[y == 1].mean() - p[y == 0].mean()) ** 2 / max(within, 1e-30))
        sil.append(float(silhouette_score(x, y)))
        w, b = sweep.coef[i].numpy(), float(sweep.intercept[i])
        dist = (x[val] @ w + b) / max(float(np.linalg.norm(w)), 1e-30)
        margin.append(float(np.median(sign[val] * dist)))
    return LayerMetrics(
        acts.hook_names,
        acts.layers,
        np.array([s.accuracy for s in sweep.scores]),
        np.array(fisher),
        np.array(sil),
        np.array(margin),
    )
