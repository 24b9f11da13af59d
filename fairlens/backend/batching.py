"""Tokenisation into padded batches, and one forward call for both TL and plain HF models.

Padding is where silent wrong numbers come from: the "last token" of a right-padded row is a pad,
and rotary positions of a left-padded row are shifted unless the model is told. Everything here
returns the index of each row's *real* last token and passes the attention mask (TL derives the
rotary offsets from it; for HF we pass ``position_ids`` explicitly), so left and right padding give
the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from fairlens.backend.hooks import is_hooked
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer
from fairlens.models.families import family_of

PaddingSide = Literal["left", "right"]


@dataclass(frozen=True)
class Batch:
    """A padded batch of token sequences.

    Attributes:
        input_ids: ``[batch, pos]`` token ids (pad id where ``attention_mask`` is 0).
        attention_mask: ``[batch, pos]`` 1 for real tokens.
        last_index: ``[batch]`` position of each row's last real token.
        lengths: ``[batch]`` number of real tokens per row.
        padding_side: Where the pads are.
    """

    input_ids: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    last_index: Int[Tensor, " batch"]
    lengths: Int[Tensor, " batch"]
    padding_side: PaddingSide

    @property
    def position_ids(self) -> Int[Tensor, "batch pos"]:
        """Rotary position of every token (0 at each row's first real token)."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.last_index.to(device),
            self.lengths.to(device),
            self.padding_side,
        )


def resolve_tokenizer(model: Model, tokenizer: Tokenizer | None = None) -> Tokenizer:
    """``tokenizer``, else the one attached to ``model`` (TL models carry theirs); never None."""
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ConfigError(
            "No tokenizer: the model has none attached and none was passed.",
            "Pass tokenizer=... (for a plain HF model) or load the model with fairlens.load_model.",
        )
    return tok


def pad_id(tokenizer: Tokenizer | None) -> int:
    """The tokenizer's pad id, falling back to EOS (padding is masked, so any id is safe)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def pad_sequences(
    sequences: Sequence[Sequence[int]], *, pad_token_id: int, padding_side: PaddingSide = "right"
) -> Batch:
    """Pad already-tokenised sequences into a :class:`Batch`."""
    if padding_side not in ("left", "right"):
        raise ConfigError(
            f"padding_side must be 'left' or 'right', got {padding_side!r}.",
            "pass padding_side='left' or padding_side='right'.",
        )
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ConfigError(
            "Cannot build a batch from an empty sequence list or an empty sequence.",
            "pass at least one sequence, each with at least one token.",
        )
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = int(lengths.max())
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        start = 0 if padding_side == "right" else width - len(seq)
        ids[row, start : start + len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, start : start + len(seq)] = 1
    last = lengths - 1 if padding_side == "right" else torch.full_like(lengths, width - 1)
    return Batch(ids, mask, last, lengths, padding_side)


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, with the special tokens the tokenizer itself adds (e.g. BOS)."""
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def encode_batch(
    tokenizer: Tokenizer, texts: Sequence[str], *, padding_side: PaddingSide = "right"
) -> Batch:
    """Tokenise and pad ``texts``."""
    return pad_sequences(
        encode(tokenizer, texts), pad_token_id=pad_id(tokenizer), padding_side=padding_side
    )


def length_sorted_chunks(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (less padding), longest first."""
    if batch_size < 1:
        raise ConfigError(
            f"batch_size must be >= 1, got {batch_size}.", "Pass --batch-size 1 or more."
        )
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def check_context(model: Model, batch: Batch) -> None:
    """Refuse sequences longer than the model's context (TL would fail with an IndexError)."""
    cfg = getattr(model, "cfg", None)
    limit = getattr(cfg, "n_ctx", None) if cfg is not None else None
    if limit is None:
        limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    width = int(batch.lengths.max())
    if limit is not None and width > int(limit):
        raise ConfigError(
            f"A sequence has {width} tokens but the model's context is {limit} tokens.",
            "Use a shorter prompt format (e.g. zero_shot instead of few_shot) or load the model "
            "with a larger n_ctx.",
        )


_REAL_TOKENS: ContextVar[Tensor | None] = ContextVar("fairlens_real_tokens", default=None)
_PADDING: ContextVar[PaddingSide | None] = ContextVar("fairlens_padding", default=None)


def real_tokens() -> Bool[Tensor, "batch pos"] | None:
    """Which positions of the batch now running through :func:`forward_logits` or
    :func:`last_token_logits` hold a token (not a pad), else ``None`` (e.g. a hook that wants to
    count real positions only, as the steerer's gate statistics do)."""
    return _REAL_TOKENS.get()


@contextmanager
def _running(batch: Batch) -> Iterator[None]:
    token = _REAL_TOKENS.set(batch.attention_mask.bool())
    side = _PADDING.set(batch.padding_side)
    try:
        yield
    finally:
        _REAL_TOKENS.reset(token)
        _PADDING.reset(side)


def padding_now() -> PaddingSide | None:
    """The padding side of the batch now running through :func:`forward_logits` /
    :func:`last_token_logits`, else ``None``: a steerer that edits the last column refuses a
    right-padded batch, whose last column is a pad for every shorter row."""
    return _PADDING.get()


def forward_logits(model: Model, batch: Batch) -> Float[Tensor, "batch pos d_vocab"]:
    """Logits of ``model`` on ``batch``, padding-aware for both TL and HF models."""
    check_context(model, batch)
    device = model_device(model)
    batch = batch.to(device)
    with _running(batch):
        if is_hooked(model):
            return model(batch.input_ids, attention_mask=batch.attention_mask)
        out = model(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        )
    return out.logits


def last_token_logits(model: Model, batch: Batch) -> Float[Tensor, "batch d_vocab"]:
    """Next-token logits at each row's last real token only.

    The unembedding is applied to one position per row instead of all of them (for a 49k vocabulary
    and ~90-token prompts that is ~20 % of the forward cost). Hooks on every block still fire.
    """
    check_context(model, batch)
    device = model_device(model)
    batch = batch.to(device)
    rows = torch.arange(batch.input_ids.shape[0], device=device)
    if is_hooked(model):
        with _running(batch):
            resid = model(
                batch.input_ids,
                attention_mask=batch.attention_mask,
                stop_at_layer=model.cfg.n_layers,
            )
        return _tl_final_logits(model, resid[rows, batch.last_index])
    family = family_of(model)
    with _running(batch):
        hidden = family.decoder(model)(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            use_cache=False,
        ).last_hidden_state
    return family.final_logits(model, hidden[rows, batch.last_index])


def resid_entering(model: Model, batch: Batch, layer: int) -> Float[Tensor, "batch pos d_model"]:
    """The residual stream entering block ``layer`` of a ``HookedTransformer`` (before its
    ``hook_resid_pre``), for :func:`last_token_logits_from` to continue from."""
    check_context(model, batch)
    batch = batch.to(model_device(model))
    with _running(batch):
        return model(batch.input_ids, attention_mask=batch.attention_mask, stop_at_layer=layer)


def last_token_logits_from(
    model: Any, batch: Batch, resid: Float[Tensor, "batch pos d_model"], layer: int
) -> Float[Tensor, "batch d_vocab"]:
    """:func:`last_token_logits` continued from the residual stream entering block ``layer``
    (from :func:`resid_entering` on the same batch): only blocks ``layer..n-1`` run, and every
    hook at or above ``layer`` fires as in a whole forward pass."""
    device = model_device(model)
    batch = batch.to(device)
    rows = torch.arange(batch.input_ids.shape[0], device=device)
    with _running(batch):
        out = model(
            resid.to(device),
            start_at_layer=layer,
            attention_mask=batch.attention_mask,
            stop_at_layer=model.cfg.n_layers,
        )
    return _tl_final_logits(model, out[rows, batch.last_index])


def _tl_final_logits(model: Any, last: Float[Tensor, "batch d_model"]) -> Tensor:
    """A ``HookedTransformer``'s logits from the final residual of one position per row (final
    norm, unembedding and, where the model has one, the logit soft cap)."""
    logits = model.unembed(model.ln_final(last[:, None]))[:, 0]
    cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0))
    return torch.tanh(logits / cap) * cap if cap > 0 else logits


def model_device(model: Model) -> torch.device:
    """Where a forward call's inputs go: the device of the model's first parameter, or, for a
    model split across devices by accelerate (``hf_device_map``), its input embedding's
    execution device (its first parameter may sit on ``meta`` while offloaded)."""
    if getattr(model, "hf_device_map", None) and not is_hooked(model):
        hook = getattr(model.get_input_embeddings(), "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device)
    return next(model.parameters()).device


def decoder_of(model: Model) -> Any:
    """The decoder stack of a plain HF causal LM (embeddings, blocks, final norm; no unembedding)."""
    return family_of(model).decoder(model)


def logit_cap(model: Model) -> float | None:
    """The final-logit soft cap a model applies after its unembedding (Gemma-2), else ``None``."""
    if is_hooked(model):
        cap = float(getattr(model.cfg, "output_logits_soft_cap", -1.0))
        return cap if cap > 0 else None
    family = family_of(model)
    return family.logit_cap(model.config) if family.logit_cap is not None else None


def sliding_window(model: Model) -> int | None:
    """The attention window of a plain HF model whose layers (some or all) slide, else ``None``."""
    cfg = getattr(model, "config", None)
    window = getattr(cfg, "sliding_window", None)
    if is_hooked(model) or not window or getattr(cfg, "use_sliding_window", True) is False:
        return None
    types = getattr(cfg, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None
    return int(window)
