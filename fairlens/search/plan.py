"""The steering search's grid as a run sets it (the search section of a run's settings): which
directions, layers, strengths, scopes, gates and thresholds, expanded to search spaces once the
model's depth is known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fairlens.detect.gates import GATES
from fairlens.directions import DIRECTION_METHODS
from fairlens.errors import ConfigError
from fairlens.search.space import DEFAULT_ALPHAS, SCOPES, SearchSpace


@dataclass(frozen=True)
class SearchPlan:
    """The search of a run, scored on the selection split (:mod:`fairlens.search.engine`).

    Attributes:
        enabled: Run the steering search over direction families (see `fairlens search`).
        directions: Direction methods in the grid.
        layer_stride: Search every k-th layer.
        alphas: Relative strengths searched.
        scopes: Scopes searched ('band': band_width consecutive layers).
        band_directions: Directions also searched as bands.
        gates: Gates searched by the dynamic variants.
        taus: Gate thresholds searched.
        patching: Splits that get the instruction-patching ceiling (each costs one instructed
            pass over the split).
    """

    enabled: bool = field(default=False, metadata={"key": "search"})
    directions: tuple[str, ...] = field(
        default=tuple(DIRECTION_METHODS), metadata={"choices": DIRECTION_METHODS}
    )
    layer_stride: int = 1
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    scopes: tuple[Literal["colon", "band", "all"], ...] = ("colon", "band")
    band_directions: tuple[str, ...] = field(
        default=("dsv", "probe"), metadata={"choices": DIRECTION_METHODS}
    )
    gates: tuple[str, ...] = field(default=("bad", "context", "ambig"), metadata={"choices": GATES})
    taus: tuple[float, ...] = (0.5,)
    patching: tuple[Literal["select", "eval"], ...] = field(
        default=("select", "eval"), metadata={"nargs": "*"}
    )

    def __post_init__(self) -> None:
        if self.layer_stride < 1:
            raise ConfigError(
                f"search_layer_stride must be >= 1, got {self.layer_stride}.",
                "pass --search-layer-stride 1 or more.",
            )
        bad = [s for s in self.scopes if s not in SCOPES]
        if bad:
            raise ConfigError(f"unknown search scopes {bad}.", f"use some of: {', '.join(SCOPES)}.")
        bad = [s for s in self.patching if s not in ("select", "eval")]
        if bad:
            raise ConfigError(
                f"search_patching takes 'select' and 'eval', got {bad}.",
                "pass --search-patching select eval, one of them, or nothing.",
            )

    def spaces(self, n_layers: int, band_width: int = 3) -> tuple[SearchSpace, list[SearchSpace]]:
        """The grid for a model of ``n_layers``: the main space and the band space (if any)."""
        layers = tuple(range(0, n_layers, self.layer_stride))
        space = SearchSpace(
            directions=tuple(self.directions),
            layers=layers,
            alphas=tuple(self.alphas),
            scopes=tuple(s for s in self.scopes if s != "band") or ("colon",),
            taus=tuple(self.taus),
            gates=tuple(self.gates),
        )
        extra = []
        if "band" in self.scopes:
            band_dirs = tuple(d for d in self.band_directions if d in self.directions)
            extra.append(
                SearchSpace(
                    directions=band_dirs or (self.directions[0],),
                    layers=tuple(v for v in layers if v + band_width <= n_layers) or (0,),
                    alphas=tuple(self.alphas),
                    scopes=("band",),
                    band_width=band_width,
                    taus=tuple(self.taus),
                    gates=tuple(self.gates),
                )
            )
        return space, extra
