"""The baselines panel: every debiasing method as a context over one model.

* ``base`` — the model as is.
* ``prompt`` — a debiasing instruction put before every input (:data:`DEBIAS_INSTRUCTION`).
* ``static`` — the DSV added at every steered position, no gate (the paper's "DSV only").
* ``fairsteer`` — the DSV added where the BAD probe says "biased" (dynamic activation steering).
* ``ablation`` — the DSV direction projected out of the steering layer's residual stream at every
  position (``a <- a - (a.u)u``, u = DSV / |DSV|): the orthogonal-projection eraser, which is what
  LEACE reduces to for one direction with isotropic covariance.

Each method is one :class:`PanelMethod` in :data:`METHODS`, applied by :func:`method_context` (a
context manager adding at most one hook and removing exactly it) plus :func:`method_instruction`
(the text prefix), so every suite runs every method the same way on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fairlens.backend import add_hooks
from fairlens.directions import Directions, project_out
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.models import ModelInfo, get_model_info
from fairlens.steer.steerer import GateStats, PositionPolicy, Steerer, SteerMode

__all__ = [
    "DEBIAS_INSTRUCTION",
    "METHODS",
    "METHOD_DESCRIPTIONS",
    "PANEL_METHODS",
    "PanelMethod",
    "check_methods",
    "method_context",
    "method_instruction",
]

DEBIAS_INSTRUCTION = (
    "Treat people of every age, disability status, gender identity, nationality, physical "
    "appearance, race, ethnicity, religion, socioeconomic status and sexual orientation equally. "
    "Do not rely on stereotypes: when the information given is not enough to answer, say that the "
    "answer cannot be determined."
)
"""The prompting baseline's instruction (fairlens' own wording of the usual debiasing prompt)."""


@runtime_checkable
class FittedSteering(Protocol):
    """What the panel methods use of a fitted :class:`~fairlens.FairSteer` (written as a protocol
    because the estimator sits above this stage)."""

    @property
    def model_info_(self) -> ModelInfo: ...

    @property
    def hook_name_(self) -> str: ...

    @property
    def dsv_(self) -> Directions: ...

    def steerer(
        self,
        *,
        mode: SteerMode = ...,
        alpha: float | None = ...,
        tau: float | None = ...,
        positions: PositionPolicy | None = ...,
        layer: int | None = ...,
    ) -> Steerer: ...


def _unsteered(
    model: Model, fairsteer: FittedSteering | None, positions: PositionPolicy, record: bool
) -> AbstractContextManager[GateStats | None]:
    return nullcontext(None)


def _fitted(fairsteer: FittedSteering | None) -> FittedSteering:
    if fairsteer is None:  # method_context refuses this first; kept for direct callers
        raise ConfigError("this method needs a fitted FairSteer.", "pass fairsteer=...")
    return fairsteer


@contextmanager
def _steered(
    mode: SteerMode,
    model: Model,
    fairsteer: FittedSteering | None,
    positions: PositionPolicy,
    record: bool,
) -> Iterator[GateStats | None]:
    steerer = _fitted(fairsteer).steerer(mode=mode, positions=positions)
    with steerer.apply(model, record=record) as stats:
        yield stats


@contextmanager
def _ablated(
    model: Model, fairsteer: FittedSteering | None, positions: PositionPolicy, record: bool
) -> Iterator[GateStats | None]:
    fs = _fitted(fairsteer)
    name = fs.hook_name_
    with add_hooks(model, [(name, project_out(fs.dsv_.at(name), where=name))]):
        yield None


@dataclass(frozen=True)
class PanelMethod:
    """One debiasing method of the panel (an entry of :data:`METHODS`).

    Attributes:
        name: Registry key.
        description: One line for reports.
        needs_fit: Needs a fitted FairSteer (its direction, gate or layer).
        instruction: Text put before every input (the prompting baseline), else ``None``.
        apply: ``apply(model, fairsteer, positions, record)`` -> a context manager that applies
            the method inside the block, yields its gate stats (or ``None``) and removes exactly
            the hooks it added.
    """

    name: str
    description: str
    needs_fit: bool
    apply: Callable[
        [Model, FittedSteering | None, PositionPolicy, bool],
        AbstractContextManager[GateStats | None],
    ]
    instruction: str | None = None


METHODS: dict[str, PanelMethod] = {
    m.name: m
    for m in (
        PanelMethod("base", "no intervention", False, _unsteered),
        PanelMethod(
            "prompt", "debiasing instruction prepended", False, _unsteered, DEBIAS_INSTRUCTION
        ),
        PanelMethod(
            "static",
            "DSV added at every steered position (DSV only)",
            True,
            lambda m, fs, pos, rec: _steered("static", m, fs, pos, rec),
        ),
        PanelMethod(
            "fairsteer",
            "DSV added where the probe says biased (dynamic)",
            True,
            lambda m, fs, pos, rec: _steered("dynamic", m, fs, pos, rec),
        ),
        PanelMethod("ablation", "DSV direction projected out at every position", True, _ablated),
    )
}
"""The panel's methods; adding one is one entry here (every suite then runs it)."""

METHOD_DESCRIPTIONS: dict[str, str] = {name: m.description for name, m in METHODS.items()}
PANEL_METHODS: tuple[str, ...] = tuple(METHODS)


def check_methods(methods: tuple[str, ...] | list[str], fairsteer: FittedSteering | None) -> None:
    """Refuse unknown methods, and steered methods without a fitted FairSteer."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown methods {unknown}.", f"use some of: {', '.join(PANEL_METHODS)}."
        )
    needs = sorted(m for m in methods if METHODS[m].needs_fit)
    if fairsteer is None and needs:
        raise ConfigError(
            f"methods {needs} need a fitted FairSteer.",
            "pass fairsteer=FairSteer(...).fit(...), or use only 'base' and 'prompt'.",
        )


def method_instruction(method: str) -> str | None:
    """The text put before every input for ``method`` (only the prompting baseline has one)."""
    entry = METHODS.get(method)
    return None if entry is None else entry.instruction


@contextmanager
def method_context(
    method: str,
    model: Model,
    fairsteer: FittedSteering | None = None,
    *,
    positions: PositionPolicy = "generated",
    record: bool = False,
) -> Iterator[GateStats | None]:
    """Apply ``method`` to ``model`` inside the block; yields gate stats for steered methods.

    Args:
        method: One of :data:`PANEL_METHODS`.
        model: ``HookedTransformer`` or the plain transformers twin (fast path).
        fairsteer: The fitted FairSteer (for ``static``, ``fairsteer``, ``ablation``).
        positions: Steering position policy for ``static``/``fairsteer`` (ablation acts everywhere).
        record: Record the gate's decisions per call (and a dynamic gate's probabilities).
    """
    check_methods([method], fairsteer)
    entry = METHODS[method]
    if fairsteer is not None and entry.needs_fit:  # one check for every steered method
        get_model_info(model).check_matches(fairsteer.model_info_.fingerprint(), what="FairSteer")
    with entry.apply(model, fairsteer, positions, record) as stats:
        yield stats
