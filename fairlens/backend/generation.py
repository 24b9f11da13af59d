"""Batched greedy generation and teacher-forced continuation scoring with a KV cache.

Both functions drive a plain transformers causal LM one token per forward call after the prompt
pass, exactly as ``generate`` does. That matters for steering: with the default ``"generated"``
position policy a :class:`~fairlens.steer.steerer.Steerer` probes the prompt's last token and every new
token, so the log-probability of a continuation *scored* here under steering is the one the model
had while *generating* it under the same steering (a single forward pass over prompt +
continuation would steer different positions).

Prompts are left-padded; rotary positions come from the attention mask, so padding never changes a
row's numbers. Hooked transformers are not driven here: use the plain transformers twin of the
model (:func:`fairlens.load_hf`, the fast path; tests show both give the same steered logits).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import (
    check_context,
    is_hooked,
    length_sorted_chunks,
    model_device,
    pad_id,
    pad_sequences,
)
from fairlens.distributed import agree, merge_objects, shared, show
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer

__all__ = ["Generation", "continuation_logprobs", "generate_greedy"]


@dataclass(frozen=True)
class Generation:
    """Greedy continuations of a list of prompts.

    Attributes:
        tokens: Generated ids per prompt, cut after the first EOS (EOS kept) or ``max_new_tokens``.
        texts: Decoded continuations (special tokens dropped).
        logprobs: Per prompt, the log-probability of each generated token.
        gate_fired: With a recording gate: per prompt, whether the vector was added at the
            prompt's last token and at every generated token that was fed back (one per forward
            call the row took part in), else ``None``.
        gate_p_unbiased: The dynamic gate's P(unbiased) at the same positions (``None`` for a
            static steerer, which has no probability, or without a recording gate).
    """

    tokens: tuple[tuple[int, ...], ...]
    texts: tuple[str, ...]
    logprobs: tuple[tuple[float, ...], ...]
    gate_p_unbiased: tuple[tuple[float, ...], ...] | None = None
    gate_fired: tuple[tuple[bool, ...], ...] | None = None


def _check_model(model: Model) -> None:
    if is_hooked(model):
        raise ConfigError(
            "generation with a KV cache runs on the plain transformers model, not a HookedTransformer.",
            "pass the fast-path model: hf, tokenizer, _ = fairlens.load_hf(spec).",
        )


def _cache_kwarg(model: Model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); use whichever ``forward`` takes."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _returned_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _prompt_pass(
    model: Model, rows: list[list[int]], pad: int
) -> tuple[Tensor, Tensor, Tensor, Any]:
    batch = pad_sequences(rows, pad_token_id=pad, padding_side="left")
    check_context(model, batch)
    batch = batch.to(model_device(model))
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=True,
    )
    return (
        out.logits[:, -1].float(),
        batch.attention_mask,
        batch.position_ids[:, -1:],
        _returned_cache(out),
    )


def _step(
    model: Model, ids: Int[Tensor, " batch"], mask: Tensor, pos: Tensor, past: Any
) -> tuple[Tensor, Tensor, Tensor, Any]:
    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    pos = pos + 1
    out = model(
        input_ids=ids[:, None],
        attention_mask=mask,
        position_ids=pos,
        use_cache=True,
        **{_cache_kwarg(model): past},
    )
    return out.logits[:, -1].float(), mask, pos, _returned_cache(out)


def _record_gate(
    gate: Any | None, done: Tensor, out_fired: list[list[bool]], out_p: list[list[float]]
) -> None:
    """Append the last call's gate decision (and probability) to every row still generating."""
    if gate is None:
        return
    if not gate.decisions:
        raise ConfigError(
            "gate stats were passed but the steerer recorded nothing.",
            "apply the steerer with record=True.",
        )
    fired = gate.decisions[-1][:, -1]
    p = gate.history[-1][:, -1].float().cpu() if gate.history else None
    for j in range(len(out_fired)):
        if not done[j]:
            out_fired[j].append(bool(fired[j]))
            if p is not None:
                out_p[j].append(float(p[j]))


def generate_greedy(
    model: Model,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 24,
    batch_size: int = 8,
    gate: Any | None = None,
    progress: bool = False,
) -> Generation:
    """Greedy-decode ``max_new_tokens`` for every prompt (hooks active on ``model`` apply).

    Rows that emit EOS stop counting; the batch keeps stepping until all rows stop or the budget
    is spent (finished rows are fed EOS and their outputs ignored).

    Args:
        gate: The :class:`~fairlens.steer.steerer.GateStats` of a *recording* steerer applied to
            ``model`` (``positions="generated"``): the gate decisions (and a dynamic gate's
            probabilities) are then returned per row, finished rows excluded.
    """
    _check_model(model)
    if max_new_tokens < 1:
        raise ConfigError(
            f"max_new_tokens must be >= 1, got {max_new_tokens}.", "pass max_new_tokens=1 or more."
        )
    ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    if any(len(x) == 0 for x in ids):
        raise ConfigError("a prompt is empty after tokenisation.", "pass non-empty prompts.")
    eos = tokenizer.eos_token_id if isinstance(tokenizer.eos_token_id, int) else None
    pad = pad_id(tokenizer)
    tokens: list[tuple[int, ...]] = [()] * len(ids)
    logprobs: list[tuple[float, ...]] = [()] * len(ids)
    gate_p: list[tuple[float, ...]] = [()] * len(ids)
    gate_fired: list[tuple[bool, ...]] = [()] * len(ids)
    chunks = list(length_sorted_chunks([len(x) for x in ids], batch_size))
    with shared(chunks) as mine:
        for rows in tqdm(mine, desc="generating", disable=not show(progress), unit="batch"):
            out_ids: list[list[int]] = [[] for _ in rows]
            out_lp: list[list[float]] = [[] for _ in rows]
            out_gate: list[list[float]] = [[] for _ in rows]
            out_fired: list[list[bool]] = [[] for _ in rows]
            done = torch.zeros(len(rows), dtype=torch.bool)

            with torch.no_grad():
                logits, mask, pos, past = _prompt_pass(model, [ids[r] for r in rows], pad)
                _record_gate(gate, done, out_fired, out_gate)
                for step in range(max_new_tokens):
                    lp = logits.log_softmax(-1).cpu()
                    nxt = lp.argmax(-1)
                    for j in range(len(rows)):
                        if not done[j]:
                            out_ids[j].append(int(nxt[j]))
                            out_lp[j].append(float(lp[j, nxt[j]]))
                    if eos is not None:
                        done |= nxt == eos
                    if bool(done.all()) or step == max_new_tokens - 1:
                        break
                    feed = torch.where(
                        done, torch.full_like(nxt, eos if eos is not None else pad), nxt
                    )
                    logits, mask, pos, past = _step(model, feed.to(mask.device), mask, pos, past)
                    _record_gate(gate, done, out_fired, out_gate)
            for j, r in enumerate(rows):
                tokens[r] = tuple(out_ids[j])
                logprobs[r] = tuple(out_lp[j])
                gate_p[r] = tuple(out_gate[j])
                gate_fired[r] = tuple(out_fired[j])
    rows_out = merge_objects(list(zip(tokens, logprobs, gate_p, gate_fired, strict=True)), chunks)
    tokens = [r[0] for r in rows_out]  # one merge for all four per-row results
    logprobs, gate_p, gate_fired = ([r[k] for r in rows_out] for k in (1, 2, 3))
    texts = tuple(str(tokenizer.decode(list(t), skip_special_tokens=True)) for t in tokens)
    dynamic = gate is not None and any(agree(bool(gate.history)))
    return Generation(
        tuple(tokens),
        texts,
        tuple(logprobs),
        tuple(gate_p) if dynamic else None,
        tuple(gate_fired) if gate is not None else None,
    )


def continuation_logprobs(
    model: Model,
    tokenizer: Tokenizer,
    prompts: Sequence[str],
    continuations: Sequence[Sequence[int]],
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> list[Float[Tensor, " n_tokens"]]:
    """Log-probability of each given continuation token after its prompt, fed one token per call.

    Returns one tensor per prompt with ``len(continuations[i])`` entries. Empty continuations give
    empty tensors.
    """
    _check_model(model)
    if len(prompts) != len(continuations):
        raise ConfigError(
            f"{len(prompts)} prompts but {len(continuations)} continuations.",
            "pass continuations one per prompt, in the same order.",
        )
    ids = [tokenizer.encode(p, add_special_tokens=False) for p in prompts]
    if any(len(x) == 0 for x in ids):
        raise ConfigError("a prompt is empty after tokenisation.", "pass non-empty prompts.")
    pad = pad_id(tokenizer)
    result: list[Tensor] = [torch.empty(0)] * len(ids)
    chunks = list(length_sorted_chunks([len(x) for x in ids], batch_size))
    with shared(chunks) as mine:
        for rows in tqdm(
            mine, desc="scoring continuations", disable=not show(progress), unit="batch"
        ):
            conts = [list(continuations[r]) for r in rows]
            width = max((len(c) for c in conts), default=0)
            scores = torch.zeros(len(rows), width)
            if width:
                forced = torch.full((len(rows), width), pad, dtype=torch.long)
                for j, c in enumerate(conts):
                    forced[j, : len(c)] = torch.tensor(c, dtype=torch.long)
                with torch.no_grad():
                    logits, mask, pos, past = _prompt_pass(model, [ids[r] for r in rows], pad)
                    for t in range(width):
                        lp = logits.log_softmax(-1).cpu()
                        scores[:, t] = lp.gather(-1, forced[:, t : t + 1]).squeeze(-1)
                        if t < width - 1:
                            logits, mask, pos, past = _step(
                                model, forced[:, t].to(mask.device), mask, pos, past
                            )
            for j, r in enumerate(rows):
                result[r] = scores[j, : len(conts[j])].clone()
    return merge_objects(result, chunks)
