"""What the steering stages use of a fitted steering (a fitted FairSteer, or FairSteer under
another gate): protocols, because the estimator that implements them sits above this stage.

* :class:`SteererSource` — anything that builds a :class:`Steerer` per layer / mode / alpha / tau
  (the sweeps of :mod:`fairlens.analysis.sweeps` need only this);
* :class:`FittedSteering` — a steerer source that also names its hook, direction, settings, its
  last-position edit and where its gate fires (the panel's steered methods need this).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from jaxtyping import Bool, Float
from torch import Tensor

from fairlens.directions import Directions
from fairlens.models import ModelInfo
from fairlens.steer.steerer import PositionPolicy, Steerer, SteerMode

__all__ = ["FittedSteering", "SteererSource", "SteeringSettings"]


@runtime_checkable
class SteererSource(Protocol):
    """Anything that builds a :class:`Steerer` per layer/mode/alpha/tau (e.g. a fitted FairSteer)."""

    def steerer(
        self,
        *,
        mode: SteerMode = ...,
        alpha: float | None = ...,
        tau: float | None = ...,
        positions: PositionPolicy | None = ...,
        layer: int | None = ...,
    ) -> Steerer: ...


@runtime_checkable
class SteeringSettings(Protocol):
    """What the panel reads of a fitted steering's settings (FairSteerConfig has them)."""

    @property
    def steer_positions(self) -> PositionPolicy: ...

    @property
    def scope(self) -> str: ...

    @property
    def tau(self) -> float: ...


@runtime_checkable
class FittedSteering(SteererSource, Protocol):
    """What the panel methods use of a fitted :class:`~fairlens.FairSteer`."""

    @property
    def model_info_(self) -> ModelInfo: ...

    @property
    def hook_name_(self) -> str: ...

    @property
    def dsv_(self) -> Directions: ...

    @property
    def config(self) -> SteeringSettings: ...

    def last_position_edit(self, alpha: float | None = ...) -> dict[str, Tensor]: ...

    def gate_fires(
        self, acts: Mapping[str, Float[Tensor, "n d"]], tau: float | None = ...
    ) -> Bool[Tensor, " n"]: ...
