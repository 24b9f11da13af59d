"""What every panel suite shares: the inputs, the models, the fitted FairSteer and the settings.

A suite (:mod:`fairlens.evaluate.suites`) reads a :class:`PanelInputs` and runs one method at a
time inside the :class:`PanelContext`; it never reads another suite's results, so suites run in any
order and any subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from fairlens.backend import is_hooked
from fairlens.data import BBQItem, PromptFormat
from fairlens.data.crows_pairs import CrowsPair
from fairlens.data.mcqa import MCItem
from fairlens.data.unqover import UnqoverInstance
from fairlens.detect.condition_gate import ConditionGate
from fairlens.errors import ConfigError
from fairlens.fairsteer.estimator import FairSteer
from fairlens.model_types import Model, Tokenizer
from fairlens.models import get_model_info
from fairlens.scoring.bbq_protocols import BBQ_PROTOCOLS
from fairlens.scoring.letters import ScoringMode
from fairlens.scoring.likelihood import TextScores, text_logprobs
from fairlens.steer.interventions import (
    DEFAULT_METHODS,
    METHOD_DESCRIPTIONS,
    METHODS,
    PANEL_METHODS,
    FittedSteering,
    method_context,
    method_instruction,
    method_steering,
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
    bbq_calibration: tuple[BBQItem, ...] = ()
    mc_calibration: Mapping[str, Sequence[MCItem]] = field(default_factory=dict)


@dataclass(frozen=True)
class PanelSettings:
    """How the suites score (the part of :class:`~fairlens.evaluate.suites.PanelConfig` they read)."""

    methods: tuple[str, ...] = DEFAULT_METHODS
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
            raise ConfigError(
                "the panel needs at least one method and one suite.",
                "name at least one method (--methods) and one suite (--suites).",
            )
        if self.bbq_protocol not in BBQ_PROTOCOLS:
            raise ConfigError(
                f"unknown BBQ protocol {self.bbq_protocol!r}.",
                f"use one of: {', '.join(BBQ_PROTOCOLS)}.",
            )
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.gen_batch_size < 1:
            raise ConfigError(
                "max_new_tokens and batch sizes must be >= 1.",
                "pass max_new_tokens, batch_size and gen_batch_size of 1 or more.",
            )


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
    condition_gate: ConditionGate | None = None

    def context(self, method: str, model: Model, positions: PositionPolicy) -> Any:
        """The method's intervention on ``model`` (a context manager yielding its gate stats)."""
        return method_context(
            method,
            model,
            self.fairsteer,
            positions=positions,
            record=True,
            condition_gate=self.condition_gate,
        )

    def positions(self) -> PositionPolicy:
        """Where the answer-reading suites steer: the FairSteer position policy."""
        return self.fairsteer.config.steer_positions if self.fairsteer is not None else "generated"

    def steering(self, method: str) -> FittedSteering:
        """The fitted steering ``method`` applies (FairSteer's, or under the condition gate)."""
        assert self.fairsteer is not None
        return method_steering(method, self.fairsteer, self.condition_gate)

    def cacheable(self, method: str) -> bool:
        """Whether ``method``'s answers can be read off a prefix cache of the unsteered prompts:
        it adds no hook (base, prompt, calibrated) or adds the vector at the last prompt position
        only (static and gated steering under the answer-position policy), on the plain
        transformers model."""
        if is_hooked(self.model):
            return False
        entry = METHODS[method]
        if not entry.needs_fit:
            return True
        fs = self.fairsteer
        return (
            entry.steer_mode is not None
            and fs is not None
            and self.positions() in ("generated", "last_prompt")
            and fs.config.scope != "all"
        )

    def composed_logits(self, method: str, scorer: Any, key: str) -> tuple[Tensor, Tensor | None]:
        """``method``'s answer logits read off ``scorer`` (a prefix cache of the unsteered prompts)
        and where its gate fired (``None`` without a gate): the steered logits are one-token
        forwards from the cache (computed once per scorer, under ``key``), the gated ones taken
        from them where the gate fires on the unsteered activation, else the base ones (exact;
        tested against full runs)."""
        entry = METHODS[method]
        if entry.steer_mode is None:
            return scorer.base_logits, None
        assert self.fairsteer is not None
        get_model_info(self.model).check_matches(
            self.fairsteer.model_info_.fingerprint(), what="FairSteer"
        )
        static_key = f"{key}/static-logits"
        if static_key not in self.scorers:
            edit = self.fairsteer.last_position_edit()
            self.scorers[static_key] = scorer.logits([edit])[0]
        static = self.scorers[static_key]
        if entry.steer_mode == "static":
            fire = torch.ones(static.shape[0], dtype=torch.bool)
        else:
            fire = self.steering(method).gate_fires(scorer.base_acts).cpu()
        return torch.where(fire[:, None], static, scorer.base_logits), fire

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
        reads_letters: ``reads_letters(context)`` -> whether the suite reads answer letters under
            the run's settings (letter-prior calibration changes only those suites; ``None``:
            never).
        calibration_missing: ``calibration_missing(inputs)`` -> the calibration input the
            ``calibrated`` method lacks, or ``None``.
        settings: The panel settings its results depend on beyond those every suite depends on
            (:data:`SHARED_SETTINGS`): a resumed run keeps this suite's saved results when these
            are unchanged, whatever other suites' settings changed.
    """

    name: str
    missing: Any
    announce: Any
    run: Any
    sizes: Any
    fast_path_only: bool = False
    reads_letters: Any = None
    calibration_missing: Any = None
    settings: tuple[str, ...] = ()


SHARED_SETTINGS: tuple[str, ...] = ("model", "dtype", "batch_size", "eval_backend")
"""The run settings every suite's results depend on (the model; the batch size and backend
change numbers in the last float digits, which can flip a near tie)."""
