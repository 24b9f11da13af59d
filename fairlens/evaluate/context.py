"""What every panel suite shares: the inputs, the models, the fitted FairSteer and the settings.

A suite (:mod:`fairlens.evaluate.suites`) reads a :class:`PanelInputs` and runs one method at a
time inside the :class:`PanelContext`; it never reads another suite's results, so suites run in any
order and any subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

from fairlens.data import BBQItem, PromptFormat
from fairlens.data.crows_pairs import CrowsPair
from fairlens.data.mcqa import MCItem
from fairlens.data.unqover import UnqoverInstance
from fairlens.errors import ConfigError
from fairlens.fairsteer.estimator import FairSteer
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.bbq_protocols import BBQ_PROTOCOLS
from fairlens.scoring.letters import ScoringMode
from fairlens.scoring.likelihood import TextScores, text_logprobs
from fairlens.steer.interventions import (
    METHOD_DESCRIPTIONS,
    PANEL_METHODS,
    method_context,
    method_instruction,
)
from fairlens.steer.steerer import PositionPolicy

BBQProtocol = Literal["fairsteer", "fairsteer-8shot", "lm-eval"]


@dataclass(frozen=True)
class PanelInputs:
    """The items every method is scored on (the same for all methods)."""

    bbq_items: tuple[BBQItem, ...] = ()
    crows_pairs: tuple[CrowsPair, ...] = ()
    open_bbq_items: tuple[BBQItem, ...] = ()
    open_crows_pairs: tuple[CrowsPair, ...] = ()
    texts: Mapping[str, Sequence[str]] = field(default_factory=dict)
    shots: tuple[BBQItem, ...] | None = None
    mc: Mapping[str, Sequence[MCItem]] = field(default_factory=dict)
    mc_shots: tuple[MCItem, ...] = ()
    unqover: tuple[UnqoverInstance, ...] = ()


@dataclass(frozen=True)
class PanelSettings:
    """How the suites score (the part of :class:`~fairlens.evaluate.suites.PanelConfig` they read)."""

    methods: tuple[str, ...] = PANEL_METHODS
    scoring: ScoringMode = "letter"
    prompt_format: PromptFormat = "zero_shot"
    bbq_protocol: BBQProtocol = "fairsteer"
    max_new_tokens: int = 20
    batch_size: int = 16
    gen_batch_size: int = 8

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHOD_DESCRIPTIONS]
        if bad:
            raise ConfigError(
                f"unknown methods {bad}.", f"use some of: {', '.join(PANEL_METHODS)}."
            )
        if not self.methods:
            raise ConfigError("the panel needs at least one method and one suite.")
        if self.bbq_protocol not in BBQ_PROTOCOLS:
            raise ConfigError(
                f"unknown BBQ protocol {self.bbq_protocol!r}.",
                f"use one of: {', '.join(BBQ_PROTOCOLS)}.",
            )
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.gen_batch_size < 1:
            raise ConfigError("max_new_tokens and batch sizes must be >= 1.")


def gate_rates(fired: Sequence[Tensor] | None) -> tuple[float | None, float | None]:
    """(fraction of texts where the gate fired at any token, fraction of tokens), from the
    recorded per-token decisions; ``(None, None)`` for a method without a gate (nothing recorded)."""
    if fired is None:
        return None, None
    any_fired = [bool(f.any()) for f in fired if f.numel()]
    tokens = sum(int(f.sum()) for f in fired)
    total = sum(int(f.numel()) for f in fired)
    return (sum(any_fired) / len(any_fired) if any_fired else 0.0, tokens / total if total else 0.0)


@dataclass
class PanelContext:
    """The models, the fitted FairSteer and the settings; prefix caches built once and shared."""

    model: Model
    gen: Any
    tokenizer: Tokenizer
    fairsteer: FairSteer | None
    settings: PanelSettings
    progress: bool
    scorers: dict[str, Any] = field(default_factory=dict)

    def context(self, method: str, model: Model, positions: PositionPolicy) -> Any:
        """The method's intervention on ``model`` (a context manager yielding its gate stats)."""
        return method_context(method, model, self.fairsteer, positions=positions, record=True)

    def text_scores(self, method: str, texts: Sequence[str], desc: str) -> TextScores:
        """Per-token log-probs of ``texts`` under ``method`` (steering at every position)."""
        with self.context(method, self.model, "all") as stats:
            return text_logprobs(
                self.model,
                self.tokenizer,
                texts,
                prefix=method_instruction(method),
                batch_size=self.settings.batch_size,
                gate=stats,
                progress=self.progress,
                desc=desc,
            )


@dataclass(frozen=True)
class Suite:
    """One evaluation suite of the panel (an entry of :data:`fairlens.evaluate.suites.SUITES`).

    Attributes:
        name: Registry key, used in ``PanelConfig.suites`` and as the report's section.
        missing: Which input the suite lacks (a message), or ``None`` when it can run.
        announce: The log line before a method is scored.
        run: ``run(context, method, inputs)`` -> the JSON-ready result of one method.
        sizes: The ``n`` entries the report records for this suite.
        fast_path_only: Needs the plain transformers model (generation with a KV cache).
    """

    name: str
    missing: Any
    announce: Any
    run: Any
    sizes: Any
    fast_path_only: bool = False
