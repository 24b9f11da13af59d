"""How the fit split is turned into activations, labels and direction data (FitSettings), and the
disjointness every fitting API checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from fairlens.data import BBQItem, PromptFormat
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.scoring.letters import ScoringMode


def check_disjoint(splits: dict[str, Sequence[BBQItem]]) -> None:
    """Refuse any BBQ template shared by two named item sets (honest numbers need disjointness)."""
    seen: dict[tuple[str, str], str] = {}
    for name, items in splits.items():
        for template in {it.template_id for it in items}:
            if template in seen and seen[template] != name:
                raise ConfigError(
                    f"BBQ template {template[0]}/{template[1]} is in both the {seen[template]!r} and "
                    f"{name!r} items.",
                    "build the splits with fairlens.data.split_by_template so they are disjoint by template.",
                )
            seen[template] = name


def content_hash_texts(texts: Sequence[str]) -> str | None:
    """16 hex characters of SHA-256 over ``texts`` (None for none)."""
    if not texts:
        return None
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]


def model_id(model: Model) -> str | None:
    info = getattr(model, "fairlens_info", None)
    return None if info is None else f"{info.name}:{info.weights_sha}"


@dataclass(frozen=True)
class FitSettings:
    """How the fit split is turned into activations, labels and direction data.

    Attributes:
        hook_kind: Residual-width hook kind (``"resid_post"``...).
        layers: Candidate layers (default: all).
        prompt_format, shots: Prompt format (and few-shot examples).
        batch_size: Prompts per forward pass.
        n_dsv_per_category: Contrastive pairs per category (FairSteer: 10).
        C, seed: Probe regularisation and seed (splits, pair choice, optimisation).
        scoring: How the model's answers (hence the BAD labels) are read: ``"letter"`` (from the
            same pass) or ``"loglik"`` (one more pass, three options per item).
        extra_bad: ``(prompt text, label)`` anchors added to the BAD data (gate and ``"bad"``
            directions) only (the paper preset's MMLU questions, label 1).
        few_shot_too: Solved examples: the BAD data and the contrastive pairs are built a second
            time with these 8-shot prompts and added (the paper preset); zero-shot prompts only.
    """

    hook_kind: str = "resid_post"
    layers: tuple[int, ...] | None = None
    prompt_format: PromptFormat = "zero_shot"
    shots: tuple[BBQItem, ...] | None = None
    batch_size: int = 16
    n_dsv_per_category: int | None = 10
    C: float = 1.0
    seed: int = 42
    scoring: ScoringMode = "letter"
    extra_bad: tuple[tuple[str, int], ...] = ()
    few_shot_too: tuple[BBQItem, ...] | None = None

    def __post_init__(self) -> None:
        if self.scoring not in ("letter", "loglik"):
            raise ConfigError(
                f"scoring must be 'letter' or 'loglik', got {self.scoring!r}.",
                "pass scoring='letter' or 'loglik'.",
            )
        if self.few_shot_too and self.prompt_format != "zero_shot":
            raise ConfigError(
                "few_shot_too adds 8-shot data to zero-shot fitting.",
                "pass prompt_format='zero_shot', or few_shot_too=None.",
            )
        if self.layers is not None and not self.layers:
            raise ConfigError("no candidate layers.", "pass layers=None (all) or a list of layers.")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1.", "pass batch_size=1 or more.")

    @classmethod
    def of(cls, **settings: Any) -> FitSettings:
        """From keywords (sequences become tuples); an unknown keyword lists the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown FitData settings {unknown}.", f"valid: {sorted(known)}.")
        for key in ("layers", "shots", "extra_bad", "few_shot_too"):
            value = settings.get(key)
            if value is not None:
                settings[key] = tuple(tuple(v) if key == "extra_bad" else v for v in value)
        if settings.get("few_shot_too") == ():
            settings["few_shot_too"] = None
        return cls(**settings)
