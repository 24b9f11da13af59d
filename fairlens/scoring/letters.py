"""Answer scoring for multiple-choice BBQ items, batched and padding-aware.

Two scoring modes, chosen by name from :data:`SCORERS`:

* ``"letter"`` — the paper's: the next-token logits of the answer letters (" A", " B", " C") after
  the prompt's final ``Answer:``; the prediction is their argmax.
* ``"loglik"`` — option log-likelihood: the log-probability of each answer text appended to the
  prompt (``" " + answer``), reduced by ``"mean"`` (default: length-normalised) or ``"sum"``.

Both work on a ``HookedTransformer`` or a plain HF causal LM, and under any hooks the caller has
active (steering, ablation), because they only call :func:`fairlens.backend.forward_logits`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import (
    PaddingSide,
    encode,
    forward_logits,
    last_token_logits,
    length_sorted_chunks,
    pad_id,
    pad_sequences,
    resolve_tokenizer,
)
from fairlens.data import LETTERS, BBQItem, PromptFormat, format_prompt
from fairlens.distributed import merge_rows, shared, show
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer

ScoringMode = Literal["letter", "loglik"]
Reduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class ScoreResult:
    """Per-item answer scores and predictions.

    Attributes:
        scores: ``[n, 3]`` letter logits (``letter``) or option log-likelihoods (``loglik``).
        predictions: ``[n]`` argmax answer index per item.
        uids: Item ids, in input order.
        mode, prompt_format, reduction: The settings that produced them.
    """

    scores: Float[Tensor, "n 3"]
    predictions: Int[Tensor, " n"]
    uids: tuple[str, ...]
    mode: ScoringMode
    prompt_format: PromptFormat
    reduction: Reduction | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.uids)


def single_token_ids(tokenizer: Tokenizer, letters: str, what: str, fix: str) -> list[int]:
    """Token ids of ``" " + letter`` for each letter; each must be one token (else ConfigError
    naming ``what`` cannot be read, and ``fix``)."""
    ids = []
    for letter in letters:
        toks = tokenizer.encode(" " + letter, add_special_tokens=False)
        if len(toks) != 1:
            raise ConfigError(
                f"The tokenizer splits {' ' + letter!r} into {len(toks)} tokens, so {what}.", fix
            )
        ids.append(int(toks[0]))
    return ids


def letter_token_ids(tokenizer: Tokenizer) -> list[int]:
    """Token ids of " A", " B", " C"; each must be one token."""
    return single_token_ids(
        tokenizer,
        "".join(LETTERS),
        "letter scoring cannot read a single next-token logit",
        "Use --scoring loglik for this model.",
    )


def build_prompts(
    items: Sequence[BBQItem],
    prompt_format: PromptFormat,
    tokenizer: Tokenizer,
    shots: Sequence[BBQItem] | None,
    instruction: str | None = None,
) -> list[str]:
    """Prompts for ``items`` in the given format (``instruction`` first, if given)."""
    return [
        format_prompt(it, prompt_format, tokenizer=tokenizer, shots=shots, instruction=instruction)
        for it in items
    ]


def prompt_tokens(
    model: Model,
    items: Sequence[BBQItem],
    prompt_format: PromptFormat = "zero_shot",
    *,
    shots: Sequence[BBQItem] | None = None,
    tokenizer: Tokenizer | None = None,
    instruction: str | None = None,
) -> list[list[int]]:
    """Token ids of each item's prompt, as :func:`score_items` feeds them to ``model`` (with the
    special tokens its tokenizer adds; ``instruction`` first, if given): what
    :func:`fairlens.extract_activations` reads."""
    tok = resolve_tokenizer(model, tokenizer)
    return encode(tok, build_prompts(items, prompt_format, tok, shots, instruction))


def _score_letter(
    model: Model,
    prompt_ids: list[list[int]],
    *,
    tokenizer: Tokenizer,
    batch_size: int,
    padding_side: PaddingSide,
    progress: bool,
    **_: Any,
) -> Float[Tensor, "n 3"]:
    letters = torch.tensor(letter_token_ids(tokenizer))
    out = torch.empty(len(prompt_ids), 3)
    chunks = list(length_sorted_chunks([len(p) for p in prompt_ids], batch_size))
    with shared(chunks) as mine:
        for rows in tqdm(mine, desc="scoring (letter)", disable=not show(progress), unit="batch"):
            batch = pad_sequences(
                [prompt_ids[r] for r in rows],
                pad_token_id=pad_id(tokenizer),
                padding_side=padding_side,
            )
            with torch.no_grad():
                last = last_token_logits(model, batch)
            out[rows] = last[:, letters.to(last.device)].float().cpu()
    return merge_rows(out, chunks)


def _score_loglik(
    model: Model,
    prompt_ids: list[list[int]],
    *,
    tokenizer: Tokenizer,
    items: Sequence[BBQItem],
    batch_size: int,
    padding_side: PaddingSide,
    progress: bool,
    reduction: Reduction,
) -> Float[Tensor, "n 3"]:
    # One sequence per (item, option): prompt ids + ids of " answer" (tokenised apart so that the
    # prompt's tokens are identical across options).
    sequences: list[list[int]] = []
    n_prompt: list[int] = []
    for ids, item in zip(prompt_ids, items, strict=True):
        for answer in item.answers:
            cont = tokenizer.encode(" " + answer.strip(), add_special_tokens=False)
            sequences.append(ids + list(cont))
            n_prompt.append(len(ids))
    flat = torch.empty(len(sequences))
    chunks = list(length_sorted_chunks([len(s) for s in sequences], batch_size))
    with shared(chunks) as mine:
        for rows in tqdm(mine, desc="scoring (loglik)", disable=not show(progress), unit="batch"):
            batch = pad_sequences(
                [sequences[r] for r in rows],
                pad_token_id=pad_id(tokenizer),
                padding_side=padding_side,
            )
            with torch.no_grad():
                logprobs = forward_logits(model, batch).float().log_softmax(-1).cpu()
            width = batch.input_ids.shape[1]
            for j, r in enumerate(rows):
                length = int(batch.lengths[j])
                start = 0 if padding_side == "right" else width - length
                targets = batch.input_ids[j, start + n_prompt[r] : start + length]
                # token t is predicted at position t-1
                preds = logprobs[j, start + n_prompt[r] - 1 : start + length - 1]
                token_lp = preds.gather(-1, targets[:, None]).squeeze(-1)
                flat[r] = token_lp.mean() if reduction == "mean" else token_lp.sum()
    return merge_rows(flat, chunks).view(len(items), 3)


SCORERS: dict[str, Callable[..., Tensor]] = {"letter": _score_letter, "loglik": _score_loglik}


def score_items(
    model: Model,
    items: Sequence[BBQItem],
    *,
    mode: ScoringMode = "letter",
    prompt_format: PromptFormat = "zero_shot",
    shots: Sequence[BBQItem] | None = None,
    tokenizer: Tokenizer | None = None,
    batch_size: int = 16,
    padding_side: PaddingSide = "left",
    reduction: Reduction = "mean",
    progress: bool = False,
    instruction: str | None = None,
) -> ScoreResult:
    """Score BBQ items with ``model`` (TL or plain HF), returning scores and predictions.

    Args:
        model: A ``HookedTransformer`` or HF causal LM; any hooks active on it apply.
        items: BBQ items to score.
        mode: ``"letter"`` (paper) or ``"loglik"`` (option log-likelihood).
        prompt_format: ``"zero_shot"``, ``"few_shot"`` (needs ``shots``) or ``"chat"``.
        shots: Solved examples for the few-shot prefix (from a split disjoint from ``items``).
        tokenizer: Needed for plain HF models; TL models carry their own.
        batch_size: Sequences per forward pass (loglik runs 3 per item).
        padding_side: Where to pad; results do not depend on it (tested).
        reduction: For ``loglik``: ``"mean"`` log-prob per answer token, or ``"sum"``.
        progress: Show a progress bar.
        instruction: Text put before each prompt (the prompting baseline).
    """
    if mode not in SCORERS:
        raise ConfigError(
            f"Unknown scoring mode {mode!r}; expected one of {sorted(SCORERS)}.",
            "Pass --scoring letter or --scoring loglik.",
        )
    if reduction not in ("mean", "sum"):
        raise ConfigError(
            f"reduction must be 'mean' or 'sum', got {reduction!r}.",
            "pass reduction='mean' or 'sum'.",
        )
    if len(items) == 0:
        raise ConfigError("No items to score.", "Check the data selection (categories, limits).")
    tok = resolve_tokenizer(model, tokenizer)
    prompt_ids = prompt_tokens(
        model, items, prompt_format, shots=shots, tokenizer=tok, instruction=instruction
    )
    scores = SCORERS[mode](
        model,
        prompt_ids,
        tokenizer=tok,
        items=items,
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        reduction=reduction,
    )
    return ScoreResult(
        scores=scores,
        predictions=scores.argmax(-1),
        uids=tuple(it.uid for it in items),
        mode=mode,
        prompt_format=prompt_format,
        reduction=reduction if mode == "loglik" else None,
        settings={
            "batch_size": batch_size,
            "padding_side": padding_side,
            **({"instruction": instruction} if instruction else {}),
        },
    )
