"""BBQ evaluation of base / static / FairSteer side by side on one item set.

Each method scores the same items with the same prompt format and scoring mode; only the steering
context differs. Results carry the settings and the split hash so a report always says what was
measured on what.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from fairlens.data import BBQItem, PromptFormat, content_hash
from fairlens.errors import ConfigError
from fairlens.fairsteer.estimator import FairSteer
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.letters import ScoringMode, score_items
from fairlens.scoring.metrics import BBQMetrics, bbq_metrics
from fairlens.steer.steerer import SteerMode

METHODS: dict[str, SteerMode | None] = {"base": None, "static": "static", "fairsteer": "dynamic"}


@dataclass(frozen=True)
class MethodResult:
    """One method's metrics on the evaluation items."""

    method: str
    metrics: BBQMetrics
    gate_rate: float | None  # fraction of probed positions steered (None for base)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "gate_rate": self.gate_rate,
            "seconds": round(self.seconds, 3),
            "metrics": self.metrics.to_dict(),
        }


@dataclass(frozen=True)
class EvaluationReport:
    """Methods side by side on one split."""

    results: tuple[MethodResult, ...]
    n_items: int
    split_hash: str
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_items": self.n_items,
            "split_hash": self.split_hash,
            "settings": self.settings,
            "results": [r.to_dict() for r in self.results],
        }

    def table(self) -> str:
        """Pooled accuracy and bias scores per method, as a fixed-width text table."""

        def fmt(x: float | None, scale: float = 1.0) -> str:
            return "-" if x is None else f"{x * scale:7.2f}"

        head = f"{'method':<10} {'acc_amb':>7} {'acc_dis':>7} {'acc_all':>7} {'s_AMB':>7} {'s_DIS':>7} {'gate':>6}"
        lines = [head, "-" * len(head)]
        for r in self.results:
            p = r.metrics.pooled
            gate = "-" if r.gate_rate is None else f"{100 * r.gate_rate:5.1f}%"
            lines.append(
                f"{r.method:<10} {fmt(p.acc_ambig, 100)} {fmt(p.acc_disambig, 100)} "
                f"{fmt(p.acc_overall, 100)} {fmt(p.s_amb)} {fmt(p.s_dis)} {gate:>6}"
            )
        return "\n".join(lines)


def evaluate(
    model: Model,
    items: Sequence[BBQItem],
    fairsteer: FairSteer | None = None,
    *,
    methods: Sequence[str] = ("base", "static", "fairsteer"),
    scoring: ScoringMode = "letter",
    prompt_format: PromptFormat = "zero_shot",
    shots: Sequence[BBQItem] | None = None,
    batch_size: int = 16,
    progress: bool = False,
    tokenizer: Tokenizer | None = None,
) -> EvaluationReport:
    """Score ``items`` under each method and compute BBQ accuracy and bias scores.

    Args:
        model: The ``HookedTransformer`` the FairSteer was fitted on.
        items: Evaluation items (template-disjoint from everything the FairSteer was fitted on).
        fairsteer: A fitted :class:`~fairlens.fairsteer.estimator.FairSteer` (needed for static/fairsteer).
        methods: Any of ``"base"``, ``"static"``, ``"fairsteer"``.
        tokenizer: Needed when ``model`` is a plain HF model (the fast path).
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"Unknown methods {unknown}.", f"use some of: {', '.join(METHODS)}.")
    if fairsteer is None and any(METHODS[m] for m in methods):
        raise ConfigError(
            "Steered methods need a fitted FairSteer.", "Pass fairsteer=FairSteer(...).fit(...)."
        )
    if fairsteer is not None:
        overlap = _overlap(items, fairsteer)
        if overlap:
            raise ConfigError(
                f"The evaluation items share {overlap} item(s) with the data the FairSteer was fitted on.",
                "Evaluate on a template-disjoint split (fairlens.data.split_by_template).",
            )
    results = []
    for method in methods:
        mode = METHODS[method]
        ctx = (
            fairsteer.steering(model, mode=mode)
            if fairsteer is not None and mode
            else nullcontext(None)
        )
        start = time.perf_counter()
        with ctx as stats:
            res = score_items(
                model,
                items,
                mode=scoring,
                prompt_format=prompt_format,
                shots=shots,
                batch_size=batch_size,
                padding_side="left",
                progress=progress,
                tokenizer=tokenizer,
            )
        results.append(
            MethodResult(
                method,
                bbq_metrics(items, res.predictions),
                None if stats is None else stats.rate,
                time.perf_counter() - start,
            )
        )
    return EvaluationReport(
        tuple(results),
        len(items),
        content_hash(items),
        {"scoring": scoring, "prompt_format": prompt_format, "batch_size": batch_size},
    )


def _overlap(items: Sequence[BBQItem], fairsteer: FairSteer) -> int:
    """Count of eval items whose template was used to fit ``fairsteer`` (when its items are known)."""
    fitted = getattr(fairsteer, "fitted_templates_", None)
    if not fitted:
        return 0
    return sum(1 for it in items if f"{it.category}/{it.question_index}" in fitted)
