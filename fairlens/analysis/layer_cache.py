"""BBQ items prepared once for interactive interventions: tokenised and batched once, the unhooked
letter logits computed once, and the residual stream entering each layer cached on first use, so
an intervention whose first hook sits in block ``l`` reruns only blocks ``l..n-1``.

This is what the ablation explorer calls on every change of hook, layer, head or method: a
whole-sequence ablation at a deep layer costs a fraction of a forward pass instead of a whole one
(the numbers equal a whole forward pass under the same hooks; tested). Which block an intervention
starts at is read off the model itself (the first hook point holding a forward hook once the
intervention's context is entered), so a caller cannot start too late by naming the wrong layer.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from fairlens.analysis.ablation import AblationEffect, ablation_row
from fairlens.backend.batching import (
    Batch,
    last_token_logits,
    last_token_logits_from,
    length_sorted_chunks,
    pad_id,
    pad_sequences,
    resid_entering,
    resolve_tokenizer,
)
from fairlens.backend.hooks import add_hooks, is_hooked
from fairlens.data import BBQItem
from fairlens.data.prompts import PromptFormat
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.scoring.letters import letter_token_ids, prompt_tokens

__all__ = ["LayerCache", "first_hooked_layer"]

Intervention = Callable[[], AbstractContextManager[Any]]


def _block_of(name: str, n_layers: int) -> int:
    """The block a hook point belongs to: ``blocks.{i}.…`` -> i; embedding hooks -> 0; the final
    norm -> ``n_layers`` (it runs after every block)."""
    if name.startswith("blocks."):
        return int(name.split(".")[1])
    return n_layers if name.startswith("ln_final") else 0


def first_hooked_layer(model: Any) -> int | None:
    """The first block of a ``HookedTransformer`` at which a forward hook is registered now
    (``None``: no hook anywhere). A pass continued from the residual entering that block fires
    every registered hook."""
    n = int(model.cfg.n_layers)
    layers = [
        _block_of(name, n)
        for name, point in model.hook_dict.items()
        if point._forward_hooks or point._forward_pre_hooks
    ]
    return min(layers) if layers else None


class LayerCache:
    """Letter logits of BBQ items under interventions, rerunning only the blocks they touch.

    Args:
        model: A ``HookedTransformer`` (the analysis path; ``fairlens.load_model``).
        items: The BBQ items (letter scoring over A/B/C, as the panel's ``fairsteer`` protocol).
        prompt_format: Prompt format of the items.
        shots: Few-shot examples for ``prompt_format="few_shot"``.
        batch_size: Items per forward pass.
        max_bytes: Memory for cached residual streams. Each layer costs ``n_tokens x d_model``
            floats (about 30 MB for 100 BBQ items on SmolLM2); when every layer fits, all are
            captured during the unhooked pass (no later update pays for a prefix), else layers
            are cached on first use and the least recently used dropped.
    """

    def __init__(
        self,
        model: Model,
        items: Sequence[BBQItem],
        *,
        prompt_format: PromptFormat = "zero_shot",
        shots: Sequence[BBQItem] | None = None,
        batch_size: int = 16,
        max_bytes: int = 2 * 2**30,
    ) -> None:
        if not is_hooked(model):
            raise ConfigError(
                "LayerCache needs a HookedTransformer (the analysis path).",
                "load the model with fairlens.load_model(...), not load_hf.",
            )
        if not items:
            raise ConfigError("LayerCache needs at least one BBQ item.", "pass a non-empty list.")
        if max_bytes < 0:
            raise ConfigError(
                f"max_bytes must be >= 0, got {max_bytes}.",
                "pass max_bytes >= 0 (bytes of memory for cached layers).",
            )
        self.model = model
        self.items = list(items)
        self.n_layers = int(model.cfg.n_layers)
        tok = resolve_tokenizer(model)
        self._letters = torch.tensor(letter_token_ids(tok))
        ids = prompt_tokens(model, self.items, prompt_format, shots=shots, tokenizer=tok)
        self.sequences: list[list[int]] = ids
        """Token ids of each item's prompt (e.g. for :func:`~fairlens.analysis.mean_activation`)."""
        self._chunks: list[tuple[list[int], Batch]] = [
            (
                rows,
                pad_sequences(
                    [ids[r] for r in rows], pad_token_id=pad_id(tok), padding_side="left"
                ),
            )
            for rows in length_sorted_chunks([len(x) for x in ids], batch_size)
        ]
        self._resid: OrderedDict[int, list[Tensor]] = OrderedDict()
        self._base: Tensor | None = None
        per_layer = sum(b.input_ids.numel() for _, b in self._chunks) * int(model.cfg.d_model) * 4
        self.max_layers = max(1, max_bytes // max(per_layer, 1))
        """How many layers' residual streams are held at once."""

    @property
    def cached_layers(self) -> tuple[int, ...]:
        """The layers whose entering residual stream is held now (least recently used first)."""
        return tuple(self._resid)

    def _resid_in(self, layer: int) -> list[Tensor]:
        if layer in self._resid:
            self._resid.move_to_end(layer)
            return self._resid[layer]
        with torch.no_grad():
            resid = [resid_entering(self.model, batch, layer) for _, batch in self._chunks]
        self._resid[layer] = resid
        while len(self._resid) > self.max_layers:
            self._resid.popitem(last=False)
        return resid

    def _rows(self, rows: Sequence[int] | None) -> list[int]:
        if rows is None:
            return list(range(len(self.items)))
        picked = sorted(set(rows))
        if not picked:
            raise ConfigError("the item subset is empty.", "select at least one item.")
        if picked[0] < 0 or picked[-1] >= len(self.items):
            raise ConfigError(
                f"item index out of range (0..{len(self.items) - 1}): {picked[0]}..{picked[-1]}.",
                "select items by their index in the cache's items.",
            )
        return picked

    def letter_logits(
        self, intervention: Intervention | None = None, rows: Sequence[int] | None = None
    ) -> Float[Tensor, "n 3"]:
        """A/B/C logits of the items (``rows``: a subset, in index order) under
        ``intervention`` (a zero-argument factory of a context manager that adds hooks and
        removes them on exit, e.g. ``lambda: zero_ablation(model, hook)``), or unhooked."""
        picked = self._rows(rows)
        base = self._base_logits()  # first: it may capture every layer's input, unhooked
        if intervention is None:
            return base[picked]
        where = {r: i for i, r in enumerate(picked)}
        out = torch.empty(len(picked), 3)
        with intervention(), torch.no_grad():
            layer = first_hooked_layer(self.model)
            if layer is None:  # the intervention added no hook: it is the unhooked model
                return base[picked]
            resid = self._resid_in(layer)
            for (chunk_rows, batch), h in zip(self._chunks, resid, strict=True):
                local = [i for i, r in enumerate(chunk_rows) if r in where]
                if not local:
                    continue
                sub = _subset(batch, local)
                logits = last_token_logits_from(self.model, sub, h[local], layer)
                letters = logits[:, self._letters.to(logits.device)].float().cpu()
                out[[where[chunk_rows[i]] for i in local]] = letters
        return out

    def _base_logits(self) -> Tensor:
        if self._base is None:
            base = torch.empty(len(self.items), 3)
            every = self.max_layers >= self.n_layers  # capture each block's input on the way
            captured: dict[int, list[Tensor]] = {layer: [] for layer in range(self.n_layers)}
            hooks = [
                (f"blocks.{layer}.hook_resid_pre", _keep(captured[layer]))
                for layer in range(self.n_layers)
            ]
            with add_hooks(self.model, hooks if every else []), torch.no_grad():
                for chunk_rows, batch in self._chunks:
                    logits = last_token_logits(self.model, batch)
                    base[chunk_rows] = logits[:, self._letters.to(logits.device)].float().cpu()
            if every:
                for layer in range(self.n_layers):
                    self._resid[layer] = captured[layer]
            self._base = base
        return self._base

    def effect(
        self, ablations: Mapping[str, Intervention], rows: Sequence[int] | None = None
    ) -> AblationEffect:
        """:func:`~fairlens.analysis.ablation.ablation_effect` on the cached items (or ``rows``):
        the unhooked model and each named intervention, pooled BBQ metrics."""
        picked = self._rows(rows)
        items = [self.items[r] for r in picked]
        base = ablation_row("none", items, self.letter_logits(None, picked).argmax(-1))
        out = [
            ablation_row(name, items, self.letter_logits(factory, picked).argmax(-1))
            for name, factory in ablations.items()
        ]
        return AblationEffect(base, tuple(out), len(items))


def _keep(store: list[Tensor]) -> Callable[[Tensor], None]:
    def fn(act: Tensor) -> None:
        store.append(act.detach().clone())

    return fn


def _subset(batch: Batch, local: list[int]) -> Batch:
    if len(local) == batch.input_ids.shape[0]:
        return batch
    return Batch(
        batch.input_ids[local],
        batch.attention_mask[local],
        batch.last_index[local],
        batch.lengths[local],
        batch.padding_side,
    )
