"""What a run does: RunConfig, composed of the stage configs (data, fit, search, panel), its flat
keys (config files, command-line flags, the report), and the presets.

Every hyper-parameter is defined once, as a field of its stage config: :class:`DataPlan`
(which items), :class:`~fairlens.fairsteer.config.FairSteerConfig` (the fit), :class:`SearchPlan`
(the steering search) and :class:`PanelPlan` (the evaluation). The flat keys, the flags and their
help are read from those fields (:mod:`fairlens.apps.config_keys`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairlens.apps.config_keys import ConfigKey, coerce, section_keys
from fairlens.data.plan import DEFAULT_FRACTIONS, DataPlan
from fairlens.errors import ConfigError
from fairlens.evaluate.plan import PanelPlan
from fairlens.evaluate.suites import PanelConfig
from fairlens.fairsteer.config import FairSteerConfig
from fairlens.runtime import MODEL_DTYPES
from fairlens.scoring.metrics import METRICS_RULE
from fairlens.search.plan import SearchPlan
from fairlens.search.space import SearchSpace

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


SECTIONS: dict[str, tuple[type, str]] = {
    "data": (DataPlan, ""),
    "fit": (FairSteerConfig, ""),
    "search": (SearchPlan, "search_"),
    "panel": (PanelPlan, ""),
}
"""RunConfig's stage configs: attribute → (dataclass, prefix of its flat keys)."""


@dataclass(frozen=True)
class RunConfig:
    """Settings of one pipeline run (every key is recorded in the report).

    Build one from flat keys with :meth:`from_keys` (``RunConfig.from_keys(limit=3)``), from a
    preset with :meth:`from_preset`, or from a JSON file with :meth:`from_file`.

    Attributes:
        name: Run folder name (the run lives in out_dir/name).
        model: Embedded name, .gguf path, HF model dir or TL model name.
        data_dir: Folder holding bbq/ (default: $FAIRLENS_DATA_DIR, ./data, ../shared/data, the
            cache).
        threads: CPU threads (default: $FAIRLENS_THREADS or 1).
        out_dir: Folder of the run folders.
        preset: Named settings: 'paper' = the FairSteer paper's recipe (BAD data zero- and 8-shot
            plus MMLU anchors, DSV, layer by BBQ accuracy over all layers, alpha=1 absolute);
            meant for a GPU, use --limit on a CPU.
        dtype: Weight and activation dtype of the model (probes and gates compute in float32).
        device_map: 'auto': let accelerate place the model on the GPUs (split across them when it
            does not fit one; then CPU RAM, then disk); None: the whole model on the CPU.
        data: Which items each stage gets (DataPlan).
        fit: The FairSteer fit (FairSteerConfig).
        search: The steering search (SearchPlan).
        panel: The evaluation panel (PanelPlan).
    """

    name: str = "smollm2-demo"
    model: str = "smollm2-135m"
    data_dir: str | None = None
    threads: int | None = None
    out_dir: str = "runs"
    preset: str | None = field(default=None, metadata={"choices": PRESETS})
    dtype: str = field(default="float32", metadata={"choices": MODEL_DTYPES})
    device_map: str | None = field(default=None, metadata={"choices": ("auto",)})
    data: DataPlan = field(default_factory=DataPlan)
    fit: FairSteerConfig = field(default_factory=FairSteerConfig)
    search: SearchPlan = field(default_factory=SearchPlan)
    panel: PanelPlan = field(default_factory=PanelPlan)

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(
                f"Run name must be a non-empty folder name, got {self.name!r}.",
                "pass --name with a name without '/', e.g. --name my-run.",
            )
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(
                f"unknown preset {self.preset!r}.", f"use one of: {', '.join(PRESETS)}."
            )
        if self.device_map is not None and self.panel.eval_backend == "tl":
            raise ConfigError(
                "--eval-backend tl evaluates a TransformerLens copy of the model, which cannot "
                "be split across devices like --device-map does.",
                "use --eval-backend hf (the default) with --device-map.",
            )
        if self.search.enabled:
            self.search_spaces(n_layers=64)  # validates the grid

    # -- the flat keys -------------------------------------------------------------------------

    @classmethod
    def config_keys(cls, sections: tuple[str | None, ...] | None = None) -> list[ConfigKey]:
        """Every flat key (or those of ``sections``; None names RunConfig's own fields)."""
        own = [s for s in section_keys(cls, None) if s.field not in SECTIONS]
        out = list(own) if sections is None or None in sections else []
        for name, (kind, prefix) in SECTIONS.items():
            if sections is None or name in sections:
                out += section_keys(kind, name, prefix)
        return out

    def flat(self) -> dict[str, Any]:
        """The settings as flat keys (tuples as lists): the report's and config files' form."""
        out: dict[str, Any] = {}
        for spec in self.config_keys():
            holder = self if spec.section is None else getattr(self, spec.section)
            value = getattr(holder, spec.field)
            out[spec.key] = list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        return self.flat()

    @classmethod
    def from_keys(cls, source: str = "RunConfig", **values: Any) -> RunConfig:
        """A config from flat keys (each key's stage config built with its defaults otherwise).

        Raises:
            ConfigError: an unknown key (with the valid ones) or a value of the wrong type.
        """
        specs = {s.key: s for s in cls.config_keys()}
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise ConfigError(
                f"Unknown keys in {source}: {unknown}.", f"Valid keys: {sorted(specs)}."
            )
        own: dict[str, Any] = {}
        parts: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        for key, value in values.items():
            spec = specs[key]
            value = coerce(spec, value, source)
            (own if spec.section is None else parts[spec.section])[spec.field] = value
        built = {name: kind(**parts[name]) for name, (kind, _) in SECTIONS.items()}
        return cls(**own, **built)

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> RunConfig:
        """A config with a preset's keys, then ``overrides`` (flat keys) on top."""
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(
                    f"unknown preset {preset!r}.", f"use one of: {', '.join(PRESETS)}."
                )
            base = {**PRESETS[preset], "preset": preset}
        return cls.from_keys(**{**base, **overrides})

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a JSON file of flat keys (a report's ``config`` is one); ``overrides`` (flat
        keys) win over the file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"Could not read config file {str(path)!r}: {exc}", "Pass a JSON file."
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(
                f"{str(path)!r} must hold a JSON object of RunConfig keys.",
                'write one object, e.g. {"model": "smollm2-135m", "limit": 4}.',
            )
        specs = {s.key: s for s in cls.config_keys()}
        unknown = sorted(set(data) - set(specs))
        if unknown:
            raise ConfigError(
                f"Unknown keys in {str(path)!r}: {unknown}.", f"Valid keys: {sorted(specs)}."
            )
        data = {k: coerce(specs[k], v, repr(str(path))) for k, v in data.items()}
        data.update(overrides)
        preset = data.pop("preset", None)
        return cls.from_preset(preset, **data)

    # -- derived configs -----------------------------------------------------------------------

    def panel_config(self) -> PanelConfig:
        """The panel's configuration (scoring, prompt format and batch size are the fit's)."""
        return self.panel.config(self.fit.scoring, self.fit.prompt_format, self.fit.batch_size)

    def search_spaces(self, n_layers: int) -> tuple[SearchSpace, list[SearchSpace]]:
        """The search grid for a model of ``n_layers``: the main space and the band space."""
        return self.search.spaces(n_layers, self.fit.band_width)

    def resume_settings(self) -> dict[str, Any]:
        """The keys a run folder's fitted stages depend on (a rerun with other values is refused).

        The data and fit sections, the model and its dtype; not the batch size (it changes no
        number), not where the model sits (``device_map``), and
        nothing of the search or the panel (they resume per scored variant / suite).
        """
        flat = self.flat()
        keys = ["model", "dtype", "data_dir"] + [
            s.key for s in self.config_keys(("data", "fit")) if s.key != "batch_size"
        ]
        return {k: flat[k] for k in keys}

    def panel_settings(self) -> dict[str, Any]:
        """The keys a panel result depends on: the panel's (not which methods and suites run, each
        result is one method on one suite), the protocol-relevant fit keys and the model."""
        flat = self.flat()
        keys = [s.key for s in self.config_keys(("panel",)) if s.key not in ("methods", "suites")]
        own = ["model", "dtype", "scoring", "prompt_format", "batch_size"]
        settings = {k: flat[k] for k in [*own, *keys]}
        return {**settings, "bbq_metrics": METRICS_RULE}

    def replace(self, **values: Any) -> RunConfig:
        """A copy with flat keys changed."""
        return type(self).from_keys(**{**self.flat(), **values})


__all__ = ["DEFAULT_FRACTIONS", "PRESETS", "SECTIONS", "RunConfig"]
