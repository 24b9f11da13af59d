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

from fairlens.backend import encode, is_hooked
from fairlens.data import BBQItem, PromptFormat
from fairlens.errors import ConfigError
from fairlens.evaluate.context import PanelContext, PanelInputs, Suite
from fairlens.scoring.bbq_protocols import score_lm_eval
from fairlens.scoring.calibration import LetterPrior
from fairlens.scoring.letters import build_prompts, letter_token_ids, score_items
from fairlens.scoring.metrics import bbq_metrics, paired_by_context
from fairlens.scoring.prefix_cache import make_scorer
from fairlens.search.variants import check_scorer
from fairlens.steer.interventions import METHODS, method_instruction


def _format(ctx: PanelContext) -> PromptFormat:
    """The BBQ prompt format: 8-shot under the ``fairsteer-8shot`` protocol, else the run's."""
    return (
        "few_shot" if ctx.settings.bbq_protocol == "fairsteer-8shot" else ctx.settings.prompt_format
    )


def _cacheable(ctx: PanelContext, method: str) -> bool:
    """Whether ``method`` is read off the prefix cache (letter scoring, FairSteer protocols)."""
    if ctx.settings.scoring != "letter" or ctx.settings.bbq_protocol == "lm-eval":
        return False
    return ctx.cacheable(method)


def _reads_letters(ctx: PanelContext) -> bool:
    return ctx.settings.bbq_protocol != "lm-eval"


def _scorer(
    ctx: PanelContext, kind: str, items: Sequence[BBQItem], shots: Sequence[BBQItem] | None
) -> Any:
    """The prefix cache of ``kind`` prompts (``"plain"``, ``"prompt"``; ``"calibration"``: the
    plain prompts of the calibration items, base pass only), built once per run."""
    if kind not in ctx.scorers:
        hooks = [] if ctx.fairsteer is None else [ctx.fairsteer.hook_name_]
        instruction = method_instruction(kind) if kind in METHODS else None
        prompts = build_prompts(items, _format(ctx), ctx.tokenizer, shots, instruction)
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


def _prior(ctx: PanelContext, inputs: PanelInputs, cached: bool) -> LetterPrior:
    """The letter prior: mean letter logits (or option scores) of the unsteered model over the
    calibration split, with the eval prompts' format, shots and scoring."""
    if not inputs.bbq_calibration:
        raise ConfigError(
            "the 'calibrated' method needs BBQ calibration items (the selection split).",
            "pass bbq_calibration=<selection-split items> (fairlens run passes its selection split).",
        )
    key = f"bbq/letter-prior/{'cached' if cached else 'full'}"
    if key not in ctx.scorers:
        if cached:
            scores = _scorer(ctx, "calibration", inputs.bbq_calibration, inputs.shots).base_logits
        else:
            scores = _score(ctx, inputs.bbq_calibration, inputs.shots, None).scores
        ctx.scorers[key] = LetterPrior.fit(scores)
    return ctx.scorers[key]


def _score(
    ctx: PanelContext,
    items: Sequence[BBQItem],
    shots: Sequence[BBQItem] | None,
    instruction: str | None,
) -> Any:
    return score_items(
        ctx.model,
        items,
        mode=ctx.settings.scoring,
        prompt_format=_format(ctx),
        shots=shots,
        tokenizer=None if is_hooked(ctx.model) else ctx.tokenizer,
        batch_size=ctx.settings.batch_size,
        progress=ctx.progress,
        instruction=instruction,
    )


def _cached(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    items = inputs.bbq_items
    kind = "prompt" if method == "prompt" else "plain"
    logits, fire = ctx.composed_logits(method, _scorer(ctx, kind, items, inputs.shots), kind)
    extra: dict[str, Any] = {}
    if METHODS[method].letter_prior:
        prior = _prior(ctx, inputs, cached=True)
        logits = prior.apply(logits)
        extra["letter_prior"] = prior.to_dict()
    preds = logits.argmax(-1)
    amb = np.array([it.is_ambiguous for it in items])
    f = None if fire is None else fire.numpy()
    return {
        "gate_rate": None if f is None else float(f.mean()),
        "gate_rate_ambig": None if f is None or not amb.any() else float(f[amb].mean()),
        "gate_rate_disambig": None if f is None or amb.all() else float(f[~amb].mean()),
        "prefix_cached": True,
        **extra,
        "metrics": bbq_metrics(items, preds).to_dict(),
        "_predictions": preds,
    }


def run_bbq(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """BBQ metrics of ``method`` under the run's protocol (prefix-cached where exact, else full
    runs under its hooks), with Wilson intervals of both accuracies and, for every method but
    base, the paired comparison with base on the ambiguous and the disambiguated items (bootstrap
    gain, McNemar's p)."""
    out = _run_bbq(ctx, method, inputs)
    preds = out.pop("_predictions")
    ctx.scorers[f"bbq/predictions/{method}"] = preds
    if method == "base":
        base = preds
    else:
        if "bbq/predictions/base" not in ctx.scorers:  # a resumed panel: base again, once
            ctx.scorers["bbq/predictions/base"] = _run_bbq(ctx, "base", inputs)["_predictions"]
        base = ctx.scorers["bbq/predictions/base"]
    out["intervals"] = _intervals(inputs.bbq_items, base, preds, method == "base")
    return out


def _intervals(items: Sequence[BBQItem], base: Any, preds: Any, is_base: bool) -> dict[str, Any]:
    """Per context condition: the method's Wilson interval, and (but for base) the paired
    comparison with base."""
    out: dict[str, Any] = {}
    for part, cmp in paired_by_context(items, base, preds).items():
        empty = cmp["n"] == 0
        out[part] = {
            "ci": None if empty else cmp["method_ci"],
            "vs_base": None if is_base or empty else cmp,
        }
    return out


def _run_bbq(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
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
    with ctx.context(method, ctx.model, ctx.positions()) as stats:
        res = _score(ctx, inputs.bbq_items, inputs.shots, method_instruction(method))
    preds, extra = res.predictions, {}
    if METHODS[method].letter_prior:
        prior = _prior(ctx, inputs, cached=False)
        preds = prior.apply(res.scores).argmax(-1)
        extra["letter_prior"] = prior.to_dict()
    return {
        "protocol": protocol,
        "gate_rate": None if stats is None else stats.rate,
        "prefix_cached": False,
        **extra,
        "metrics": bbq_metrics(inputs.bbq_items, preds).to_dict(),
        "_predictions": preds,
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
        "_predictions": preds,
    }


BBQ_SUITE = Suite(
    name="bbq",
    missing=lambda inputs: None if inputs.bbq_items else "bbq_items",
    announce=lambda inputs: f"BBQ on {len(inputs.bbq_items)} items",
    run=run_bbq,
    settings=("scoring", "prompt_format", "bbq_protocol", "bbq_metrics"),
    reads_letters=_reads_letters,
    calibration_missing=lambda inputs: None if inputs.bbq_calibration else "bbq_calibration",
    sizes=lambda inputs: {
        "bbq": len(inputs.bbq_items),
        "bbq_ambig": sum(it.is_ambiguous for it in inputs.bbq_items),
    },
)
