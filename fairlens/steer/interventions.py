"""The baselines panel: every debiasing method as a context over one model.

* ``base`` — the model as is.
* ``prompt`` — a debiasing instruction put before every input (:data:`DEBIAS_INSTRUCTION`).
* ``static`` — the DSV added at every steered position, no gate (the paper's "DSV only").
* ``fairsteer`` — the DSV added where the BAD probe says "biased" (dynamic activation steering).
* ``ablation`` — the DSV direction projected out of the steering layer's residual stream at every
  position (``a <- a - (a.u)u``, u = DSV / |DSV|): the orthogonal-projection eraser, which is what
  LEACE reduces to for one direction with isotropic covariance.
* ``calibrated`` — letter-prior calibration: the model unchanged, each answer letter's mean logit
  over a calibration split subtracted before the best letter is read
  (:class:`~fairlens.scoring.calibration.LetterPrior`; only suites that read letters change).
* ``cast`` — the DSV added where a CAST-style condition gate fires (the activation's projection on
  a condition direction above a threshold chosen on the selection split;
  :mod:`fairlens.steer.conditioned`), beside FairSteer's probe gate with everything else the same.

Each method is one :class:`PanelMethod` in :data:`METHODS`, applied by :func:`method_context` (a
context manager adding at most one hook and removing exactly it) plus :func:`method_instruction`
(the text prefix), so every suite runs every method the same way on the same inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

from fairlens.backend import add_hooks
from fairlens.detect.condition_gate import ConditionGate
from fairlens.directions import project_out
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.models import get_model_info
from fairlens.steer.conditioned import ConditionedSteering
from fairlens.steer.fitted import FittedSteering
from fairlens.steer.steerer import GateStats, PositionPolicy, SteerMode

__all__ = [
    "DEBIAS_INSTRUCTION",
    "DEFAULT_METHODS",
    "METHODS",
    "METHOD_DESCRIPTIONS",
    "PANEL_METHODS",
    "PanelMethod",
    "check_methods",
    "method_context",
    "method_instruction",
    "method_steering",
]

DEBIAS_INSTRUCTION = (
    "Treat people of every age, disability status, gender identity, nationality, physical "
    "appearance, race, ethnicity, religion, socioeconomic status and sexual orientation equally. "
    "Do not rely on stereotypes: when the information given is not enough to answer, say that the "
    "answer cannot be determined."
)
"""The prompting baseline's instruction (fairlens' own wording of the usual debiasing prompt)."""


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
        steer_mode: ``"static"``/``"dynamic"`` for methods that add the FairSteer vector at its
            positions (a prefix cache composes them exactly), else ``None``.
        needs_condition_gate: Steers under a fitted :class:`ConditionGate` instead of the probe.
        letter_prior: An output-side correction (subtract the letter prior); the model is unchanged.
    """

    name: str
    description: str
    needs_fit: bool
    apply: Callable[
        [Model, FittedSteering | None, PositionPolicy, bool],
        AbstractContextManager[GateStats | None],
    ]
    instruction: str | None = None
    steer_mode: SteerMode | None = None
    needs_condition_gate: bool = False
    letter_prior: bool = False


def _steering_method(
    name: str, description: str, mode: SteerMode, *, needs_condition_gate: bool = False
) -> PanelMethod:
    """A method that adds the fitted vector at FairSteer's positions in ``mode`` (its context and
    its ``steer_mode`` both from ``mode``)."""
    return PanelMethod(
        name,
        description,
        True,
        lambda m, fs, pos, rec: _steered(mode, m, fs, pos, rec),
        steer_mode=mode,
        needs_condition_gate=needs_condition_gate,
    )


METHODS: dict[str, PanelMethod] = {
    m.name: m
    for m in (
        PanelMethod("base", "no intervention", False, _unsteered),
        PanelMethod(
            "prompt", "debiasing instruction prepended", False, _unsteered, DEBIAS_INSTRUCTION
        ),
        _steering_method("static", "DSV added at every steered position (DSV only)", "static"),
        _steering_method("fairsteer", "DSV added where the probe says biased (dynamic)", "dynamic"),
        PanelMethod("ablation", "DSV direction projected out at every position", True, _ablated),
        PanelMethod(
            "calibrated",
            "letter-prior calibration (mean letter logits of a calibration split subtracted)",
            False,
            _unsteered,
            letter_prior=True,
        ),
        _steering_method(
            "cast",
            "DSV added where the condition-direction projection exceeds a selected threshold",
            "dynamic",
            needs_condition_gate=True,
        ),
    )
}
"""The panel's methods; adding one is one entry here (every suite then runs it)."""

METHOD_DESCRIPTIONS: dict[str, str] = {name: m.description for name, m in METHODS.items()}
PANEL_METHODS: tuple[str, ...] = tuple(METHODS)
DEFAULT_METHODS: tuple[str, ...] = tuple(
    m for m, e in METHODS.items() if not (e.letter_prior or e.needs_condition_gate)
)
"""The methods ``evaluate_panel`` runs by default: those that need nothing fitted beyond a
FairSteer (``fairlens run`` also fits the baselines' calibration and condition gate, and runs all
of :data:`PANEL_METHODS`)."""


def check_methods(
    methods: tuple[str, ...] | list[str],
    fairsteer: FittedSteering | None,
    condition_gate: ConditionGate | None = None,
) -> None:
    """Refuse unknown methods, steered methods without a fitted FairSteer, and ``cast`` without
    a fitted condition gate."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(
            f"unknown methods {unknown}.", f"use some of: {', '.join(PANEL_METHODS)}."
        )
    needs = sorted(m for m in methods if METHODS[m].needs_fit)
    if fairsteer is None and needs:
        raise ConfigError(
            f"methods {needs} need a fitted FairSteer.",
            "pass fairsteer=FairSteer(...).fit(...), or use only 'base', 'prompt' and 'calibrated'.",
        )
    gated = sorted(m for m in methods if METHODS[m].needs_condition_gate)
    if condition_gate is None and gated:
        raise ConfigError(
            f"methods {gated} need a fitted condition gate.",
            "pass condition_gate=fit_data.condition_gate(fs.hook_name_, select_items) "
            "(fairlens run fits it on the selection split), or drop them.",
        )


def method_steering(
    method: str, fairsteer: FittedSteering, condition_gate: ConditionGate | None = None
) -> FittedSteering:
    """The fitted steering ``method`` applies: FairSteer's, or FairSteer's under the condition gate."""
    if METHODS[method].needs_condition_gate:
        if condition_gate is None:
            check_methods([method], fairsteer, None)  # raises the one-line error
        assert condition_gate is not None
        return ConditionedSteering(fairsteer, condition_gate)
    return fairsteer


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
    condition_gate: ConditionGate | None = None,
) -> Iterator[GateStats | None]:
    """Apply ``method`` to ``model`` inside the block; yields gate stats for steered methods.

    Args:
        method: One of :data:`PANEL_METHODS`.
        model: ``HookedTransformer`` or the plain transformers twin (fast path).
        fairsteer: The fitted FairSteer (for ``static``, ``fairsteer``, ``ablation``).
        positions: Steering position policy for ``static``/``fairsteer`` (ablation acts everywhere).
        record: Record the gate's decisions per call (and a dynamic gate's probabilities).
        condition_gate: The fitted condition gate (for ``cast``).

    ``calibrated`` changes no activation: inside its block the model is the base model (the suites
    that read answer letters subtract the letter prior themselves).
    """
    check_methods([method], fairsteer, condition_gate)
    entry = METHODS[method]
    steering = fairsteer
    if fairsteer is not None and entry.needs_fit:  # one check for every steered method
        get_model_info(model).check_matches(fairsteer.model_info_.fingerprint(), what="FairSteer")
        steering = method_steering(method, fairsteer, condition_gate)
    with entry.apply(model, steering, positions, record) as stats:
        yield stats
