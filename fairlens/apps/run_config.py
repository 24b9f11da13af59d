"""What a run does: RunConfig (every setting of fairlens run / make demo, validated), the presets
and the default split fractions.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from fairlens.data import (
    PromptFormat,
)
from fairlens.directions import DIRECTION_METHODS
from fairlens.errors import ConfigError
from fairlens.evaluate.suites import SUITES, PanelConfig
from fairlens.fairsteer.config import DEFAULT_ALPHAS, FairSteerConfig
from fairlens.scoring.letters import ScoringMode
from fairlens.steer.interventions import PANEL_METHODS

DEFAULT_FRACTIONS = {"probe": 0.45, "dsv": 0.1, "select": 0.1, "shots": 0.05, "eval": 0.3}


PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        # FairSteer as the paper's reference code runs it (on template-disjoint splits)
        "probe_per_category": None,  # every BBQ item of the fit split ...
        "paper_few_shot": True,  # ... zero-shot and 8-shot
        "mmlu_anchors": 500,  # plus MMLU questions as unbiased anchors (3-option format)
        "dsv_per_category": 10,  # 110 pairs, zero-shot + 8-shot
        "selection": "bbq",  # layer by steered BBQ accuracy over all layers
        "alpha": 1.0,
        "alpha_unit": "absolute",
        "tau": 0.5,
        "direction": "dsv",
        "gate": "bad",
        "scope": "colon",
        "select_per_category": None,
        "eval_per_category": None,
    }
}


@dataclass(frozen=True)
class RunConfig:
    """Settings of one pipeline run (every field is recorded in the report)."""

    name: str = "smollm2-demo"
    model: str = "smollm2-135m"
    data_dir: str | None = None
    categories: tuple[str, ...] | None = None
    probe_per_category: int | None = 40
    dsv_per_category: int = 10
    select_per_category: int | None = 10
    eval_per_category: int | None = 30
    limit: int | None = None  # cap on items per category for every split (CPU-sized presets)
    scoring: ScoringMode = "letter"
    prompt_format: PromptFormat = "zero_shot"
    hook_kind: str = "resid_post"
    layer: int | None = None
    direction: str = "dsv"
    gate: str = "bad"
    scope: Literal["colon", "band", "all"] = "colon"
    band_width: int = 3
    selection: Literal["search", "bbq", "probe"] = "search"
    alpha: float | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    alpha_unit: Literal["relative", "absolute"] = "relative"
    tau: float = 0.5
    margin: float = 0.02
    C: float = 1.0
    batch_size: int = 16
    # "hf": evaluate on the plain transformers model (fast path; same numbers, tested)
    eval_backend: Literal["tl", "hf"] = "hf"
    methods: tuple[str, ...] = PANEL_METHODS
    suites: tuple[str, ...] = tuple(SUITES)
    crows_per_type: int | None = 20  # CrowS-Pairs pairs per bias type (None: all 1,508)
    open_per_category: int = 2  # BBQ ambiguous eval items per category for open-ended generation
    open_crows_per_type: int = 2  # CrowS-Pairs prefixes per bias type for open-ended generation
    max_new_tokens: int = 20
    text_n: int | None = 40  # neutral-corpus paragraphs for perplexity / gate-on-text
    text_file: str | None = None  # a plain-text corpus instead of the default (see data.corpus)
    # the steering search over direction families (fairlens.search.engine), on the select split
    search: bool = False
    search_directions: tuple[str, ...] = tuple(DIRECTION_METHODS)
    search_layer_stride: int = 1
    search_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    search_scopes: tuple[str, ...] = ("colon", "band")
    search_band_directions: tuple[str, ...] = ("dsv", "probe")
    search_gates: tuple[str, ...] = ("bad", "context", "ambig")
    search_taus: tuple[float, ...] = (0.5,)
    search_patching: tuple[str, ...] = ("select", "eval")  # splits with the patching ceiling
    paper_few_shot: bool = False  # BAD data and DSV pairs also built with 8-shot prompts
    mmlu_anchors: int = 0  # MMLU questions added to the BAD data as unbiased anchors
    preset: str | None = None
    threads: int | None = None
    seed: int = 42
    out_dir: str = "runs"
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))

    def __post_init__(self) -> None:
        for name in ("probe_per_category", "select_per_category", "eval_per_category", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or None (all), got {value}.")
        if set(self.fractions) != set(DEFAULT_FRACTIONS):
            raise ConfigError(
                f"fractions must name exactly the splits {sorted(DEFAULT_FRACTIONS)}."
            )
        for name in ("crows_per_type", "text_n"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or None (all), got {value}.")
        if self.open_per_category < 0 or self.open_crows_per_type < 0 or self.max_new_tokens < 1:
            raise ConfigError(
                "open_per_category and open_crows_per_type must be >= 0, max_new_tokens >= 1."
            )
        if self.mmlu_anchors < 0 or self.search_layer_stride < 1:
            raise ConfigError("mmlu_anchors must be >= 0 and search_layer_stride >= 1.")
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(
                f"unknown preset {self.preset!r}.", f"use one of: {', '.join(PRESETS)}."
            )
        PanelConfig(methods=tuple(self.methods), suites=tuple(self.suites))  # validates names
        if self.eval_backend not in ("tl", "hf"):
            raise ConfigError(f"eval_backend must be 'tl' or 'hf', got {self.eval_backend!r}.")
        if not self.name or "/" in self.name:
            raise ConfigError(f"Run name must be a non-empty folder name, got {self.name!r}.")
        self.fairsteer_config()  # validates the FairSteer fields
        if self.search:
            self.search_spaces(n_layers=64)  # validates the search fields

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> RunConfig:
        """A config with a preset's settings, then ``overrides`` (non-None) on top."""
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(
                    f"unknown preset {preset!r}.", f"use one of: {', '.join(PRESETS)}."
                )
            base = {**PRESETS[preset], "preset": preset}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    def fairsteer_config(self) -> FairSteerConfig:
        return FairSteerConfig(
            hook_kind=self.hook_kind,
            layer=self.layer,
            direction=self.direction,
            gate=self.gate,
            scope=self.scope,
            band_width=self.band_width,
            selection=self.selection,
            alpha=self.alpha,
            alphas=tuple(self.alphas),
            alpha_unit=self.alpha_unit,
            tau=self.tau,
            margin=self.margin,
            C=self.C,
            n_dsv_per_category=self.dsv_per_category,
            scoring=self.scoring,
            prompt_format=self.prompt_format,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    def search_spaces(self, n_layers: int) -> tuple[Any, list[Any]]:
        """The search grid for a model of ``n_layers``: the main space and the band space."""
        from fairlens.search.space import SCOPES, SearchSpace

        bad = [s for s in self.search_scopes if s not in SCOPES]
        if bad:
            raise ConfigError(f"unknown search scopes {bad}.", f"use some of: {', '.join(SCOPES)}.")
        layers = tuple(range(0, n_layers, self.search_layer_stride))
        space = SearchSpace(
            directions=tuple(self.search_directions),
            layers=layers,
            alphas=tuple(self.search_alphas),
            scopes=tuple(s for s in self.search_scopes if s != "band") or ("colon",),
            taus=tuple(self.search_taus),
            gates=tuple(self.search_gates),
        )
        extra = []
        if "band" in self.search_scopes:
            band_dirs = tuple(d for d in self.search_band_directions if d in self.search_directions)
            extra.append(
                SearchSpace(
                    directions=band_dirs or (self.search_directions[0],),
                    layers=tuple(v for v in layers if v + self.band_width <= n_layers) or (0,),
                    alphas=tuple(self.search_alphas),
                    scopes=("band",),
                    band_width=self.band_width,
                    taus=tuple(self.search_taus),
                    gates=tuple(self.search_gates),
                )
            )
        return space, extra

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a JSON config file; ``overrides`` (non-None) win over the file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"Could not read config file {str(path)!r}: {exc}", "Pass a JSON file."
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} must hold a JSON object of RunConfig fields.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown keys in {str(path)!r}: {unknown}.", f"Valid keys: {sorted(known)}."
            )
        data.update({k: v for k, v in overrides.items() if v is not None})
        for key in (
            "categories",
            "methods",
            "suites",
            "alphas",
            "search_directions",
            "search_alphas",
            "search_scopes",
            "search_band_directions",
            "search_gates",
            "search_taus",
            "search_patching",
        ):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        preset = data.pop("preset", None)
        return cls.from_preset(preset, **data)
