"""Token log-probabilities of whole texts (CrowS-Pairs sentences, perplexity corpora).

Every text is scored from its first word: it is preceded by the tokenizer's BOS token (EOS when
the tokenizer has no BOS — for GPT-style vocabularies that is the document separator), and
optionally by a fixed prefix (the prompting baseline's instruction), which is context only and
never scored. The prefix and the text are tokenised apart, so a text gets identical tokens with
and without a prefix.

Works on a ``HookedTransformer`` or a plain transformers model; hooks active on the model apply.
Passing a recording :class:`~fairlens.steer.steerer.GateStats` also returns the gate's P(unbiased) at
each text token (the steerer must use the ``"all"`` position policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import forward_logits, length_sorted_chunks, pad_id, pad_sequences
from fairlens.data.prompts import instruction_lead
from fairlens.distributed import agree, merge_objects, shared, show
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer

__all__ = ["TextScores", "start_ids", "text_logprobs"]


@dataclass(frozen=True)
class TextScores:
    """Per text: log-prob of each text token; with a recording gate, whether it fired at each
    token (and a dynamic gate's P(unbiased) there)."""

    logprobs: tuple[Float[Tensor, " _n_tokens"], ...]
    gate_p_unbiased: tuple[Float[Tensor, " _n_tokens"], ...] | None
    gate_fired: tuple[Bool[Tensor, " _n_tokens"], ...] | None = None

    @property
    def sums(self) -> Float[Tensor, " n_texts"]:
        return torch.stack([lp.sum() for lp in self.logprobs])

    @property
    def n_tokens(self) -> int:
        return sum(int(lp.numel()) for lp in self.logprobs)

    def perplexity(self) -> float:
        """exp of the mean negative log-prob over all text tokens (token-weighted)."""
        total = torch.cat(list(self.logprobs))
        return float(torch.exp(-total.mean()))


def start_ids(tokenizer: Tokenizer) -> list[int]:
    """The id(s) every scored text starts after: BOS, else EOS."""
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            return [value]
    raise ConfigError(
        "the tokenizer has neither a BOS nor an EOS token, so a text's first word cannot be scored.",
        "use a tokenizer with a BOS or EOS token.",
    )


def text_logprobs(
    model: Model,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    *,
    prefix: str | None = None,
    batch_size: int = 16,
    gate: Any | None = None,
    progress: bool = False,
    desc: str = "scoring texts",
) -> TextScores:
    """Log-probability of every token of every text (context: start token + optional prefix).

    Args:
        model: ``HookedTransformer`` or plain transformers causal LM.
        tokenizer: The model's tokenizer.
        texts: Texts to score (must be non-empty strings).
        prefix: Context put before each text (not scored), followed by a blank line.
        gate: The :class:`~fairlens.steer.steerer.GateStats` yielded by a *recording* steerer applied
            to ``model`` with ``positions="all"``; then whether the gate fired at each text token
            (and, for a dynamic gate, P(unbiased) there) is returned.
    """
    if not texts:
        raise ConfigError("no texts to score.", "pass at least one text.")
    context = start_ids(tokenizer)
    if lead := instruction_lead(prefix):
        context = context + tokenizer.encode(lead, add_special_tokens=False)
    bodies = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    empty = [i for i, b in enumerate(bodies) if not b]
    if empty:
        raise ConfigError(f"text {empty[0]} is empty after tokenisation.", "drop empty texts.")
    sequences = [context + b for b in bodies]
    n_ctx = len(context)
    logprobs: list[Tensor] = [torch.empty(0)] * len(texts)
    gate_p: list[Tensor] = [torch.empty(0)] * len(texts)
    fired: list[Tensor] = [torch.empty(0, dtype=torch.bool)] * len(texts)
    recording = gate is not None
    chunks = list(length_sorted_chunks([len(s) for s in sequences], batch_size))
    with shared(chunks) as mine:
        for rows in tqdm(mine, desc=desc, disable=not show(progress), unit="batch"):
            batch = pad_sequences(
                [sequences[r] for r in rows], pad_token_id=pad_id(tokenizer), padding_side="left"
            )
            n_calls = len(gate.decisions) if recording else 0
            with torch.no_grad():
                lp = forward_logits(model, batch).float().log_softmax(-1).cpu()
            if recording and len(gate.decisions) != n_calls + 1:
                raise ConfigError(
                    "gate stats were passed but the steerer recorded nothing for this forward call.",
                    "apply the steerer with record=True and positions='all'.",
                )
            width = batch.input_ids.shape[1]
            for j, r in enumerate(rows):
                start = width - int(batch.lengths[j])  # left padding
                targets = batch.input_ids[j, start + n_ctx :]
                preds = lp[j, start + n_ctx - 1 : width - 1]
                logprobs[r] = preds.gather(-1, targets[:, None]).squeeze(-1)
                if recording:
                    fired[r] = gate.decisions[-1][j, start + n_ctx :]
                    if gate.history:  # a dynamic gate also records P(unbiased)
                        gate_p[r] = gate.history[-1][j, start + n_ctx :].float().cpu()
    rows_out = merge_objects(list(zip(logprobs, fired, gate_p, strict=True)), chunks)
    logprobs, fired, gate_p = ([r[k] for r in rows_out] for k in range(3))  # one merge for all
    dynamic = recording and any(agree(bool(gate.history)))
    return TextScores(
        tuple(logprobs),
        tuple(gate_p) if dynamic else None,
        tuple(fired) if recording else None,
    )
