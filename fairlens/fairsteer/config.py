"""FairSteer's configuration: every choice the estimator makes, validated on construction, with its
JSON round trip.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from fairlens.backend import HOOK_KINDS
from fairlens.data import PromptFormat
from fairlens.detect.gates import GATES, get_gate
from fairlens.directions import DIRECTION_METHODS, get_direction_method
from fairlens.errors import ConfigError
from fairlens.scoring.letters import ScoringMode
from fairlens.search.space import DEFAULT_ALPHAS
from fairlens.steer.steerer import PositionPolicy, SteeringConfig

Selection = Literal["search", "bbq", "probe"]


SELECTIONS: tuple[str, ...] = ("search", "bbq", "probe")


@dataclass(frozen=True)
class FairSteerConfig:
    """Hyper-parameters of a FairSteer fit.

    Attributes:
        hook_kind: Residual-width hook steered and probed (``"resid_post"``: the paper's).
        layers: Candidate layers (None: all).
        layer: A fixed steering layer (skips layer selection).
        direction: Direction method (:data:`fairlens.directions.DIRECTION_METHODS`; ``"dsv"``).
        gate: Gate (:data:`fairlens.detect.gates.GATES`; ``"bad"``: the paper's BAD probe).
        scope: ``"colon"`` (one layer at the steered position), ``"band"`` (``band_width``
            consecutive layers, gated once at the first) or ``"all"`` (every position).
        band_width: Layers in a band.
        selection: How layer and strength are chosen on the selection split: 'search' (highest
            ambiguous accuracy among the settings whose disambiguated accuracy is >= base -
            margin), 'bbq' (the reference: overall accuracy at a fixed alpha) or 'probe' (best
            probe accuracy; for comparison only).
        alpha: A fixed strength (in ``alpha_unit``); None: searched over ``alphas`` by
            ``selection="search"``, 1.0 for the other selections.
        alphas: Strengths tried by ``selection="search"``.
        alpha_unit: ``"relative"`` (alpha x the mean residual norm at ``:`` of the layer, along the
            unit direction) or ``"absolute"`` (alpha x the raw vector: the paper's alpha = 1).
        tau: Gate threshold on P(leave alone) (paper: 0.5).
        margin: ``selection="search"``: the largest drop of disambiguated accuracy below base
            accepted on the selection split (a fraction: 0.02 = 2 points).
        C: Probe regularisation (paper: 1.0).
        n_dsv_per_category: Contrastive pairs per category (paper: 10).
        scoring: How answers are read (``"letter"``: the paper's; ``"loglik"``).
        prompt_format: Prompt format (few_shot: 8 examples from the shots split).
        positions: Position policy (None: ``"generated"`` for letter scoring, ``"all"`` for loglik
            and for scope ``"all"``).
        batch_size: Prompts per forward pass.
        seed: Random seed of the probe's validation split and the pair choice (in a run, also
            of the template splits and every subsample).
    """

    hook_kind: str = field(
        default="resid_post", metadata={"choices": tuple(k for k in HOOK_KINDS if k != "z")}
    )
    layers: tuple[int, ...] | None = None
    layer: int | None = None
    direction: str = field(default="dsv", metadata={"choices": DIRECTION_METHODS})
    gate: str = field(default="bad", metadata={"choices": GATES})
    scope: Literal["colon", "band", "all"] = "colon"
    band_width: int = 3
    selection: Selection = "search"
    alpha: float | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    alpha_unit: Literal["relative", "absolute"] = "relative"
    tau: float = 0.5
    margin: float = 0.02
    C: float = 1.0
    n_dsv_per_category: int | None = field(default=10, metadata={"key": "dsv_per_category"})
    scoring: ScoringMode = "letter"
    prompt_format: PromptFormat = field(default="zero_shot", metadata={"flags": ("--format",)})
    positions: PositionPolicy | None = None
    batch_size: int = 16
    seed: int = 42

    def __post_init__(self) -> None:
        if self.hook_kind not in HOOK_KINDS or self.hook_kind == "z":
            raise ConfigError(
                f"hook_kind must be a residual-width hook, got {self.hook_kind!r}.",
                f"use one of: {', '.join(k for k in HOOK_KINDS if k != 'z')}.",
            )
        if self.selection not in SELECTIONS:
            raise ConfigError(
                f"selection must be one of {', '.join(SELECTIONS)}, got {self.selection!r}.",
                "pass one of those, e.g. selection='search' (the default).",
            )
        get_direction_method(self.direction)
        get_gate(self.gate)
        if self.scope not in ("colon", "band", "all"):
            raise ConfigError(
                f"scope must be 'colon', 'band' or 'all', got {self.scope!r}.",
                "pass scope='colon', 'band' or 'all'.",
            )
        if self.layer is not None and self.layers is not None and self.layer not in self.layers:
            raise ConfigError(
                f"the fixed layer {self.layer} is not among the candidate layers "
                f"{list(self.layers)}.",
                "add it to layers (--layers), or drop one of layer / layers.",
            )
        if self.scope == "band" and self.band_width < 2:
            raise ConfigError(
                f"band_width must be >= 2, got {self.band_width}.",
                "pass band_width=2 or more, or scope='colon'.",
            )
        if self.alpha_unit not in ("relative", "absolute"):
            raise ConfigError(
                f"alpha_unit must be 'relative' or 'absolute', got {self.alpha_unit!r}.",
                "pass alpha_unit='relative' or 'absolute'.",
            )
        if self.scoring not in ("letter", "loglik"):
            raise ConfigError(
                f"scoring must be 'letter' or 'loglik', got {self.scoring!r}.",
                "pass scoring='letter' or 'loglik'.",
            )
        if self.batch_size < 1:
            raise ConfigError("batch_size must be >= 1.", "pass batch_size=1 or more.")
        from fairlens.search.space import SelectionRule, _finite_tuple

        if not self.alphas:
            raise ConfigError(
                "alphas needs at least one value.",
                "pass at least one alpha, e.g. alphas=(0.1, 0.2, 0.4, 0.8).",
            )
        _finite_tuple("alphas", self.alphas, low=0.0)
        SelectionRule(margin=self.margin)  # validates the margin
        SteeringConfig(alpha=self.strength, tau=self.tau)  # validates alpha/tau

    @property
    def strength(self) -> float:
        """The fixed alpha (1.0 when unset)."""
        return 1.0 if self.alpha is None else float(self.alpha)

    @property
    def steer_positions(self) -> PositionPolicy:
        if self.positions is not None:
            return self.positions
        return "all" if self.scoring == "loglik" or self.scope == "all" else "generated"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        out["alphas"] = list(self.alphas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FairSteerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown FairSteer config keys: {unknown}.",
                f"use only: {', '.join(sorted(known))}.",
            )
        data = dict(data)
        for key in ("layers", "alphas"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)
