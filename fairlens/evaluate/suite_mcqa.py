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
from typing import Any

import numpy as np
import torch

from fairlens.backend import encode, is_hooked
from fairlens.data.mcqa import MCItem, load_arc, load_openbookqa, mmlu_items, sample_mc
from fairlens.data.mmlu import load_mmlu
from fairlens.evaluate.context import PanelContext, PanelInputs, Suite
from fairlens.models import get_model_info
from fairlens.scoring.multiple_choice import mc_letter_ids, mc_prompts, score_mc
from fairlens.scoring.prefix_cache import make_scorer
from fairlens.stats import compare, wilson
from fairlens.steer.interventions import method_instruction
from fairlens.steer.steerer import PositionPolicy

MC_SUITES: tuple[str, ...] = ("mmlu", "arc_easy", "arc_challenge", "openbookqa")
"""The multiple-choice suites (each reads ``PanelInputs.mc[name]``)."""

_TITLES = {
    "mmlu": "MMLU (5-shot)",
    "arc_easy": "ARC-Easy",
    "arc_challenge": "ARC-Challenge",
    "openbookqa": "OpenBookQA",
}


def _positions(ctx: PanelContext) -> PositionPolicy:
    return ctx.fairsteer.config.steer_positions if ctx.fairsteer is not None else "generated"


def _masked_best(logits: torch.Tensor, items: Sequence[MCItem]) -> torch.Tensor:
    """The best letter of each question among its own options."""
    n = torch.tensor([len(it.choices) for it in items])
    cols = torch.arange(logits.shape[1])[None, :]
    return logits.float().masked_fill(cols >= n[:, None], float("-inf")).argmax(-1)


def _cacheable(ctx: PanelContext, method: str) -> bool:
    """Whether ``method`` only touches the last prompt position (the prefix cache applies)."""
    if is_hooked(ctx.model):
        return False
    if method in ("base", "prompt"):
        return True
    fs = ctx.fairsteer
    return (
        method in ("static", "fairsteer")
        and fs is not None
        and _positions(ctx) in ("generated", "last_prompt")
        and fs.config.scope != "all"
    )


def _prompts(ctx: PanelContext, name: str, inputs: PanelInputs, method: str) -> list[str]:
    shots = inputs.mc_shots if name == "mmlu" else ()
    return mc_prompts(inputs.mc[name], ctx.tokenizer, shots, instruction=method_instruction(method))


def _scorer(ctx: PanelContext, name: str, inputs: PanelInputs, kind: str) -> Any:
    """The prefix cache of suite ``name``'s ``kind`` prompts (plain or instructed), built once:
    shots and question run once for every method."""
    key = f"mc/{name}/{kind}"
    if key not in ctx.scorers:
        items = inputs.mc[name]
        ctx.scorers[key] = make_scorer(
            ctx.model,
            encode(ctx.tokenizer, _prompts(ctx, name, inputs, kind)),
            read_ids=mc_letter_ids(ctx.tokenizer, max(len(it.choices) for it in items)),
            capture=[] if ctx.fairsteer is None else [ctx.fairsteer.hook_name_],
            tokenizer=ctx.tokenizer,
            batch_size=ctx.settings.batch_size,
            progress=ctx.progress,
            desc=f"{name} prefix pass ({kind} prompts)",
            uids=[it.uid for it in items],
            keep_cache=kind == "plain",
        )
    return ctx.scorers[key]


def _answers(
    ctx: PanelContext, name: str, method: str, inputs: PanelInputs
) -> tuple[torch.Tensor, float | None, bool]:
    """(answers, gate rate, prefix-cached) of ``method`` on suite ``name``."""
    items = inputs.mc[name]
    if _cacheable(ctx, method):
        scorer = _scorer(ctx, name, inputs, "prompt" if method == "prompt" else "plain")
        base = _masked_best(scorer.base_logits, items)
        if method in ("base", "prompt"):
            return base, None, True
        fs = ctx.fairsteer
        assert fs is not None
        get_model_info(ctx.model).check_matches(fs.model_info_.fingerprint(), what="FairSteer")
        static = _masked_best(scorer.logits([fs.last_position_edit()])[0], items)
        if method == "static":
            return static, 1.0, True
        fire = fs.gate_fires(scorer.base_acts)
        return torch.where(fire, static, base), float(fire.float().mean()), True
    with ctx.context(method, ctx.model, _positions(ctx)) as stats:
        preds = score_mc(
            ctx.model,
            ctx.tokenizer,
            items,
            _prompts(ctx, name, inputs, method),
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


def _accuracy(correct: np.ndarray) -> dict[str, Any]:
    n, k = int(correct.size), int(correct.sum())
    return {"n": n, "accuracy": k / n if n else None, "ci": list(wilson(k, n)) if n else None}


def run_mc(name: str, ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """Accuracy, side-effect rate and the paired comparison with base of ``method`` on ``name``."""
    items: Sequence[MCItem] = inputs.mc[name]
    gold = torch.tensor([it.answer for it in items])
    base = _base(ctx, name, inputs)
    if method == "base":
        preds, rate, cached = base, None, _cacheable(ctx, method)
    else:
        preds, rate, cached = _answers(ctx, name, method, inputs)
    correct = (preds == gold).numpy()
    out: dict[str, Any] = {
        **_accuracy(correct),
        "side_effect_rate": None if method == "base" else float((preds != base).float().mean()),
        "vs_base": None if method == "base" else compare((base == gold).numpy(), correct),
        "gate_rate": rate,
        "prefix_cached": cached,
    }
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
    mc: dict[str, list[MCItem]] = {}
    shots: list[MCItem] = []
    for name in suites:
        if name == "mmlu":
            test = mmlu_items(load_mmlu(data_dir, "test"))
            mc[name] = sample_mc(test, mmlu_per_subject, seed=seed)
            shots = mmlu_items(load_mmlu(data_dir, "dev"))
        elif name in ("arc_easy", "arc_challenge"):
            subset = "easy" if name == "arc_easy" else "challenge"
            mc[name] = sample_mc(load_arc(data_dir, subset, "test"), questions, seed=seed)
        elif name == "openbookqa":
            mc[name] = sample_mc(load_openbookqa(data_dir, "test"), questions, seed=seed)
    return mc, shots


def _suite(name: str) -> Suite:
    return Suite(
        name=name,
        missing=lambda inputs: None if inputs.mc.get(name) else f"mc[{name!r}]",
        announce=lambda inputs: f"{_TITLES[name]} on {len(inputs.mc.get(name, ()))} questions",
        run=lambda ctx, method, inputs: run_mc(name, ctx, method, inputs),
        sizes=lambda inputs: {name: len(inputs.mc.get(name, ()))},
    )


MC_SUITE_ENTRIES: tuple[Suite, ...] = tuple(_suite(name) for name in MC_SUITES)
