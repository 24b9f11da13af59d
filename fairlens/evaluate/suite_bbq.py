"""The panel's BBQ suite: accuracy and bias scores on the template-disjoint eval split.

Steering follows the FairSteer position policy (the answer position). With letter scoring on the
plain transformers model, ``base``, ``prompt``, ``static`` and ``fairsteer`` come from two
prefix-cached passes (plain and instructed prompts): the steered answers are one-token forwards and
the dynamic one is composed from the static and base answers where the gate fires (exact; tested
against full runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fairlens.backend import encode, is_hooked
from fairlens.data import BBQItem, PromptFormat
from fairlens.errors import ConfigError
from fairlens.evaluate.context import PanelContext, PanelInputs, Suite
from fairlens.models import get_model_info
from fairlens.scoring.bbq_protocols import score_lm_eval
from fairlens.scoring.letters import build_prompts, letter_token_ids, score_items
from fairlens.scoring.metrics import bbq_metrics
from fairlens.scoring.prefix_cache import make_scorer
from fairlens.search.variants import check_scorer
from fairlens.steer.interventions import method_instruction
from fairlens.steer.steerer import PositionPolicy


def _positions(ctx: PanelContext) -> PositionPolicy:
    return ctx.fairsteer.config.steer_positions if ctx.fairsteer is not None else "generated"


def _format(ctx: PanelContext) -> PromptFormat:
    """The BBQ prompt format: 8-shot under the ``fairsteer-8shot`` protocol, else the run's."""
    return (
        "few_shot" if ctx.settings.bbq_protocol == "fairsteer-8shot" else ctx.settings.prompt_format
    )


def _cacheable(ctx: PanelContext, method: str) -> bool:
    """Whether ``method`` only touches the last prompt position (the prefix cache applies)."""
    if is_hooked(ctx.model) or ctx.settings.scoring != "letter":
        return False
    if ctx.settings.bbq_protocol == "lm-eval":
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


def _scorer(
    ctx: PanelContext, kind: str, items: Sequence[BBQItem], shots: Sequence[BBQItem] | None
) -> Any:
    """The prefix cache of ``kind`` prompts (``"plain"`` or ``"prompt"``), built once per run."""
    if kind not in ctx.scorers:
        hooks = [] if ctx.fairsteer is None else [ctx.fairsteer.hook_name_]
        prompts = build_prompts(items, _format(ctx), ctx.tokenizer, shots, method_instruction(kind))
        ctx.scorers[kind] = make_scorer(
            ctx.model,
            encode(ctx.tokenizer, prompts),
            read_ids=letter_token_ids(ctx.tokenizer),
            capture=hooks,
            tokenizer=ctx.tokenizer,
            batch_size=ctx.settings.batch_size,
            progress=ctx.progress,
            desc=f"BBQ prefix pass ({kind} prompts)",
            uids=[it.uid for it in items],
            keep_cache=kind == "plain",
        )
    scorer = ctx.scorers[kind]
    check_scorer(scorer, items)
    return scorer


def _cached(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    items = inputs.bbq_items
    scorer = _scorer(ctx, "prompt" if method == "prompt" else "plain", items, inputs.shots)
    base = scorer.base_logits.argmax(-1)
    fire = None
    if method in ("base", "prompt"):
        preds = base
    else:
        fs = ctx.fairsteer
        assert fs is not None
        get_model_info(ctx.model).check_matches(fs.model_info_.fingerprint(), what="FairSteer")
        static = scorer.logits([fs.last_position_edit()])[0].argmax(-1)
        fire = (
            torch.ones(len(items), dtype=torch.bool)
            if method == "static"
            else fs.gate_fires(scorer.base_acts)
        )
        preds = torch.where(fire, static, base)
    amb = np.array([it.is_ambiguous for it in items])
    f = None if fire is None else fire.numpy()
    return {
        "gate_rate": None if f is None else float(f.mean()),
        "gate_rate_ambig": None if f is None or not amb.any() else float(f[amb].mean()),
        "gate_rate_disambig": None if f is None or amb.all() else float(f[~amb].mean()),
        "prefix_cached": True,
        "metrics": bbq_metrics(items, preds).to_dict(),
    }


def run_bbq(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """BBQ metrics of ``method`` under the run's protocol (prefix-cached where exact, else full
    runs under its hooks)."""
    protocol = ctx.settings.bbq_protocol
    if protocol == "fairsteer-8shot" and not inputs.shots:
        raise ConfigError(
            "the fairsteer-8shot protocol needs 8 solved BBQ examples (shots).",
            "pass shots=few_shot_examples(...) (fairlens run draws them from the shots split).",
        )
    if protocol == "lm-eval":
        return {"protocol": protocol, **_lm_eval(ctx, method, inputs)}
    if _cacheable(ctx, method):
        return {"protocol": protocol, **_cached(ctx, method, inputs)}
    with ctx.context(method, ctx.model, _positions(ctx)) as stats:
        res = score_items(
            ctx.model,
            inputs.bbq_items,
            mode=ctx.settings.scoring,
            prompt_format=_format(ctx),
            shots=inputs.shots,
            tokenizer=None if is_hooked(ctx.model) else ctx.tokenizer,
            batch_size=ctx.settings.batch_size,
            progress=ctx.progress,
            instruction=method_instruction(method),
        )
    return {
        "protocol": protocol,
        "gate_rate": None if stats is None else stats.rate,
        "prefix_cached": False,
        "metrics": bbq_metrics(inputs.bbq_items, res.predictions).to_dict(),
    }


def _lm_eval(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """The ``lm-eval`` protocol: answer texts scored by log-likelihood, steering (and the gate)
    at every position, as for fairlens' other likelihood scoring."""
    with ctx.context(method, ctx.model, "all") as stats:
        preds = score_lm_eval(
            ctx.model,
            ctx.tokenizer,
            inputs.bbq_items,
            instruction=method_instruction(method),
            batch_size=ctx.settings.batch_size,
            progress=ctx.progress,
        )
    return {
        "gate_rate": None if stats is None else stats.rate,
        "prefix_cached": False,
        "metrics": bbq_metrics(inputs.bbq_items, preds).to_dict(),
    }


BBQ_SUITE = Suite(
    name="bbq",
    missing=lambda inputs: None if inputs.bbq_items else "bbq_items",
    announce=lambda inputs: f"BBQ on {len(inputs.bbq_items)} items",
    run=run_bbq,
    sizes=lambda inputs: {
        "bbq": len(inputs.bbq_items),
        "bbq_ambig": sum(it.is_ambiguous for it in inputs.bbq_items),
    },
)
