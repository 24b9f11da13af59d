"""The panel's multiple-choice utility suites: MMLU (5-shot from dev), ARC-Easy, ARC-Challenge and
OpenBookQA (zero-shot), as the FairSteer paper measures utility.

Every method answers the same questions under its intervention (steering at the FairSteer position
policy: the answer position), read as the best option letter. On the plain transformers model the
methods that touch only the answer position (base, prompt, static, FairSteer) are read off a prefix
cache, as in the BBQ suite: the shots and the question run once (twice with the prompting
baseline's instruction), each steered answer is a one-token forward, and the gated answer is
composed from the static and base ones where the gate fires (exact; tested against full runs). Beside each accuracy (with its Wilson
interval) the suite reports the **side-effect rate**: the share of questions whose answer differs
from the unsteered model's, and the paired comparison with base (bootstrap gain, McNemar's p). MMLU
also reports per-subject accuracy and the mean over subjects. The base answers are computed once
per panel (shared by all methods through the context's cache), so suites and methods run in any
order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from fairlens.backend import encode, is_hooked
from fairlens.data.mcqa import MCItem, load_arc, load_openbookqa, mmlu_items, sample_mc
from fairlens.data.mmlu import load_mmlu
from fairlens.errors import ConfigError
from fairlens.evaluate.context import PanelContext, PanelInputs, Suite
from fairlens.scoring.calibration import LetterPrior
from fairlens.scoring.multiple_choice import mc_letter_ids, mc_prompts, score_mc
from fairlens.scoring.prefix_cache import make_scorer
from fairlens.stats import compare, proportion
from fairlens.steer.interventions import METHODS, method_instruction

MC_SUITES: tuple[str, ...] = ("mmlu", "arc_easy", "arc_challenge", "openbookqa")
"""The multiple-choice suites (each reads ``PanelInputs.mc[name]``)."""

_TITLES = {
    "mmlu": "MMLU (5-shot)",
    "arc_easy": "ARC-Easy",
    "arc_challenge": "ARC-Challenge",
    "openbookqa": "OpenBookQA",
}


def _masked_best(logits: torch.Tensor, items: Sequence[MCItem]) -> torch.Tensor:
    """The best letter of each question among its own options."""
    n = torch.tensor([len(it.choices) for it in items])
    cols = torch.arange(logits.shape[1])[None, :]
    return logits.float().masked_fill(cols >= n[:, None], float("-inf")).argmax(-1)


def _prompts(
    ctx: PanelContext, items: Sequence[MCItem], shots: Sequence[MCItem], method: str
) -> list[str]:
    instruction = method_instruction(method) if method in METHODS else None
    return mc_prompts(items, ctx.tokenizer, shots, instruction=instruction)


def _scorer(ctx: PanelContext, name: str, inputs: PanelInputs, kind: str) -> Any:
    """The prefix cache of suite ``name``'s ``kind`` prompts (``"plain"``, ``"prompt"``:
    instructed; ``"calibration"``: the calibration questions, base pass only), built once: shots
    and question run once for every method."""
    key = f"mc/{name}/{kind}"
    if key not in ctx.scorers:
        items = inputs.mc_calibration[name] if kind == "calibration" else inputs.mc[name]
        shots = inputs.mc_shots if name == "mmlu" else ()
        ctx.scorers[key] = make_scorer(
            ctx.model,
            encode(ctx.tokenizer, _prompts(ctx, items, shots, kind)),
            read_ids=mc_letter_ids(ctx.tokenizer, _n_letters(inputs, name)),
            capture=[]
            if ctx.fairsteer is None or kind == "calibration"
            else [ctx.fairsteer.hook_name_],
            tokenizer=ctx.tokenizer,
            batch_size=ctx.settings.batch_size,
            progress=ctx.progress,
            desc=f"{name} prefix pass ({kind} prompts)",
            uids=[it.uid for it in items],
            keep_cache=kind == "plain",
        )
    return ctx.scorers[key]


def _n_letters(inputs: PanelInputs, name: str) -> int:
    """Letters read for suite ``name``: the most options of any scored or calibration question."""
    items = [*inputs.mc[name], *inputs.mc_calibration.get(name, ())]
    return max(len(it.choices) for it in items)


def _prior(ctx: PanelContext, name: str, inputs: PanelInputs) -> LetterPrior:
    """Suite ``name``'s letter prior: the unsteered model's mean letter logits over its
    calibration questions (each letter over the questions that offer it)."""
    key = f"mc/{name}/letter-prior"
    if key not in ctx.scorers:
        calib = inputs.mc_calibration.get(name)
        if not calib:
            raise ConfigError(
                f"the 'calibrated' method needs calibration questions for {name!r}.",
                f"pass mc_calibration={{{name!r}: <dev-split questions>}} (load_mc_inputs).",
            )
        scorer = _scorer(ctx, name, inputs, "calibration")
        ctx.scorers[key] = LetterPrior.fit(scorer.base_logits, [len(it.choices) for it in calib])
    return ctx.scorers[key]


def _answers(
    ctx: PanelContext, name: str, method: str, inputs: PanelInputs
) -> tuple[torch.Tensor, float | None, bool]:
    """(answers, gate rate, prefix-cached) of ``method`` on suite ``name``."""
    items = inputs.mc[name]
    entry = METHODS[method]
    if ctx.cacheable(method) or entry.letter_prior:  # calibration: the model is unchanged
        kind = "prompt" if method == "prompt" else "plain"
        logits, fire = ctx.composed_logits(method, _scorer(ctx, name, inputs, kind), f"mc/{name}")
        if entry.letter_prior:
            logits = _prior(ctx, name, inputs).apply(logits)
        rate = None if fire is None else float(fire.float().mean())
        return _masked_best(logits, items), rate, not is_hooked(ctx.model)
    shots = inputs.mc_shots if name == "mmlu" else ()
    with ctx.context(method, ctx.model, ctx.positions()) as stats:
        preds = score_mc(
            ctx.model,
            ctx.tokenizer,
            items,
            _prompts(ctx, items, shots, method),
            batch_size=ctx.settings.batch_size,
            progress=ctx.progress,
            desc=f"{name} [{method}]",
        )
    return preds, None if stats is None else stats.rate, False


def _base(ctx: PanelContext, name: str, inputs: PanelInputs) -> torch.Tensor:
    key = f"mc-base/{name}"
    if key not in ctx.scorers:
        ctx.scorers[key] = _answers(ctx, name, "base", inputs)[0]
    return ctx.scorers[key]


def run_mc(name: str, ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """Accuracy, side-effect rate and the paired comparison with base of ``method`` on ``name``."""
    items: Sequence[MCItem] = inputs.mc[name]
    gold = torch.tensor([it.answer for it in items])
    base = _base(ctx, name, inputs)
    if method == "base":
        preds, rate, cached = base, None, ctx.cacheable(method)
    else:
        preds, rate, cached = _answers(ctx, name, method, inputs)
    correct = (preds == gold).numpy()
    out: dict[str, Any] = {
        **proportion(correct),
        "side_effect_rate": None if method == "base" else float((preds != base).float().mean()),
        "vs_base": None if method == "base" else compare((base == gold).numpy(), correct),
        "gate_rate": rate,
        "prefix_cached": cached,
    }
    if METHODS[method].letter_prior:
        out["letter_prior"] = _prior(ctx, name, inputs).to_dict()
    if name == "mmlu":
        by_subject: dict[str, list[bool]] = defaultdict(list)
        for it, ok in zip(items, correct.tolist(), strict=True):
            by_subject[it.subject or "?"].append(bool(ok))
        per = {s: float(np.mean(v)) for s, v in sorted(by_subject.items())}
        out["per_subject"] = per
        out["subject_mean"] = float(np.mean(list(per.values())))
    return out


def load_mc_inputs(
    data_dir: str | Path,
    suites: Sequence[str],
    *,
    mmlu_per_subject: int | None = 2,
    questions: int | None = 100,
    seed: int = 0,
) -> tuple[dict[str, list[MCItem]], list[MCItem]]:
    """The questions of the multiple-choice suites among ``suites`` (test splits, seeded samples)
    and MMLU's dev shots.

    Args:
        data_dir: Folder holding ``mmlu/``, ``arc/`` and ``openbookqa/``.
        suites: Suite names; only the multiple-choice ones are loaded.
        mmlu_per_subject: MMLU test questions per subject (None: all 14,042).
        questions: Questions per ARC / OpenBookQA suite (None: the whole test split).
        seed: Sampling seed.
    """
    mc = _sample_splits(data_dir, suites, "test", mmlu_per_subject, questions, seed)
    shots = mmlu_items(load_mmlu(data_dir, "dev")) if "mmlu" in mc else []
    return mc, shots


def _sample_splits(
    data_dir: str | Path,
    suites: Sequence[str],
    split: Literal["test", "dev"],
    mmlu_per_subject: int | None,
    questions: int | None,
    seed: int,
) -> dict[str, list[MCItem]]:
    """Seeded samples of each multiple-choice suite among ``suites`` from ``split`` (``"dev"``:
    MMLU's validation split, whose dev split holds the shots; ARC's and OpenBookQA's dev)."""
    out: dict[str, list[MCItem]] = {}
    for name in suites:
        if name == "mmlu":
            rows = mmlu_items(load_mmlu(data_dir, "val" if split == "dev" else split))
            out[name] = sample_mc(rows, mmlu_per_subject, seed=seed)
        elif name in ("arc_easy", "arc_challenge"):
            subset = "easy" if name == "arc_easy" else "challenge"
            out[name] = sample_mc(load_arc(data_dir, subset, split), questions, seed=seed)
        elif name == "openbookqa":
            out[name] = sample_mc(load_openbookqa(data_dir, split), questions, seed=seed)
    return out


def load_mc_calibration(
    data_dir: str | Path,
    suites: Sequence[str],
    *,
    mmlu_per_subject: int | None = 2,
    questions: int | None = 100,
    seed: int = 0,
) -> dict[str, list[MCItem]]:
    """The calibration questions of the multiple-choice suites among ``suites`` (for the
    ``calibrated`` method's letter priors): MMLU validation, ARC and OpenBookQA dev splits, drawn
    with the same sizes as the scored test samples (disjoint from them and from MMLU's dev shots)."""
    return _sample_splits(data_dir, suites, "dev", mmlu_per_subject, questions, seed)


def _suite(name: str) -> Suite:
    return Suite(
        name=name,
        missing=lambda inputs: None if inputs.mc.get(name) else f"mc[{name!r}]",
        announce=lambda inputs: f"{_TITLES[name]} on {len(inputs.mc.get(name, ()))} questions",
        run=lambda ctx, method, inputs: run_mc(name, ctx, method, inputs),
        reads_letters=lambda ctx: True,
        calibration_missing=lambda inputs: (
            None if inputs.mc_calibration.get(name) else f"mc_calibration[{name!r}]"
        ),
        sizes=lambda inputs: {name: len(inputs.mc.get(name, ()))},
        settings=("mmlu_per_subject",) if name == "mmlu" else ("mc_questions",),
    )


MC_SUITE_ENTRIES: tuple[Suite, ...] = tuple(_suite(name) for name in MC_SUITES)
