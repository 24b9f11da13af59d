"""The baselines panel: every debiasing method as a context over one model.

* ``base`` — the model as is.
* ``prompt`` — a debiasing instruction put before every input (:data:`DEBIAS_INSTRUCTION`).
* ``static`` — the DSV added at every steered position, no gate (the paper's "DSV only").
* ``fairsteer`` — the DSV added where the BAD probe says "biased" (dynamic activation steering).
* ``ablation`` — the DSV direction projected out of the steering layer's residual stream at every
  position (``a <- a - (a.u)u``, u = DSV / |DSV|): the orthogonal-projection eraser, which is what
  LEACE reduces to for one direction with isotropic covariance.

Every method is applied by :func:`method_context` (a context manager adding at most one hook and
removing exactly it) plus :func:`method_instruction` (the text prefix), so every suite runs every
method the same way on the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fairlens.backend import add_hooks
from fairlens.directions import project_out
from fairlens.errors import ConfigError
from fairlens.models import get_model_info
from fairlens.steer.steerer import GateStats, PositionPolicy

__all__ = [
    "DEBIAS_INSTRUCTION",
    "METHOD_DESCRIPTIONS",
    "PANEL_METHODS",
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

METHOD_DESCRIPTIONS: dict[str, str] = {
    "base": "no intervention",
    "prompt": "debiasing instruction prepended",
    "static": "DSV added at every steered position (DSV only)",
    "fairsteer": "DSV added where the probe says biased (dynamic)",
    "ablation": "DSV direction projected out at every position",
}
PANEL_METHODS: tuple[str, ...] = tuple(METHOD_DESCRIPTIONS)
_NEEDS_FIT = {"static", "fairsteer", "ablation"}


def check_methods(methods: tuple[str, ...] | list[str], fairsteer: Any | None) -> None:
    """Refuse unknown methods, and steered methods without a fitted FairSteer."""
    unknown = [m for m in methods if m not in METHOD_DESCRIPTIONS]
    if unknown:
        raise ConfigError(
            f"unknown methods {unknown}.", f"use some of: {', '.join(PANEL_METHODS)}."
        )
    if fairsteer is None and _NEEDS_FIT.intersection(methods):
        raise ConfigError(
            f"methods {sorted(_NEEDS_FIT.intersection(methods))} need a fitted FairSteer.",
            "pass fairsteer=FairSteer(...).fit(...), or use only 'base' and 'prompt'.",
        )


def method_instruction(method: str) -> str | None:
    """The text put before every input for ``method`` (only the prompting baseline has one)."""
    return DEBIAS_INSTRUCTION if method == "prompt" else None


@contextmanager
def method_context(
    method: str,
    model: Any,
    fairsteer: Any | None = None,
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
        record: Record the gate's probabilities (``fairsteer`` only).
    """
    check_methods([method], fairsteer)
    if method in ("base", "prompt"):
        yield None
        return
    assert fairsteer is not None
    if method in ("static", "fairsteer"):
        mode = "static" if method == "static" else "dynamic"
        steerer = fairsteer.steerer(mode=mode, positions=positions)
        get_model_info(model).check_matches(fairsteer.model_info_.fingerprint(), what="FairSteer")
        with steerer.apply(model, record=record and mode == "dynamic") as stats:
            yield stats
        return
    get_model_info(model).check_matches(fairsteer.model_info_.fingerprint(), what="FairSteer")
    name = fairsteer.hook_name_
    fn = project_out(fairsteer.dsv_.at(name), where=name)
    with add_hooks(model, [(name, fn)]):
        yield None
