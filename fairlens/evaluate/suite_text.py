"""The panel's text suites: CrowS-Pairs (stereotype score) and utility (perplexity on real text).

Both score whole texts with steering and the gate at every position. The CrowS-Pairs suite also
reports the perplexity of the less-stereotyping sentences (real English, at no extra cost); the
report shows it beside the utility corpora, but neither suite reads the other's results.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fairlens.evaluate.context import PanelContext, PanelInputs, Suite, gate_rates
from fairlens.evaluate.crows import CrowsScores, crows_metrics, crows_texts
from fairlens.scoring.likelihood import TextScores
from fairlens.stats import compare


def _stereotyped(scored: TextScores, k: int) -> np.ndarray:
    """Per pair: whether the more-stereotyping sentence is the more likely one (what the
    stereotype score counts), from the scores of :func:`crows_texts`."""
    sums = scored.sums
    return (sums[:k] > sums[k:]).numpy()


def _base_stereotyped(ctx: PanelContext, inputs: PanelInputs) -> np.ndarray:
    """The unsteered model's per-pair outcomes, computed once per panel (for the paired test)."""
    if "crows/base" not in ctx.scorers:
        pairs = inputs.crows_pairs
        scored = ctx.text_scores("base", crows_texts(pairs), "CrowS-Pairs (base)")
        ctx.scorers["crows/base"] = _stereotyped(scored, len(pairs))
    return ctx.scorers["crows/base"]


def run_crows(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """CrowS-Pairs metrics of ``method``, with its gate rates, the sent_less perplexity and, for a
    method other than base, the paired change of the stereotype score: the pairs whose preferred
    sentence flips, in either direction (McNemar's p; bootstrap interval of the change)."""
    pairs = inputs.crows_pairs
    scored = ctx.text_scores(method, crows_texts(pairs), "CrowS-Pairs")
    k = len(pairs)
    if method == "base":
        ctx.scorers.setdefault("crows/base", _stereotyped(scored, k))
    g = scored.gate_fired
    joined = None if g is None else [torch.cat([g[i], g[i + k]]) for i in range(k)]
    pairs_rate, tokens_rate = gate_rates(joined)
    less = torch.cat(list(scored.logprobs[k:]))
    less_rates = gate_rates(None if g is None else list(g[k:]))
    return {
        "sent_less": {
            "perplexity": float(torch.exp(-less.mean())),
            "gate_rate_texts": less_rates[0],
            "gate_rate_tokens": less_rates[1],
        },
        "gate_rate_tokens": tokens_rate,
        "gate_rate_pairs": pairs_rate,
        "metrics": crows_metrics(pairs, CrowsScores.from_text_scores(pairs, scored)).to_dict(),
        "vs_base": None
        if method == "base"
        else compare(_base_stereotyped(ctx, inputs), _stereotyped(scored, k)),
    }


def run_utility(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """Perplexity of ``method`` on each named corpus, and how often its gate fires there."""
    ppl: dict[str, float] = {}
    rate_texts: dict[str, float | None] = {}
    rate_tokens: dict[str, float | None] = {}
    for corpus, docs in inputs.texts.items():
        scored = ctx.text_scores(method, list(docs), f"perplexity {corpus}")
        ppl[corpus] = scored.perplexity()
        rate_texts[corpus], rate_tokens[corpus] = gate_rates(scored.gate_fired)
    return {"perplexity": ppl, "gate_rate_texts": rate_texts, "gate_rate_tokens": rate_tokens}


CROWS_SUITE = Suite(
    name="crows",
    missing=lambda inputs: None if inputs.crows_pairs else "crows_pairs",
    announce=lambda inputs: f"CrowS-Pairs on {len(inputs.crows_pairs)} pairs",
    run=run_crows,
    settings=("crows_per_type",),
    sizes=lambda inputs: {
        "crows": len(inputs.crows_pairs),
        "text_crows_sent_less": len(inputs.crows_pairs),
    },
)

UTILITY_SUITE = Suite(
    name="utility",
    missing=lambda inputs: None if inputs.texts else "texts",
    announce=lambda inputs: f"perplexity on {', '.join(inputs.texts)}",
    run=run_utility,
    settings=("text_n", "text_file"),
    sizes=lambda inputs: {f"text_{c}": len(d) for c, d in inputs.texts.items()},
)
