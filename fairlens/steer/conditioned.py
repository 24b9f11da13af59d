"""FairSteer's vector under a CAST-style condition gate (the panel's ``cast`` baseline).

:meth:`FitData.condition_gate <fairlens.steer.fit_data.FitData.condition_gate>` fits a
:class:`~fairlens.detect.condition_gate.ConditionGate` at the fitted FairSteer's steering hook: its direction on the fit split's BAD-labelled activations (the
same rows FairSteer's probe is trained on), its threshold on the selection split's BAD labels (the
unsteered model's answers there). :class:`ConditionedSteering` is the fitted FairSteer with that gate
in place of its probe — same layer, vector, strength and position policy — so the two gates are
compared with everything else held fixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from jaxtyping import Bool, Float
from torch import Tensor

from fairlens.detect.condition_gate import ConditionGate
from fairlens.directions import Directions
from fairlens.errors import ConfigError
from fairlens.models import ModelInfo
from fairlens.steer.fitted import FittedSteering, SteeringSettings
from fairlens.steer.steerer import PositionPolicy, Steerer, SteerMode

__all__ = ["ConditionedSteering"]


class ConditionedSteering:
    """A fitted FairSteer whose dynamic gate is a :class:`ConditionGate` (the panel's ``cast``).

    Everything but the gate — hook, layer, vector, strength, positions — is the FairSteer's.
    """

    def __init__(self, fairsteer: FittedSteering, gate: ConditionGate) -> None:
        if gate.hook_name and gate.hook_name != fairsteer.hook_name_:
            raise ConfigError(
                f"the condition gate reads {gate.hook_name} but FairSteer steers at "
                f"{fairsteer.hook_name_}.",
                "fit the gate at the FairSteer's hook (fit_data.condition_gate(fs.hook_name_, ...)).",
            )
        self.base = fairsteer
        self.gate = gate

    @property
    def model_info_(self) -> ModelInfo:
        return self.base.model_info_

    @property
    def hook_name_(self) -> str:
        return self.base.hook_name_

    @property
    def dsv_(self) -> Directions:
        return self.base.dsv_

    @property
    def config(self) -> SteeringSettings:
        return self.base.config

    def steerer(
        self,
        *,
        mode: SteerMode = "dynamic",
        alpha: float | None = None,
        tau: float | None = None,
        positions: PositionPolicy | None = None,
        layer: int | None = None,
    ) -> Steerer:
        """FairSteer's steerer with the condition gate as its (exactly equivalent) linear gate."""
        inner = self.base.steerer(mode=mode, alpha=alpha, tau=tau, positions=positions, layer=layer)
        if inner.hook_name != self.hook_name_:
            raise ConfigError(
                f"the condition gate was fitted at {self.hook_name_}, not {inner.hook_name}.",
                "omit layer= (steer at the gate's hook), or fit a gate at that layer's hook.",
            )
        coef, intercept = self.gate.linear_gate(inner.config.tau)
        return Steerer(inner.hook_name, inner.vector, coef, intercept, inner.config, inner.band)

    def last_position_edit(self, alpha: float | None = None) -> dict[str, Tensor]:
        return self.base.last_position_edit(alpha)

    def gate_fires(
        self, acts: Mapping[str, Float[Tensor, "n d"]], tau: float | None = None
    ) -> Bool[Tensor, " n"]:
        """Where the condition gate fires for unsteered activations ``acts[hook]``."""
        return self.gate.fires(acts[self.hook_name_])

    def summary(self) -> dict[str, Any]:
        """The gate's selection record (for reports)."""
        return {
            "hook": self.hook_name_,
            "threshold": (  # None: -inf, the gate fires everywhere
                float(self.gate.threshold_) if np.isfinite(self.gate.threshold_) else None
            ),
            "n_fit": self.gate.n_fit_,
            "selection": {
                k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in self.gate.selection_.items()
            },
            "direction_cosine_with_dsv": _cosine(
                self.gate.direction_, self.dsv_.at(self.hook_name_)
            ),
        }


def _cosine(u: np.ndarray, v: Tensor) -> float:
    w = v.double().cpu().numpy()
    return float(u @ w / (np.linalg.norm(u) * np.linalg.norm(w)))
