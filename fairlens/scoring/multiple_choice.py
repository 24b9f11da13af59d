"""Multiple-choice QA scoring for the utility suites: prompts and next-letter answers.

Prompts follow the MMLU reference (``hendrycks/test``, ``evaluate.py``): the question, one line per
option ``"A. text"``, then ``"Answer:"``; the model's answer is the option letter with the highest
next-token logit among the question's letters. MMLU is 5-shot from its dev split under the header
"The following are multiple choice questions (with answers) about {subject}."; like the reference, a
prompt longer than ``max_tokens`` (2,048) drops shots from the end until it fits. ARC and
OpenBookQA are zero-shot in the same format.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from fairlens.backend import encode, last_token_logits, length_sorted_chunks, pad_id, pad_sequences
from fairlens.data.mcqa import MC_LETTERS, MCItem
from fairlens.distributed import merge_rows, shared, show
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.letters import single_token_ids

__all__ = ["mc_letter_ids", "mc_prompts", "score_mc"]


def _body(item: MCItem) -> str:
    options = "".join(f"\n{MC_LETTERS[i]}. {text}" for i, text in enumerate(item.choices))
    return f"{item.question}{options}\nAnswer:"


def _header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def mc_prompts(
    items: Sequence[MCItem],
    tokenizer: Tokenizer,
    shots: Sequence[MCItem] = (),
    *,
    max_tokens: int = 2048,
    instruction: str | None = None,
) -> list[str]:
    """The prompt of each item: with the shots of its subject (MMLU 5-shot) or zero-shot.

    Args:
        items: The questions.
        tokenizer: Counts tokens for the ``max_tokens`` cut.
        shots: Solved examples; an item gets those of its own subject (in their order).
        max_tokens: A prompt longer than this drops shots from the end until it fits.
        instruction: Text put before the prompt (the prompting baseline).
    """
    by_subject: dict[str | None, list[MCItem]] = {}
    for shot in shots:
        by_subject.setdefault(shot.subject, []).append(shot)
    out = []
    for it in items:
        own = by_subject.get(it.subject, [])
        k = len(own)
        while True:
            solved = "".join(f"{_body(s)} {MC_LETTERS[s.answer]}\n\n" for s in own[:k])
            head = _header(it.subject) if shots and it.subject else ""
            text = head + solved + _body(it)
            if instruction:
                text = f"{instruction}\n\n{text}"
            if k == 0 or len(tokenizer.encode(text, add_special_tokens=True)) <= max_tokens:
                break
            k -= 1
        out.append(text)
    return out


def mc_letter_ids(tokenizer: Tokenizer, n: int = len(MC_LETTERS)) -> list[int]:
    """Token ids of ``" A"`` ... for ``n`` letters; each must be one token.

    Raises:
        ConfigError: The tokenizer splits a letter into several tokens (no single next-token
            logit to read).
    """
    return single_token_ids(
        tokenizer,
        MC_LETTERS[:n],
        "the multiple-choice suites cannot read one next-token logit per option",
        "leave the mmlu/arc/openbookqa suites out for this model.",
    )


def score_mc(
    model: Model,
    tokenizer: Tokenizer,
    items: Sequence[MCItem],
    prompts: Sequence[str],
    *,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "multiple choice",
) -> Int[Tensor, " n"]:
    """The answer index of each item: the best of its letters at the last prompt position.

    Runs under whatever hooks are on ``model`` (a steering method's context). Batches are left
    padded, so a steerer's last column is every row's last prompt token.
    """
    if len(items) != len(prompts):
        raise ConfigError(
            f"{len(items)} items but {len(prompts)} prompts.",
            "pass one prompt per item, in the same order.",
        )
    letters = torch.tensor(
        mc_letter_ids(tokenizer, max((len(it.choices) for it in items), default=1))
    )
    seqs = encode(tokenizer, list(prompts))
    out = torch.zeros(len(items), dtype=torch.long)
    chunks = list(length_sorted_chunks([len(s) for s in seqs], batch_size))
    with torch.no_grad(), shared(chunks) as mine:
        for rows in tqdm(mine, desc=desc, disable=not show(progress), unit="batch"):
            batch = pad_sequences(
                [seqs[r] for r in rows], pad_token_id=pad_id(tokenizer), padding_side="left"
            )
            logits = last_token_logits(model, batch).float().cpu()[:, letters]
            for j, r in enumerate(rows):
                out[r] = int(logits[j, : len(items[r].choices)].argmax())
    return merge_rows(out, chunks)
