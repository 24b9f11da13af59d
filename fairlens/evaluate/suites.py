"""The registry of panel suites, and the panel's configuration.

Adding a suite is one module that builds a :class:`~fairlens.evaluate.context.Suite` and one entry
here; the panel, the CLI's ``--suites`` choices and the report's ``n`` follow.
"""

from __future__ import annotations

from dataclasses import dataclass

from fairlens.errors import ConfigError
from fairlens.evaluate.context import SHARED_SETTINGS, PanelSettings, Suite
from fairlens.evaluate.suite_bbq import BBQ_SUITE
from fairlens.evaluate.suite_generation import OPEN_ENDED_SUITE
from fairlens.evaluate.suite_mcqa import MC_SUITE_ENTRIES
from fairlens.evaluate.suite_text import CROWS_SUITE, UTILITY_SUITE
from fairlens.evaluate.suite_unqover import UNQOVER_SUITE

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        BBQ_SUITE,
        CROWS_SUITE,
        OPEN_ENDED_SUITE,
        UTILITY_SUITE,
        UNQOVER_SUITE,
        *MC_SUITE_ENTRIES,
    )
}

DEFAULT_SUITES: tuple[str, ...] = ("bbq", "crows", "open_ended", "utility")
"""The suites a run scores unless told otherwise (UNQOVER and the multiple-choice utility suites
are asked for by name: ``--suites ... unqover mmlu arc_easy arc_challenge openbookqa``)."""


def suite_settings(name: str) -> tuple[str, ...]:
    """The run settings a suite's saved results depend on (a resumed run keeps them while these
    are unchanged)."""
    return (*SHARED_SETTINGS, *SUITES[name].settings)


@dataclass(frozen=True)
class PanelConfig(PanelSettings):
    """What the panel runs (recorded in the report): methods, suites and scoring settings."""

    suites: tuple[str, ...] = DEFAULT_SUITES

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown:
            raise ConfigError(f"unknown suites {unknown}.", f"use some of: {', '.join(SUITES)}.")
        if not self.suites:
            raise ConfigError(
                "the panel needs at least one method and one suite.",
                "name at least one method (--methods) and one suite (--suites).",
            )
