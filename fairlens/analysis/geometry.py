"""Geometry of fairness directions: how similar are DSVs across layers, categories and methods?

A single debiasing vector only makes sense if the bias it removes is shared. These functions
measure that with cosine similarities:

* :func:`layer_cosines` — DSV at layer i vs layer j (does the direction persist through depth?);
* :func:`category_dsvs` + :func:`category_cosines` — one DSV per BBQ category at one hook (is
  there one bias direction, or one per social dimension?);
* :func:`method_cosines` — mean difference vs probe weights vs first principal component, per
  layer (do the estimators agree on what "the" direction is?).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import resolve_tokenizer
from fairlens.data import BBQItem, PromptFormat, contrastive_pairs
from fairlens.directions import Directions, compute_dsv, cosine
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer

__all__ = [
    "CosineMatrix",
    "MethodCosines",
    "category_cosines",
    "category_dsvs",
    "cosine_matrix",
    "layer_cosines",
    "method_cosines",
    "pooled_dsv",
]


def cosine_matrix(vectors: Float[Tensor, "k d"]) -> Float[Tensor, "k k"]:
    """Pairwise cosine similarity of the rows of ``vectors`` (0 for zero rows)."""
    v = torch.as_tensor(vectors, dtype=torch.float64)
    if v.ndim != 2:
        raise ConfigError(
            f"vectors must be [k, d]; received shape {tuple(v.shape)}.",
            "pass a 2-D [k, d] tensor, e.g. torch.stack(list_of_vectors).",
        )
    return cosine(v[:, None, :], v[None, :, :])


@dataclass(frozen=True)
class CosineMatrix:
    """A labelled square matrix of cosine similarities.

    Attributes:
        labels: Row/column labels (layers, categories or methods).
        matrix: ``[k, k]`` cosines in [-1, 1].
        what: What the labels are (``"layer"``, ``"category"``, ``"method"``), for plot titles.
        hook_name: The hook the vectors live at (``None`` when they span several hooks).
        norms: ``[k]`` vector norms (an unnormalised DSV's norm is its strength).
    """

    labels: tuple[str, ...]
    matrix: np.ndarray
    what: str
    hook_name: str | None
    norms: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "matrix": self.matrix.round(6).tolist(),
            "what": self.what,
            "hook_name": self.hook_name,
            "norms": self.norms.round(6).tolist(),
        }


def layer_cosines(directions: Directions) -> CosineMatrix:
    """Cosine of the direction at every pair of hooks (e.g. DSV layer i vs layer j)."""
    labels = tuple(str(h) for h in directions.hook_names)
    return CosineMatrix(
        labels,
        cosine_matrix(directions.vectors).numpy(),
        "layer",
        None,
        directions.vectors.double().norm(dim=-1).numpy(),
    )


def category_dsvs(
    model: Model,
    items: Sequence[BBQItem],
    *,
    hooks: str | Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    n_per_category: int | None = 10,
    prompt_format: PromptFormat = "zero_shot",
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
    tokenizer: Tokenizer | None = None,
) -> dict[str, Directions]:
    """One DSV per BBQ category present in ``items`` (FairSteer's estimator, per category).

    Args:
        model: A ``HookedTransformer`` or a plain transformers model (then pass ``tokenizer``).
        items: Items to draw ambiguous contrastive pairs from (categories without a usable item
            are skipped).
        hooks: Hook kind(s) or full names to read (see :func:`~fairlens.extract_activations`).
        layers: Layers for hook kinds (default: all).
        n_per_category: Pairs per category (FairSteer: 10).
        prompt_format: Prompt format of the pairs.
        seed: Pair selection seed.
        batch_size: Sequences per forward pass.
        progress: Show a progress bar over categories.
        tokenizer: The tokenizer of a plain transformers model.
    """
    tok = resolve_tokenizer(model, tokenizer)
    by_cat: dict[str, list[BBQItem]] = {}
    for it in items:
        by_cat.setdefault(it.category, []).append(it)
    out: dict[str, Directions] = {}
    for cat in tqdm(sorted(by_cat), desc="DSV per category", disable=not progress):
        usable = [it for it in by_cat[cat] if it.is_ambiguous and it.bias_target_loc is not None]
        if not usable:
            continue
        pairs = contrastive_pairs(
            usable, prompt_format, tokenizer=tok, n_per_category=n_per_category, seed=seed
        )
        out[cat] = compute_dsv(
            model, pairs, hooks=hooks, layers=layers, batch_size=batch_size, tokenizer=tok
        )
    if len(out) < 2:
        raise ConfigError(
            f"Need DSVs for at least 2 categories to compare; got {sorted(out)}.",
            "Pass ambiguous items with a bias target from several BBQ categories.",
        )
    return out


def pooled_dsv(dsvs: Mapping[str, Directions]) -> Directions:
    """The all-category DSV from per-category ones (pair-weighted mean = the DSV over all pairs)."""
    if not dsvs:
        raise ConfigError(
            "No per-category DSVs to pool.",
            "pass the per-category DSVs returned by category_dsvs(...).",
        )
    first = next(iter(dsvs.values()))
    if any(d.hook_names != first.hook_names for d in dsvs.values()):
        raise ConfigError(
            "Per-category DSVs were read at different hooks.",
            "compute every category's DSV with the same hooks and layers.",
        )
    n = sum(d.n_pos for d in dsvs.values())
    vec = sum(d.vectors.double() * d.n_pos for d in dsvs.values()) / n
    assert isinstance(vec, Tensor)
    return Directions(vec.float(), first.hook_names, "dsv", first.position, n, n)


def category_cosines(dsvs: Mapping[str, Directions], hook: str) -> CosineMatrix:
    """Cosine between the per-category DSVs at one hook (from :func:`category_dsvs`)."""
    labels = tuple(sorted(dsvs))
    vecs = torch.stack([dsvs[c].at(hook).double() for c in labels])
    return CosineMatrix(
        labels, cosine_matrix(vecs).numpy(), "category", hook, vecs.norm(dim=-1).numpy()
    )


@dataclass(frozen=True)
class MethodCosines:
    """Agreement between direction estimators, per layer.

    Attributes:
        methods: Method names (``"dsv"``, ``"probe"``, ``"pca"``...).
        hook_names: Hooks on axis 1 of ``values``.
        pairs: ``(method_a, method_b)`` of each row of ``values``.
        values: ``[pair, hook]`` cosines.
    """

    methods: tuple[str, ...]
    hook_names: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    values: np.ndarray

    def matrix(self, hook: str) -> CosineMatrix:
        """The ``[method, method]`` cosine matrix at one hook."""
        if hook not in self.hook_names:
            raise ConfigError(
                f"{hook!r} not in {list(self.hook_names)}.", "pass one of this result's hook_names."
            )
        j = self.hook_names.index(hook)
        m = np.eye(len(self.methods))
        for (a, b), v in zip(self.pairs, self.values[:, j], strict=True):
            ia, ib = self.methods.index(a), self.methods.index(b)
            m[ia, ib] = m[ib, ia] = v
        return CosineMatrix(self.methods, m, "method", hook, np.full(len(self.methods), np.nan))

    def to_dict(self) -> dict[str, Any]:
        return {
            "methods": list(self.methods),
            "hook_names": list(self.hook_names),
            "pairs": [list(p) for p in self.pairs],
            "values": self.values.round(6).tolist(),
        }


def method_cosines(
    directions: Mapping[str, Float[Tensor, "hook d"] | Directions],
    hook_names: Sequence[str] | None = None,
) -> MethodCosines:
    """Per-hook cosine between every pair of direction estimators.

    Args:
        directions: Method name -> ``[hook, d]`` vectors (or :class:`Directions`), rows aligned.
            E.g. ``{"dsv": fs.dsv_, "probe": fs.sweep_.coef, "pca": pca_direction(acts)}``.
        hook_names: Hook of each row (default: taken from the first :class:`Directions`).
    """
    if len(directions) < 2:
        raise ConfigError(
            "method_cosines needs at least two methods.",
            "pass directions for two or more methods, e.g. {'dsv': ..., 'probe': ...}.",
        )
    vecs: dict[str, Tensor] = {}
    names: tuple[str, ...] | None = tuple(hook_names) if hook_names is not None else None
    for method, d in directions.items():
        if isinstance(d, Directions):
            names = names or d.hook_names
            vecs[method] = d.vectors.double()
        else:
            vecs[method] = torch.as_tensor(d).double()
    shapes = {tuple(v.shape) for v in vecs.values()}
    if len(shapes) != 1:
        raise ConfigError(
            f"All directions must have the same [hook, d] shape; got {shapes}.",
            "give every method one [d] row per hook, read at the same hooks.",
        )
    k = next(iter(shapes))[0]
    names = names or tuple(f"row{i}" for i in range(k))
    if len(names) != k:
        raise ConfigError(
            f"{len(names)} hook names for {k} direction rows.",
            "pass hook_names with one name per direction row.",
        )
    methods = tuple(vecs)
    pairs = tuple(combinations(methods, 2))
    values = np.stack([cosine(vecs[a], vecs[b]).numpy() for a, b in pairs])
    return MethodCosines(methods, names, pairs, values)
