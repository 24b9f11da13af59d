"""Entanglement across BBQ categories: a direction fitted on one category at a time, its effect on
every category.

For each source category ``s`` the DSV is fitted on ``s``'s contrastive pairs alone (FairSteer's
estimator, :func:`~fairlens.analysis.geometry.category_dsvs`) and added statically at the answer
position of one layer (``alpha`` times the layer's mean residual norm, along the unit direction);
each target category's ambiguous accuracy is compared with the unsteered model's. A diagonal-only
matrix would mean category-specific directions; full rows mean one shared "say unknown" (or
letter) direction. On the plain transformers model every source is one one-token forward on a
shared prefix cache (:mod:`fairlens.scoring.prefix_cache`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fairlens.analysis.geometry import category_dsvs
from fairlens.backend import hook_name, resolve_tokenizer
from fairlens.data import BBQItem, PromptFormat
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.letters import letter_token_ids, prompt_tokens
from fairlens.scoring.prefix_cache import make_scorer

__all__ = ["EntanglementResult", "category_entanglement"]


@dataclass(frozen=True)
class EntanglementResult:
    """Δ ambiguous accuracy of every target category under each source category's direction.

    Attributes:
        sources: Categories a direction was fitted on (rows).
        targets: Categories scored (columns).
        delta: ``[source, target]`` change of ambiguous accuracy, in points.
        base_acc_ambig: Unsteered ambiguous accuracy per target (fraction).
        n_ambig: Ambiguous eval items per target.
        hook: The steered hook point.
        alpha: Strength relative to the mean residual norm there.
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    delta: np.ndarray
    base_acc_ambig: dict[str, float]
    n_ambig: dict[str, int]
    hook: str
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources),
            "targets": list(self.targets),
            "delta_points": self.delta.round(4).tolist(),
            "base_acc_ambig": self.base_acc_ambig,
            "n_ambig": self.n_ambig,
            "hook": self.hook,
            "alpha": self.alpha,
        }


def category_entanglement(
    model: Model,
    dsv_items: Sequence[BBQItem],
    eval_items: Sequence[BBQItem],
    *,
    layer: int,
    alpha: float = 0.8,
    n_pairs: int = 10,
    prompt_format: PromptFormat = "zero_shot",
    tokenizer: Tokenizer | None = None,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> EntanglementResult:
    """The source x target matrix of Δ ambiguous accuracy (module docstring).

    Args:
        model: A plain transformers model (prefix-cached) or a ``HookedTransformer``.
        dsv_items: Items the per-category contrastive pairs come from (a DSV split).
        eval_items: Items scored (template-disjoint from ``dsv_items``); their ambiguous ones count.
        layer: Steered layer (``resid_post``).
        alpha: Strength, relative to the mean residual norm at the answer position there.
        n_pairs: Contrastive pairs per source category.
        tokenizer: Needed for a plain transformers model.

    Raises:
        ConfigError: Overlapping items, fewer than two source categories, or no ambiguous item.
    """
    if {it.uid for it in dsv_items} & {it.uid for it in eval_items}:
        raise ConfigError(
            "the DSV items and the evaluated items overlap.",
            "use template-disjoint splits (fairlens.data.split_by_template).",
        )
    tok = resolve_tokenizer(model, tokenizer)
    hook = hook_name("resid_post", layer)
    dsvs = category_dsvs(
        model, dsv_items, hooks=[hook], n_per_category=n_pairs, seed=seed,
        batch_size=batch_size, tokenizer=tok, prompt_format=prompt_format,
    )  # fmt: skip
    targets = tuple(sorted({it.category for it in eval_items if it.is_ambiguous}))
    if not targets:
        raise ConfigError("no ambiguous eval items.", "include ambiguous BBQ items.")
    scorer = make_scorer(
        model,
        prompt_tokens(model, eval_items, prompt_format, tokenizer=tok),
        read_ids=letter_token_ids(tok),
        capture=[hook],
        tokenizer=tok,
        batch_size=batch_size,
        progress=progress,
        desc="entanglement prefix pass",
    )
    norm = float(scorer.base_acts[hook].norm(dim=-1).mean())
    sources = tuple(sorted(dsvs))
    edits = []
    for s in sources:
        v = dsvs[s].at(hook).float()
        edits.append({hook: alpha * norm * v / v.norm().clamp_min(1e-12)})
    steered = scorer.logits(edits).argmax(-1).numpy()  # [source, item]
    base = scorer.base_logits.argmax(-1).numpy()
    label = np.array([it.label for it in eval_items])
    delta = np.zeros((len(sources), len(targets)))
    base_acc, n_amb = {}, {}
    for j, t in enumerate(targets):
        mask = np.array([it.is_ambiguous and it.category == t for it in eval_items])
        base_acc[t] = float((base[mask] == label[mask]).mean())
        n_amb[t] = int(mask.sum())
        for i in range(len(sources)):
            delta[i, j] = 100 * (float((steered[i][mask] == label[mask]).mean()) - base_acc[t])
    return EntanglementResult(sources, targets, delta, base_acc, n_amb, hook, alpha)
