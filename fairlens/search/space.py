"""What the steering search ranges over and how it picks: the search space, the selection rule
(written down before scoring), and the variants the space expands to.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from fairlens.detect.gates import get_gate
from fairlens.directions import get_direction_method
from fairlens.errors import ConfigError

SCOPES: tuple[str, ...] = ("colon", "band", "all")


MODES: tuple[str, ...] = ("static", "dynamic")


ALPHA_UNITS: tuple[str, ...] = ("relative", "absolute")


DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)
"""Relative strengths tried when none is given (FairSteer's selection and the search)."""


METRICS: tuple[str, ...] = ("acc_ambig", "acc_disambig", "acc_overall", "s_amb", "s_dis")


def _finite_tuple(name: str, values: Sequence[float], *, low: float | None = None) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{name} must be finite numbers; got {v!r}.", f"fix --{name}.")
        if low is not None and v < low:
            raise ConfigError(
                f"{name} must be >= {low}; got {v!r}.", f"pass only {name} of {low} or more."
            )


@dataclass(frozen=True)
class SearchSpace:
    """The grid. Every combination is one variant (static variants ignore gates and taus).

    Attributes:
        directions: Direction methods (:data:`fairlens.directions.DIRECTION_METHODS`).
        layers: Steered layers (default: every fitted candidate layer).
        alphas: Steering strengths, in ``alpha_unit``.
        alpha_unit: ``"relative"``: ``alpha`` times the mean residual norm at ``:`` of that layer,
            along the unit direction; ``"absolute"``: ``alpha`` times the raw vector (the paper's).
        scopes: ``"colon"`` (one layer at ``:``, the reference), ``"band"`` (``band_width``
            consecutive layers from the given one, at ``:``, gated once at the first), ``"all"``
            (every prompt position of that layer; re-runs whole prompts).
        band_width: Layers in a band.
        modes: ``"static"`` (always add) and/or ``"dynamic"`` (add where the gate fires).
        taus: Gate thresholds on P(leave alone).
        gates: Gates (:data:`fairlens.detect.gates.GATES`).
    """

    directions: tuple[str, ...] = ("dsv",)
    layers: tuple[int, ...] | None = None
    alphas: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)
    alpha_unit: str = "relative"
    scopes: tuple[str, ...] = ("colon",)
    band_width: int = 3
    modes: tuple[str, ...] = MODES
    taus: tuple[float, ...] = (0.5,)
    gates: tuple[str, ...] = ("bad",)

    def __post_init__(self) -> None:
        for name in ("directions", "alphas", "scopes", "modes", "taus", "gates"):
            if not getattr(self, name):
                raise ConfigError(
                    f"the search space needs at least one value in {name}.",
                    f"pass at least one value for {name}.",
                )
        for d in self.directions:
            get_direction_method(d)
        for g in self.gates:
            get_gate(g)
        _finite_tuple("alphas", self.alphas, low=0.0)
        _finite_tuple("taus", self.taus, low=0.0)
        if any(t > 1 for t in self.taus):
            raise ConfigError(
                f"taus are probabilities in [0, 1]; got {list(self.taus)}.",
                "pass taus between 0 and 1, e.g. (0.5,).",
            )
        if self.alpha_unit not in ALPHA_UNITS:
            raise ConfigError(
                f"alpha_unit must be one of {ALPHA_UNITS}; got {self.alpha_unit!r}.",
                "pass alpha_unit='relative' or 'absolute'.",
            )
        bad = [s for s in self.scopes if s not in SCOPES]
        if bad:
            raise ConfigError(f"unknown scopes {bad}.", f"use some of: {', '.join(SCOPES)}.")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ConfigError(f"unknown modes {bad}.", f"use some of: {', '.join(MODES)}.")
        if self.band_width < 2 and "band" in self.scopes:
            raise ConfigError(
                f"band_width must be >= 2; got {self.band_width}.",
                "pass band_width=2 or more, or drop 'band' from scopes.",
            )
        if self.layers is not None and not self.layers:
            raise ConfigError("layers is empty.", "pass None (all fitted layers) or some layers.")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


@dataclass(frozen=True)
class SelectionRule:
    """How the winner is chosen on the selection split, declared before scoring.

    The variant with the highest ``metric`` among those whose ``constraint`` metric is at least
    base's minus ``margin`` (no constraint when ``constraint`` is None). Ties: the smaller
    relative strength, then the earlier layer, then the variant key.
    """

    metric: str = "acc_ambig"
    constraint: str | None = "acc_disambig"
    margin: float = 0.02

    def __post_init__(self) -> None:
        for name in (self.metric, *([self.constraint] if self.constraint else [])):
            if name not in ("acc_ambig", "acc_disambig", "acc_overall"):
                raise ConfigError(
                    f"selection metrics are accuracies; got {name!r}.",
                    "use acc_ambig, acc_disambig or acc_overall for metric and constraint "
                    "(or constraint=None).",
                )
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ConfigError(
                f"margin must be a finite number >= 0; got {self.margin!r}.",
                "pass a finite margin >= 0, e.g. 0.02.",
            )

    def describe(self) -> str:
        head = f"highest {self.metric}"
        if self.constraint:
            head += f" among variants with {self.constraint} >= base - {100 * self.margin:g} points"
        return head + "; ties: smaller relative strength, then earlier layer, then variant key"

    def eligible(self, row: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
        if self.constraint is None:
            return True
        value, ref = row.get(self.constraint), base.get(self.constraint)
        if value is None or ref is None:
            return True
        return value >= ref - self.margin - 1e-12

    def choose(
        self, rows: Sequence[Mapping[str, Any]], base: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """The winning row; raises when no row meets the rule."""
        ok = [r for r in rows if self.eligible(r, base) and r.get(self.metric) is not None]
        if not ok:
            raise ConfigError(
                f"no variant of the {len(rows)} scored meets the selection rule ({self.describe()}).",
                "widen the margin (--margin), add smaller alphas, or check the grid.",
            )
        return min(
            ok,
            key=lambda r: (-r[self.metric], r["strength"], r["layer"], r["key"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


@dataclass(frozen=True)
class Variant:
    """One steering setting."""

    direction: str
    layer: int
    alpha: float
    alpha_unit: str = "relative"
    scope: str = "colon"
    mode: str = "dynamic"
    gate: str | None = "bad"
    tau: float | None = 0.5
    band_width: int = 1

    @property
    def edit_key(self) -> str:
        """Key of the static forward this variant needs (dynamic variants share it)."""
        width = f"x{self.band_width}" if self.scope == "band" else ""
        return f"{self.direction}|L{self.layer}{width}|{self.alpha_unit[:3]}{self.alpha:g}|{self.scope}"

    @property
    def key(self) -> str:
        if self.mode == "static":
            return f"{self.edit_key}|static"
        return f"{self.edit_key}|dynamic|{self.gate}|t{self.tau:g}"

    @property
    def layers(self) -> tuple[int, ...]:
        width = self.band_width if self.scope == "band" else 1
        return tuple(range(self.layer, self.layer + width))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Variant:
        return cls(**{k: v for k, v in data.items() if k != "key"})


def expand(space: SearchSpace, fitted_layers: Sequence[int], n_layers: int) -> list[Variant]:
    """Every variant of ``space`` (static first per edit, then each gate x tau)."""
    layers = list(fitted_layers) if space.layers is None else list(space.layers)
    unknown = [v for v in layers if v not in fitted_layers]
    if unknown:
        raise ConfigError(
            f"layers {unknown} were not fitted (fitted: {list(fitted_layers)}).",
            "search among the fitted layers, or fit with those layers.",
        )
    out: list[Variant] = []
    for direction in space.directions:
        for scope in space.scopes:
            width = space.band_width if scope == "band" else 1
            for layer in layers:
                if scope == "band" and (
                    layer + width > n_layers
                    or any(v not in fitted_layers for v in range(layer, layer + width))
                ):
                    continue
                for alpha in space.alphas:
                    base = Variant(
                        direction,
                        layer,
                        float(alpha),
                        space.alpha_unit,
                        scope,
                        "static",
                        None,
                        None,
                        width,
                    )
                    if "static" in space.modes:
                        out.append(base)
                    if "dynamic" in space.modes:
                        for gate in space.gates:
                            for tau in space.taus:
                                out.append(replace(base, mode="dynamic", gate=gate, tau=float(tau)))
    if not out:
        raise ConfigError(
            "the search space has no variant (e.g. every band runs past the last layer).",
            "add a non-band scope, a smaller band_width, or fit every layer the bands cover.",
        )
    return out
