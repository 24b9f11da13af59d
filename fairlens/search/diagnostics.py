"""What the search reports beside its grid: the chosen variants scored once on the eval split, the
gates' label diagnostics, and the activation-patching ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fairlens.backend import hook_name
from fairlens.data import BBQItem
from fairlens.errors import ConfigError
from fairlens.scoring.metrics import bbq_metrics, paired_by_context
from fairlens.scoring.variant_scorer import Edit, VariantScorer
from fairlens.search.space import (
    Variant,
)
from fairlens.search.variants import (
    _row,
    check_scorer,
    score_variants,
)
from fairlens.steer.fit_data import FitData
from fairlens.steer.interventions import DEBIAS_INSTRUCTION


def evaluate_variants(
    fit: FitData,
    items: Sequence[BBQItem],
    variants: Sequence[Variant],
    *,
    progress: bool = False,
) -> tuple[dict[str, dict[str, Any]], VariantScorer, VariantScorer]:
    """Score base, the prompting baseline and ``variants`` once on ``items`` (the eval split).

    Returns ``({key: result}, plain scorer, instructed scorer)``; each result has the pooled
    metrics, gate rates by context condition, and ``vs_base``: for ambiguous and disambiguated
    items, Wilson intervals, the paired bootstrap interval of the gain and McNemar's p.
    """
    items = list(items)
    scorer = fit.build_scorer(items, desc="eval prefix pass")
    base_row, rows, preds, _ = score_variants(
        fit, items, variants, scorer=scorer, progress=progress
    )
    instructed = fit.build_scorer(
        items, instruction=DEBIAS_INSTRUCTION, keep_cache=False, desc="eval instructed pass"
    )
    base_preds = scorer.base_logits.argmax(-1).numpy()
    prompt_preds = instructed.base_logits.argmax(-1).numpy()
    out = {
        "base": _eval_entry(items, base_preds, base_preds, base_row),
        "prompt": _eval_entry(
            items,
            prompt_preds,
            base_preds,
            {**_row(items, prompt_preds, base_preds), "key": "prompt"},
        ),
    }
    for row in rows:
        out[row["key"]] = _eval_entry(items, preds[row["key"]], base_preds, row)
    return out, scorer, instructed


def _eval_entry(
    items: Sequence[BBQItem], preds: np.ndarray, base_preds: np.ndarray, row: dict[str, Any]
) -> dict[str, Any]:
    return {
        **row,
        "vs_base": paired_by_context(items, base_preds, preds),
        "metrics": bbq_metrics(items, preds).to_dict(),
    }


def gate_diagnostics(fit: FitData) -> dict[str, Any]:
    """Label composition of the BAD classes and the three gates' layer sweeps (or why not)."""
    from fairlens.detect.gates import GATES, label_composition

    sweeps: dict[str, Any] = {}
    for name in GATES:
        result = fit.gate_or_reason(name)
        sweeps[name] = {"unavailable": result} if isinstance(result, str) else result.to_dict()
    return {
        "composition": label_composition(fit.probe_items, fit.predictions),
        "gates": sweeps,
    }


def patching_ceiling(
    fit: FitData,
    items: Sequence[BBQItem],
    scorer: VariantScorer,
    *,
    instructed: VariantScorer | None = None,
) -> dict[str, Any]:
    """Per layer: write the instructed prompt's ``:`` residual into the plain prompt.

    The accuracy reached by patching at layer ``l`` is what any intervention on that single position
    at that layer could reach *by making the model's state there equal the instructed one*; it is a
    reference for how much of the instruction's effect one position at one layer carries.
    """
    items = list(items)
    hooks = [hook_name(fit.hook_kind, v) for v in fit.layers]
    instr: VariantScorer = (
        instructed
        if instructed is not None
        else fit.build_scorer(
            items, instruction=DEBIAS_INSTRUCTION, keep_cache=False, desc="instructed pass"
        )
    )
    check_scorer(scorer, items)
    check_scorer(instr, items)
    missing = [h for h in hooks if h not in scorer.base_acts or h not in instr.base_acts]
    if missing:
        raise ConfigError(
            f"patching needs the activations at {missing} in both scorers.",
            "build both scorers with fit.build_scorer(...), which captures every fitted layer.",
        )
    edits: list[Edit] = [{h: instr.base_acts[h] - scorer.base_acts[h]} for h in hooks]
    logits = scorer.logits(edits)
    base_preds = scorer.base_logits.argmax(-1).numpy()
    per_layer = []
    for layer, lg in zip(fit.layers, logits, strict=True):
        row = _row(items, lg.argmax(-1).numpy(), base_preds)
        per_layer.append({"layer": layer, **row})
    prompt = _row(items, instr.base_logits.argmax(-1).numpy(), base_preds)
    return {
        "n": len(items),
        "base": _row(items, base_preds, base_preds),
        "prompt": prompt,
        "per_layer": per_layer,
    }
