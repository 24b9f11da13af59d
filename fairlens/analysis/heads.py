"""Per-head separability: a probe on each attention head's output (hook_z) at one layer, from a
model or from cached activations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from fairlens.activations.extraction import Activations, extract_activations
from fairlens.backend import parse_hook_name
from fairlens.detect.layer_sweep import probe_sweep
from fairlens.errors import ConfigError
from fairlens.model_types import HookedModel


@dataclass(frozen=True)
class HeadSweep:
    """Probe accuracy of each attention head's output ``z`` (and of each key/value group).

    Attributes:
        layers: Layers on axis 0.
        n_heads: Query heads per layer.
        n_kv_heads: Key/value heads per layer (``== n_heads`` without grouped-query attention).
        accuracy: ``[layer, head]`` validation accuracy of a probe on that head's ``z``.
        cv_std: ``[layer, head]`` spread over CV folds (NaN if CV is off).
        group_accuracy: ``[layer, kv_head]`` accuracy of a probe on the concatenated ``z`` of
            the query heads that share one key/value head.
        kv_group: ``[head]`` key/value group of each query head (``head // (n_heads / n_kv)``).
    """

    layers: tuple[int, ...]
    n_heads: int
    n_kv_heads: int
    accuracy: np.ndarray
    cv_std: np.ndarray
    group_accuracy: np.ndarray
    kv_group: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "n_heads": self.n_heads,
            "n_kv_heads": self.n_kv_heads,
            "accuracy": self.accuracy.tolist(),
            "group_accuracy": self.group_accuracy.tolist(),
            "kv_group": self.kv_group.tolist(),
        }


def head_probe_sweep(
    model: HookedModel,
    sequences: Sequence[Sequence[int]],
    labels: Any,
    *,
    layers: Sequence[int] | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    C: float = 1.0,
    cv_folds: int = 0,
    seed: int = 42,
    batch_size: int = 16,
    progress: bool = False,
) -> HeadSweep:
    """Probe every attention head's output at the last token (``blocks.{l}.attn.hook_z``).

    With grouped-query attention, several query heads share one key/value head; their ``z`` differ
    only through their queries. Besides one probe per query head, one probe per key/value group
    (on the group's concatenated ``z``) shows whether the signal lives in what the group reads.

    Args:
        model: A ``HookedTransformer``.
        sequences: Token ids (prompts ending at the read position).
        labels: ``[n]`` labels, 1 = unbiased, 0 = biased.
        layers: Layers to probe (default: all).
        groups: Group ids for a template-disjoint split.
        C: Inverse L2 strength of the probes.
        cv_folds: CV folds for the per-head spread (0 = off).
        seed: Split seed.
        batch_size: Sequences per forward pass.
        progress: Show progress bars.
    """
    acts = extract_activations(
        model, sequences, hooks="z", layers=layers, batch_size=batch_size, progress=progress
    )
    return head_sweep_from_acts(
        acts, labels, n_heads=int(model.cfg.n_heads),
        n_kv_heads=getattr(model.cfg, "n_key_value_heads", None),
        groups=groups, C=C, cv_folds=cv_folds, seed=seed, progress=progress,
    )  # fmt: skip


def head_sweep_from_acts(
    acts: Activations,
    labels: Any,
    *,
    n_heads: int,
    n_kv_heads: int | None = None,
    groups: Sequence[Any] | np.ndarray | None = None,
    C: float = 1.0,
    cv_folds: int = 0,
    seed: int = 42,
    progress: bool = False,
) -> HeadSweep:
    """:func:`head_probe_sweep` on already extracted ``hook_z`` activations (flattened heads).

    Args:
        acts: Activations whose hooks are all ``blocks.{l}.attn.hook_z``.
        labels: ``[n]`` labels.
        n_heads: Query heads per layer.
        n_kv_heads: Key/value heads (None = no grouped-query attention).
        groups: Group ids for a template-disjoint split.
        C: Inverse L2 strength of the probes.
        cv_folds: CV folds for the per-head spread (0 = off).
        seed: Split seed.
        progress: Show progress bars.
    """
    if any(parse_hook_name(h)[0] != "z" for h in acts.hook_names):
        raise ConfigError(
            "head_sweep_from_acts needs hook_z activations only.",
            "pass acts.of_kind('z'), or extract with hooks='z'.",
        )
    n_kv = int(n_kv_heads or n_heads)
    if n_heads % n_kv or acts.acts.shape[-1] % n_heads:
        raise ConfigError(
            f"n_heads={n_heads} must divide the z width {acts.acts.shape[-1]} and be a multiple "
            f"of n_key_value_heads={n_kv}.",
            "pass model.cfg.n_heads and model.cfg.n_key_value_heads as n_heads and n_kv_heads.",
        )
    d_head = acts.acts.shape[-1] // n_heads
    y = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels).astype(np.int64)
    n, n_layers = acts.acts.shape[0], acts.acts.shape[1]
    z = acts.acts.reshape(n, n_layers, n_heads, d_head)
    per_head = probe_sweep(
        z.reshape(n, n_layers * n_heads, d_head), y, C=C, cv_folds=cv_folds, seed=seed,
        groups=groups, progress=progress,
        hook_names=[f"{h}[{k}]" for h in acts.hook_names for k in range(n_heads)],
    )  # fmt: skip
    per_group = probe_sweep(
        z.reshape(n, n_layers * n_kv, (n_heads // n_kv) * d_head), y, C=C, cv_folds=0, seed=seed,
        groups=groups, progress=progress,
        hook_names=[f"{h}[kv{g}]" for h in acts.hook_names for g in range(n_kv)],
    )  # fmt: skip
    return HeadSweep(
        layers=acts.layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        accuracy=np.array([s.accuracy for s in per_head.scores]).reshape(n_layers, n_heads),
        cv_std=np.array([s.cv_std for s in per_head.scores]).reshape(n_layers, n_heads),
        group_accuracy=np.array([s.accuracy for s in per_group.scores]).reshape(n_layers, n_kv),
        kv_group=np.arange(n_heads) // (n_heads // n_kv),
    )
