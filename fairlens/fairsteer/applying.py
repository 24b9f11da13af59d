"""Applying a fitted FairSteer: the chosen hook, layer and strength, the gated steerer built from
them, and the one-line summary of what was fitted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from fairlens.backend import hook_name
from fairlens.detect.layer_sweep import SweepResult
from fairlens.directions import Directions
from fairlens.errors import ConfigError, NotFittedError
from fairlens.fairsteer.config import FairSteerConfig
from fairlens.model_types import Model
from fairlens.models import ModelInfo, get_model_info
from fairlens.steer.steerer import GateStats, PositionPolicy, Steerer, SteeringConfig, SteerMode


class FittedSteering:
    """What a fitted FairSteer holds and how it is applied (the base of FairSteer; FairSteer.fit
    and FairSteer.load fill it).
    """

    config: FairSteerConfig
    dsv_: Directions
    gates_: dict[str, SweepResult]
    gate_notes_: dict[str, str]
    layer_: int
    alpha_: float
    model_info_: ModelInfo
    residual_norms_: Tensor
    selection_: dict[str, Any]
    probe_counts_: dict[str, int]
    base_probe_accuracy_: float | None
    direction_cosines_: dict[str, Any]
    label_composition_: dict[str, Any]

    # ------------------------------------------------------------------ applying
    def _check_fitted(self) -> None:
        if not hasattr(self, "layer_"):
            raise NotFittedError(
                "This FairSteer is not fitted yet.",
                "Call .fit(model, ...) or FairSteer.load(path) first.",
            )

    @property
    def sweep_(self) -> SweepResult:
        """The probe sweep of the gate in use (``config.gate``)."""
        self._check_fitted()
        return self.gates_[self.config.gate]

    @property
    def hook_name_(self) -> str:
        self._check_fitted()
        return hook_name(self.config.hook_kind, self.layer_)

    @property
    def layers_(self) -> tuple[int, ...]:
        """Every steered layer (one, or the band)."""
        self._check_fitted()
        width = self.config.band_width if self.config.scope == "band" else 1
        return tuple(range(self.layer_, self.layer_ + width))

    def relative_strength(self, alpha: float | None = None, layer: int | None = None) -> float:
        """``||alpha v|| / mean ||h||`` at the (first) steered layer."""
        layer = self.layer_ if layer is None else layer
        hook = hook_name(self.config.hook_kind, layer)
        vec = self._vector(hook, self.alpha_ if alpha is None else alpha)
        return float(vec.norm()) / float(self.residual_norms_[self.dsv_.hook_names.index(hook)])

    def _vector(self, hook: str, alpha: float) -> Tensor:
        """The vector added at ``hook``: alpha (in the config's unit) times the direction."""
        v = self.dsv_.at(hook).float()
        if self.config.alpha_unit == "absolute":
            return alpha * v
        norm = float(v.norm())
        if not norm > 0:
            raise ConfigError(
                f"the direction at {hook} is zero; a relative strength is undefined.",
                "pass layer= another fitted layer, or refit on more items.",
            )
        return alpha * float(self.residual_norms_[self.dsv_.hook_names.index(hook)]) / norm * v

    def steerer(
        self,
        *,
        mode: SteerMode = "dynamic",
        alpha: float | None = None,
        tau: float | None = None,
        positions: PositionPolicy | None = None,
        layer: int | None = None,
    ) -> Steerer:
        """A :class:`Steerer` for the chosen (or another fitted) layer; ``alpha`` in the config's unit."""
        self._check_fitted()
        layer = self.layer_ if layer is None else layer
        cfg = self.config
        width = cfg.band_width if cfg.scope == "band" else 1
        names = [hook_name(cfg.hook_kind, v) for v in range(layer, layer + width)]
        missing = [n for n in names if n not in self.dsv_.hook_names]
        if missing:
            raise ConfigError(
                f"Layer(s) {missing} were not fitted; fitted layers: {list(self.sweep_.layers)}.",
                "pass a fitted layer (for scope='band', one whose whole band was fitted).",
            )
        strength = self.alpha_ if alpha is None else alpha
        gate = self.gates_[cfg.gate]
        idx = gate.hook_names.index(names[0])
        config = SteeringConfig(
            mode=mode,
            alpha=0.0 if strength == 0 else 1.0,  # the vectors below carry the strength
            tau=cfg.tau if tau is None else tau,
            positions=cfg.steer_positions if positions is None else positions,
        )
        vectors = [self._vector(n, strength) for n in names]
        return Steerer(
            names[0],
            vectors[0],
            gate.coef[idx].float(),
            gate.intercept[idx].float(),
            config,
            band=list(zip(names[1:], vectors[1:], strict=True)),
        )

    def last_position_edit(self, alpha: float | None = None) -> dict[str, Tensor]:
        """Hook -> vector the static steerer adds at the last prompt position (for a prefix cache)."""
        self._check_fitted()
        strength = self.alpha_ if alpha is None else alpha
        return {
            hook_name(self.config.hook_kind, v): self._vector(
                hook_name(self.config.hook_kind, v), strength
            )
            for v in self.layers_
        }

    def gate_fires(
        self, acts: Mapping[str, Float[Tensor, "n d"]], tau: float | None = None
    ) -> Bool[Tensor, " n"]:
        """Where the gate fires for unsteered activations ``acts[hook]`` at the gated layer."""
        self._check_fitted()
        gate = self.gates_[self.config.gate]
        i = gate.hook_names.index(self.hook_name_)
        a = acts[self.hook_name_].double()
        p = torch.sigmoid(a @ gate.coef[i].double() + gate.intercept[i].double())
        return p.float() < (self.config.tau if tau is None else tau)

    @contextmanager
    def steering(
        self, model: Model, mode: SteerMode = "dynamic", **kwargs: Any
    ) -> Iterator[GateStats]:
        """Steer ``model`` inside the block (removes exactly its hooks on exit); yields gate stats."""
        self._check_fitted()
        get_model_info(model).check_matches(self.model_info_.fingerprint(), what="FairSteer")
        with self.steerer(mode=mode, **kwargs).apply(model) as stats:
            yield stats

    def run_with_steering(
        self, model: Model, tokens: torch.Tensor, mode: SteerMode = "dynamic", **kwargs: Any
    ) -> torch.Tensor:
        """Logits of ``model(tokens)`` under steering (tokens left-padded if batched)."""
        with self.steering(model, mode=mode, **kwargs), torch.no_grad():
            return model(tokens)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of the fitted state (for reports)."""
        self._check_fitted()
        return {
            "layer": self.layer_,
            "layers": list(self.layers_),
            "hook_name": self.hook_name_,
            "direction": self.config.direction,
            "gate": self.config.gate,
            "scope": self.config.scope,
            "alpha": self.alpha_,
            "alpha_unit": self.config.alpha_unit,
            "relative_strength": self.relative_strength(),
            "tau": self.config.tau,
            "probe_counts": self.probe_counts_,
            "base_accuracy_on_probe_items": self.base_probe_accuracy_,
            "gates": {k: v.to_dict() for k, v in self.gates_.items()},
            "gate_notes": self.gate_notes_,
            "label_composition": self.label_composition_,
            "dsv": self.dsv_.to_dict(),
            "residual_norms": [round(float(x), 4) for x in self.residual_norms_],
            "direction_cosines": self.direction_cosines_,
            "selection": {k: v for k, v in self.selection_.items() if k != "rows"},
        }
