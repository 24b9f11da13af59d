"""Exact prefix-cached scoring of interventions confined to the last prompt position.

With letter scoring, FairSteer reads the model's next-token logits after ``Answer:`` and steers only
that last prompt position (the ``:``). Everything before it is identical under every steering
variant, so :class:`PrefixCache` runs each prompt *minus its last token* once with a KV cache and
scores every variant as a **one-token forward** on that cache:

* the cache is built once per item chunk and never mutated (each forward gets a fresh
  ``DynamicCache`` filled from the stored tensors);
* many variants are batched into one forward: rows are ``variant x item``, each variant adding its own
  vector (or per-item vectors, e.g. an activation patch) at its own hook points through one hook per
  hook point; layers before a variant's first edit see identical inputs, so the result is exactly
  what a full-prompt run under the same hooks gives (tested to 1e-4 in fp32, left and right
  padding, at every layer);
* the unsteered forward also captures the last-position activations at requested hooks, which is
  what a dynamic gate reads: dynamic (gated) results are composed from the static and base results
  with :func:`compose_dynamic`, with no extra forward.

Only the read tokens' logits are computed (e.g. the three letter tokens), not the vocabulary.

:class:`FullPromptScorer` has the same interface and re-runs whole prompts under hooks: it works on
a ``HookedTransformer`` too, and is the reference the cached path is tested and benchmarked against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import (
    PaddingSide,
    check_context,
    decoder_of,
    is_hooked,
    length_sorted_chunks,
    logit_cap,
    model_device,
    pad_sequences,
    sliding_window,
)
from fairlens.distributed import merge_rows, my_share, show, world
from fairlens.errors import ConfigError
from fairlens.model_types import HFModel, Model, Tokenizer
from fairlens.scoring.variant_scorer import (
    Edit,
    FullPromptScorer,
    _capture_last,
    _check_edits,
    _hooks,
    _rows_delta,
    _Scorer,
)

__all__ = ["PrefixCache", "make_scorer"]

"""One static variant: hook name -> ``[d]`` (same vector for every item) or ``[n, d]`` (per item),
added to that hook's activation at the last prompt position."""


def _add_per_variant(delta: Tensor, b: int, repeat: int) -> Callable[[Tensor], Tensor]:
    """``fn(act) -> act`` for ``act`` ``[b, repeat, d]``: variant ``v`` of item ``i`` gets
    ``delta[v * b + i]`` (``delta`` is variant-major, ``[repeat * b, d]``)."""
    per = delta.reshape(repeat, b, -1).transpose(0, 1)

    def fn(act: Tensor) -> Tensor:
        return act + per.to(act.dtype)

    return fn


def _read_weights(model: HFModel, read_ids: Sequence[int]) -> tuple[Tensor, Tensor | None]:
    """Rows of the unembedding for ``read_ids`` (and its bias, if any)."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Module) or not isinstance(head.weight, Tensor):
        raise ConfigError(
            f"{type(model).__name__} has no output embedding to read the answer logits from.",
            "use a causal language model (a *ForCausalLM class).",
        )
    if head.weight.is_meta:
        raise ConfigError(
            "the unembedding (lm_head) is offloaded to disk or cpu by the device map, and the "
            "prefix cache reads its rows.",
            "keep lm_head on a device in the device map (e.g. {'lm_head': 0}).",
        )
    ids = torch.as_tensor(list(read_ids), device=head.weight.device)
    bias = getattr(head, "bias", None)
    return head.weight[ids].detach(), (None if bias is None else bias[ids].detach())


def _cache_kwarg(model: Model) -> str:
    from fairlens.backend.generation import _cache_kwarg as kwarg

    return kwarg(decoder_of(model))


@dataclass
class _Chunk:
    rows: Tensor  # item indices of this chunk
    keys: list[Tensor]  # per layer [b, kv_heads, prefix, d_head]
    values: list[Tensor]
    prefix_mask: Tensor  # [b, prefix]
    last_ids: Tensor  # [b]
    last_pos: Tensor  # [b]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.keys, *self.values])


class PrefixCache(_Scorer):
    """Prompts run once up to their last token; last-position variants scored as one-token forwards.

    Args:
        model: A plain transformers causal LM (the fast path; any family in fairlens.models.FAMILIES).
        sequences: Token ids of each prompt (BOS included if the tokenizer adds one), >= 2 tokens.
        read_ids: Token ids whose next-token logits are returned (e.g. the letters " A", " B", " C").
        capture: Hook names whose unsteered last-position activation is recorded
            (:attr:`base_acts`), e.g. every layer's ``resid_post`` for the gates.
        tokenizer: For the pad id.
        batch_size: Prompts per prefix pass.
        padding_side: Padding of the prefix batches (results do not depend on it; tested).
        rows_per_pass: Most ``variant x item`` rows in one one-token forward.
        progress: Progress bar over the prefix pass.
        uids: Row ids, checked by callers that reuse the scorer.
        keep_cache: Keep the keys and values for scoring variants (False: only the base logits
            and activations are kept, e.g. for the instructed prompts of the patching ceiling).

    Attributes:
        n: Number of prompts.
        base_logits: ``[n, k]`` float32 logits of ``read_ids`` without intervention.
        base_acts: Hook name -> ``[n, d]`` float32 unsteered last-position activation.
        cache_bytes: Memory held by the stored keys and values.
    """

    def __init__(
        self,
        model: Model,
        sequences: Sequence[Sequence[int]],
        *,
        read_ids: Sequence[int],
        capture: Sequence[str] = (),
        tokenizer: Tokenizer | None = None,
        batch_size: int = 16,
        padding_side: PaddingSide = "left",
        rows_per_pass: int = 256,
        progress: bool = False,
        desc: str = "prefix pass",
        uids: Sequence[str] | None = None,
        keep_cache: bool = True,
    ) -> None:
        if is_hooked(model):
            raise ConfigError(
                "prefix-cached scoring runs on the plain transformers model, not a HookedTransformer.",
                "pass the fast-path twin (fairlens.load_hf(spec)), or use FullPromptScorer.",
            )
        self._common(model, sequences, read_ids, capture, uids, tokenizer)
        short = [i for i, s in enumerate(sequences) if len(s) < 2]
        if short:
            raise ConfigError(
                f"prompt {short[0]} has fewer than 2 tokens, so it has no prefix to cache.",
                "score it with FullPromptScorer.",
            )
        if rows_per_pass < 1 or batch_size < 1:
            raise ConfigError(
                "batch_size and rows_per_pass must be >= 1.",
                "pass batch_size and rows_per_pass of 1 or more.",
            )
        window = sliding_window(model)
        if window is not None and max(len(q) for q in sequences) > window:
            raise ConfigError(
                f"a prompt has {max(len(q) for q in sequences)} tokens, more than this model's "
                f"sliding attention window ({window}); the prefix cache keeps whole keys and values "
                "and cannot mask a window.",
                "score with FullPromptScorer (make_scorer picks it by itself), or use shorter prompts.",
            )
        self.rows_per_pass = rows_per_pass
        self._w, self._b = _read_weights(model, self.read_ids)
        self._cap = logit_cap(model)
        self._kwarg = _cache_kwarg(model)
        pad = self._pad
        device = model_device(model)
        lengths = [len(s) for s in sequences]
        self.base_logits = torch.empty(self.n, len(self.read_ids))
        self.base_acts = {h: torch.empty(self.n, self.d_model) for h in self.capture}
        chunks = list(length_sorted_chunks(lengths, batch_size))
        # several processes: each runs (and keeps the keys and values of) its share of the chunks
        self._layout = [torch.as_tensor(rows) for rows in chunks]
        self._owned: dict[int, _Chunk] = {}
        mine = my_share(range(len(chunks)))
        with torch.no_grad():
            for index in tqdm(mine, desc=desc, disable=not show(progress), unit="batch"):
                rows = chunks[index]
                batch = pad_sequences(
                    [list(sequences[r])[:-1] for r in rows],
                    pad_token_id=pad,
                    padding_side=padding_side,
                )
                check_context(model, pad_sequences([sequences[r] for r in rows], pad_token_id=pad))
                batch = batch.to(device)
                out = decoder_of(model)(
                    input_ids=batch.input_ids,
                    attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids,
                    use_cache=True,
                )
                cache = getattr(out, "cache", None) or out.past_key_values
                keys, values = [], []
                for k, v, *_ in cache:
                    keys.append(k)
                    values.append(v)
                chunk = _Chunk(
                    rows=torch.as_tensor(rows),
                    keys=keys,
                    values=values,
                    prefix_mask=batch.attention_mask,
                    last_ids=torch.as_tensor([sequences[r][-1] for r in rows], device=device),
                    last_pos=batch.lengths.to(device),
                )
                store: dict[str, Tensor] = {}
                fns = {h: _capture_last(store, h) for h in self.capture}
                with _hooks(model, fns):
                    logits = self._forward(chunk, 1, {})
                self.base_logits[chunk.rows] = logits.float().cpu()
                for h in self.capture:
                    self.base_acts[h][chunk.rows] = store[h]
                if keep_cache:
                    self._owned[index] = chunk
        merge_rows(self.base_logits, chunks)
        for h in self.capture:
            merge_rows(self.base_acts[h], chunks)
        self.keep_cache = self._kept = keep_cache

    @property
    def cache_bytes(self) -> int:
        """Memory of the keys and values this process holds."""
        return sum(c.nbytes for c in self._owned.values())

    def _forward(self, chunk: _Chunk, repeat: int, deltas: Mapping[str, Tensor]) -> Tensor:
        """One-token forward of ``repeat`` variants of each chunk row, returning read logits.

        The variants of an item go along the sequence axis, not the batch axis: each item's
        keys and values are read once (never copied per variant) and ``repeat`` copies of its last
        token follow them, all at the last position's index, under a custom mask that lets variant
        ``v`` see the prefix and itself only. So every variant row computes exactly what a lone
        one-token forward on the cache would, without repeating the cache ``repeat`` times.
        ``deltas`` are ``[repeat * b, d]`` variant-major (or ``[b, d]`` when ``repeat == 1``); the
        result is ``[repeat * b, k]`` variant-major. Runs under the caller's grad mode (gradients
        flow into ``deltas``, never into the cache).
        """
        from transformers import DynamicCache

        b = len(chunk.rows)
        dtype = chunk.keys[0].dtype
        data = list(zip(chunk.keys, chunk.values, strict=True))
        seen = chunk.prefix_mask.bool()[:, None, None, :].expand(b, 1, repeat, -1)
        own = torch.eye(repeat, dtype=torch.bool, device=seen.device)[None, None].expand(
            b, 1, -1, -1
        )
        allowed = torch.cat([seen, own], dim=-1)
        mask = torch.zeros(allowed.shape, dtype=dtype, device=seen.device)
        mask = mask.masked_fill(~allowed, torch.finfo(dtype).min)
        fns = {h: _add_per_variant(d, b, repeat) for h, d in deltas.items()}
        with _hooks(self.model, fns):
            out = decoder_of(self.model)(
                input_ids=chunk.last_ids[:, None].expand(b, repeat),
                attention_mask=mask,
                position_ids=chunk.last_pos[:, None].expand(b, repeat),
                use_cache=True,
                **{self._kwarg: DynamicCache(ddp_cache_data=data)},
            )
        hidden = out.last_hidden_state.transpose(0, 1).reshape(repeat * b, -1)  # variant-major
        logits = hidden @ self._w.to(hidden.dtype).T
        if self._b is not None:
            logits = logits + self._b.to(hidden.dtype)
        return logits if self._cap is None else torch.tanh(logits / self._cap) * self._cap

    def forward_with(self, chunk_index: int, deltas: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(rows, read logits)`` of one chunk with ``deltas`` (hook -> ``[b, d]`` or ``[d]``).

        Differentiable in ``deltas`` when called with grad enabled (used to optimise a direction).
        """
        self._check_kept()
        chunk = self._owned.get(chunk_index)
        if chunk is None:
            raise ConfigError(
                f"chunk {chunk_index} of this prefix cache is held by process "
                f"{self.owner(chunk_index)}, not this one.",
                "call forward_with only where owns(chunk_index) is true (see owner_value).",
            )
        b = len(chunk.rows)
        expanded = {h: (d.expand(b, -1) if d.ndim == 1 else d) for h, d in deltas.items()}
        return chunk.rows, self._forward(chunk, 1, expanded)

    def owner(self, chunk_index: int) -> int:
        """The process that holds the keys and values of a chunk (0 with one process)."""
        return chunk_index % world().size

    def owns(self, chunk_index: int) -> bool:
        return chunk_index in self._owned

    def _check_kept(self) -> None:
        if not self._kept:
            raise ConfigError(
                "this prefix cache kept no keys and values (built with keep_cache=False, or "
                "released), so it cannot score variants.",
                "build it with keep_cache=True.",
            )

    def release(self) -> None:
        """Free the keys and values (the base logits and activations stay)."""
        self._owned = {}
        self._kept = False

    @property
    def n_chunks(self) -> int:
        """Chunks with keys and values to score variants on (all processes' together)."""
        return len(self._layout) if self._kept else 0

    def chunk_rows(self, chunk_index: int) -> Tensor:
        return self._layout[chunk_index]

    def logits(
        self, edits: Sequence[Edit], *, progress: bool = False
    ) -> Float[Tensor, "variant n k"]:
        """Read logits of every item under each static edit: ``[len(edits), n, k]`` float32."""
        hooks = _check_edits(edits, self.n, self.d_model, self.n_layers)
        out = torch.empty(len(edits), self.n, len(self.read_ids))
        if not edits:
            return out
        self._check_kept()
        device = model_device(self.model)
        dtype = next(self.model.parameters()).dtype
        work = []
        for _, chunk in sorted(self._owned.items()):  # this process's chunks
            per = max(1, self.rows_per_pass // len(chunk.rows))
            work += [
                (chunk, start, min(start + per, len(edits))) for start in range(0, len(edits), per)
            ]
        with torch.no_grad():
            for chunk, start, stop in tqdm(
                work, desc="variants", disable=not show(progress), unit="pass"
            ):
                group = edits[start:stop]
                deltas = {
                    h: d
                    for h in hooks
                    if (d := _rows_delta(group, h, chunk.rows, self.d_model, device, dtype))
                    is not None
                }
                logits = self._forward(chunk, len(group), deltas).float().cpu()
                b = len(chunk.rows)
                for v in range(len(group)):
                    out[start + v, chunk.rows] = logits[v * b : (v + 1) * b]
        return merge_rows(out, [rows.tolist() for rows in self._layout], dim=1)


def make_scorer(
    model: Model,
    sequences: Sequence[Sequence[int]],
    *,
    read_ids: Sequence[int],
    capture: Sequence[str] = (),
    tokenizer: Tokenizer | None = None,
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "prefix pass",
    uids: Sequence[str] | None = None,
    keep_cache: bool = True,
) -> PrefixCache | FullPromptScorer:
    """A :class:`PrefixCache` for plain transformers models, else a :class:`FullPromptScorer`.

    A prompt longer than a sliding attention window also gets the full-prompt scorer.

    ``keep_cache=False``: only the base pass is wanted (no variants will be scored).
    """
    kwargs: dict[str, Any] = {
        "read_ids": read_ids, "capture": capture, "tokenizer": tokenizer,
        "batch_size": batch_size, "progress": progress, "desc": desc, "uids": uids,
    }  # fmt: skip
    window = sliding_window(model)
    if is_hooked(model) or (window is not None and max(map(len, sequences), default=0) > window):
        return FullPromptScorer(model, sequences, **kwargs)  # exact either way, only slower
    return PrefixCache(model, sequences, keep_cache=keep_cache, **kwargs)
