"""The panel's open-ended suite: greedy generation from BBQ ambiguous contexts and CrowS-Pairs
prefixes, with the gate rate per generated token, the counterfactual log-prob gap and the answer
types (:mod:`fairlens.evaluate.open_ended`). Runs on the plain transformers model (KV cache).
"""

from __future__ import annotations

from typing import Any

from fairlens.data.crows_pairs import group_prefixes
from fairlens.evaluate.context import PanelContext, PanelInputs, Suite
from fairlens.evaluate.open_ended import bbq_open_prompts, crows_open_prompts, run_open_ended
from fairlens.steer.interventions import method_instruction


def run_generation(ctx: PanelContext, method: str, inputs: PanelInputs) -> dict[str, Any]:
    """Open-ended measures of ``method`` per prompt source (``bbq``, ``crows``)."""
    instruction = method_instruction(method)
    sources = {
        "bbq": bbq_open_prompts(
            inputs.open_bbq_items, instruction=instruction, tokenizer=ctx.tokenizer
        ),
        "crows": crows_open_prompts(
            group_prefixes(inputs.open_crows_pairs), instruction=instruction
        ),
    }
    entry: dict[str, Any] = {}
    for source, prompts in sources.items():
        if not prompts:
            continue
        with ctx.context(method, ctx.gen, "generated") as stats:
            out = run_open_ended(
                ctx.gen,
                ctx.tokenizer,
                prompts,
                max_new_tokens=ctx.settings.max_new_tokens,
                batch_size=ctx.settings.gen_batch_size,
                gate=stats,
                progress=ctx.progress,
            )
        entry[source] = out.to_dict()
    return entry


def _sizes(inputs: PanelInputs) -> dict[str, int]:
    return {
        "open_bbq": len(bbq_open_prompts(inputs.open_bbq_items)),
        "open_crows": len(group_prefixes(inputs.open_crows_pairs)),
    }


OPEN_ENDED_SUITE = Suite(
    name="open_ended",
    missing=lambda inputs: (
        None
        if inputs.open_bbq_items or inputs.open_crows_pairs
        else "open_bbq_items/open_crows_pairs"
    ),
    announce=lambda inputs: (
        "open-ended generation ({open_bbq} BBQ + {open_crows} CrowS-Pairs prompts)".format(
            **_sizes(inputs)
        )
    ),
    run=run_generation,
    settings=("prompt_format", "open_per_category", "open_crows_per_type", "max_new_tokens"),
    sizes=_sizes,
    fast_path_only=True,
)
