"""The panel's UNQOVER suite: bias intensity ``mu`` per dataset (gender, nationality, ethnicity,
religion) under each method, from the four questions of every instance.

Each question becomes ``"{context} {question}\\nAnswer:"`` followed by either subject's name; the
two names are scored by their tokens' log-probabilities under the method (steering and the gate at
every position, as for the other text suites) and normalised over the pair
(:mod:`fairlens.evaluate.unqover`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fairlens.data.unqover import (
    UNQOVER_DATASETS,
    UnqoverInstance,
    generate_unqover,
    unqover_prompt,
)
from fairlens.evaluate.context import PanelContext, PanelInputs, Suite, gate_rates
from fairlens.evaluate.unqover import unqover_metrics


def _texts(
    ctx: PanelContext, instances: tuple[UnqoverInstance, ...]
) -> tuple[list[str], list[int]]:
    """The 8 scored texts of each instance (order x polarity x subject) and each one's number of
    answer tokens."""
    texts, n_answer = [], []
    for inst in instances:
        for order in (0, 1):
            for polarity in (0, 1):
                prompt = unqover_prompt(inst.context[order], inst.question[polarity])
                n_prompt = len(ctx.tokenizer.encode(prompt, add_special_tokens=False))
                for name in inst.subjects:
                    text = f"{prompt} {name}"
                    texts.append(text)
                    n_answer.append(
                        len(ctx.tokenizer.encode(text, add_special_tokens=False)) - n_prompt
                    )
    return texts, n_answer


def _scores(
    ctx: PanelContext, method: str, inputs: PanelInputs
) -> tuple[np.ndarray, tuple[float | None, float | None]]:
    """``S[instance, order, polarity, subject]`` under ``method``, and its gate rates."""
    texts, n_answer = _texts(ctx, inputs.unqover)
    scored = ctx.text_scores(method, texts, "UNQOVER")
    lp = torch.stack(
        [
            lps[-k:].sum() if k > 0 else lps.new_zeros(())
            for lps, k in zip(scored.logprobs, n_answer, strict=True)
        ]
    ).double()
    pairs = lp.view(-1, 2)  # [instance x order x polarity, subject]
    return torch.softmax(pairs, dim=-1).view(-1, 2, 2, 2).numpy(), gate_rates(scored.gate_fired)


def _base_scores(ctx: PanelContext, inputs: PanelInputs) -> np.ndarray:
    """The unsteered model's scores, computed once per panel (for the paired change of mu)."""
    if "unqover/base" not in ctx.scorers:
        ctx.scorers["unqover/base"] = _scores(ctx, "base", inputs)[0]
    return ctx.scorers["unqover/base"]


def run_unqover(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """UNQOVER metrics of ``method`` (mu with bootstrap intervals; for a method other than base,
    the paired change of mu), with its gate rates."""
    if method == "base":
        s, (texts_rate, tokens_rate) = _base_scores(ctx, inputs), (None, None)
        base = None
    else:
        s, (texts_rate, tokens_rate) = _scores(ctx, method, inputs)
        base = _base_scores(ctx, inputs)
    return {
        "metrics": unqover_metrics(inputs.unqover, s, base_scores=base),
        "mean_p_first_listed": float(np.mean(s[:, :, :, 0])),
        "gate_rate_texts": texts_rate,
        "gate_rate_tokens": tokens_rate,
    }


def load_unqover_inputs(
    data_dir: str | Path, n_per_dataset: int = 25, *, seed: int = 0
) -> list[UnqoverInstance]:
    """``n_per_dataset`` seeded instances of each UNQOVER dataset (gender, nationality, ethnicity,
    religion) from ``data_dir/unqover``."""
    return [
        inst
        for dataset in UNQOVER_DATASETS
        for inst in generate_unqover(data_dir, dataset, n_per_dataset, seed=seed)
    ]


UNQOVER_SUITE = Suite(
    name="unqover",
    missing=lambda inputs: None if inputs.unqover else "unqover",
    announce=lambda inputs: f"UNQOVER on {len(inputs.unqover)} instances (x4 questions)",
    run=run_unqover,
    settings=("unqover_per_dataset",),
    sizes=lambda inputs: {"unqover": len(inputs.unqover)},
)
