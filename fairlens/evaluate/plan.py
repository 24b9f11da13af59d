"""What the evaluation panel of a run scores: methods, suites, how many items each suite draws and
the backend (the panel section of a run's settings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fairlens.data import PromptFormat
from fairlens.errors import ConfigError
from fairlens.evaluate.context import BBQProtocol
from fairlens.evaluate.suites import DEFAULT_SUITES, SUITES, PanelConfig
from fairlens.scoring.letters import ScoringMode
from fairlens.steer.interventions import METHODS, PANEL_METHODS


@dataclass(frozen=True)
class PanelPlan:
    """The panel of a run: the same items for every method, the suites scored once each.

    Attributes:
        methods: Methods compared side by side.
        suites: Suites scored for every method.
        bbq_protocol: How BBQ answers are read in the panel: 'fairsteer' (letter logits, zero-shot),
            'fairsteer-8shot' (letter logits, 8-shot prompts) or 'lm-eval' (answer likelihood as
            lm-evaluation-harness, with its 'unknown' phrasings); stamped on every BBQ number.
        eval_backend: 'hf' evaluates on the plain transformers twin (the fast path: same numbers,
            tested) or 'tl' on the HookedTransformer; open-ended generation always runs on hf.
        crows_per_type: CrowS-Pairs pairs per bias type (None: all 1,508).
        open_per_category: BBQ ambiguous eval items per category for open-ended generation.
        open_crows_per_type: CrowS-Pairs prefixes per bias type for open-ended generation.
        max_new_tokens: Tokens generated per open-ended prompt.
        text_n: Neutral-corpus paragraphs for perplexity and the gate on plain text (None: all).
        text_file: A plain-text corpus (paragraphs separated by blank lines) instead of the
            default neutral corpus.
        mmlu_per_subject: MMLU test questions per subject for the mmlu suite (None: all 14,042).
        mc_questions: Test questions per ARC-Easy, ARC-Challenge and OpenBookQA suite (None: the
            whole split).
        unqover_per_dataset: UNQOVER instances (4 questions each) per dataset: gender,
            nationality, ethnicity and religion.
    """

    methods: tuple[str, ...] = field(default=PANEL_METHODS, metadata={"choices": METHODS})
    suites: tuple[str, ...] = field(default=DEFAULT_SUITES, metadata={"choices": SUITES})
    bbq_protocol: BBQProtocol = "fairsteer"
    eval_backend: Literal["tl", "hf"] = "hf"
    crows_per_type: int | None = 20
    open_per_category: int = 2
    open_crows_per_type: int = 2
    max_new_tokens: int = 20
    text_n: int | None = 40
    text_file: str | None = None
    mmlu_per_subject: int | None = 2
    mc_questions: int | None = 100
    unqover_per_dataset: int = 25

    def __post_init__(self) -> None:
        for name in ("crows_per_type", "text_n", "mmlu_per_subject", "mc_questions"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(
                    f"{name} must be >= 1 or None (all), got {value}.",
                    f"pass --{name.replace('_', '-')} 1 or more, or 'all'.",
                )
        if self.open_per_category < 0 or self.open_crows_per_type < 0 or self.max_new_tokens < 1:
            raise ConfigError(
                "open_per_category and open_crows_per_type must be >= 0, max_new_tokens >= 1.",
                "pass --open-per-category, --open-crows-per-type >= 0 and --max-new-tokens >= 1.",
            )
        if self.unqover_per_dataset < 1:
            raise ConfigError(
                f"unqover_per_dataset must be >= 1, got {self.unqover_per_dataset}.",
                "pass --unqover-per-dataset 1 or more.",
            )
        if self.eval_backend not in ("tl", "hf"):
            raise ConfigError(
                f"eval_backend must be 'tl' or 'hf', got {self.eval_backend!r}.",
                "pass --eval-backend hf or --eval-backend tl.",
            )
        self.config()  # validates the method and suite names

    def config(
        self,
        scoring: ScoringMode = "letter",
        prompt_format: PromptFormat = "zero_shot",
        batch_size: int = 16,
    ) -> PanelConfig:
        """The panel's configuration, with the fit's scoring, prompt format and batch size."""
        return PanelConfig(
            methods=tuple(self.methods),
            suites=tuple(self.suites),
            scoring=scoring,
            prompt_format=prompt_format,
            max_new_tokens=self.max_new_tokens,
            batch_size=batch_size,
            bbq_protocol=self.bbq_protocol,
        )
