"""Contradictory command-line flags: a flag the user typed that the rest of the command would
silently ignore is refused, naming both flags and what to do.

Only flags given on the command line are checked (not a config file's keys: a report's ``config``
lists every key, and replaying it must work). Each rule is one function in :data:`RULES`, taking
the built config and the keys the user typed, and returning ``(cause, fix)`` or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fairlens.errors import ConfigError

Rule = Callable[[Any, set[str]], tuple[str, str] | None]


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _alpha_and_alphas(cfg: Any, given: set[str]) -> tuple[str, str] | None:
    if {"alpha", "alphas"} <= given:
        return (
            "--alpha fixes the steering strength, so the strengths of --alphas would never be "
            "tried.",
            "pass --alpha for one fixed strength, or --alphas for the search to choose among.",
        )
    return None


def _alphas_without_search(cfg: Any, given: set[str]) -> tuple[str, str] | None:
    if "alphas" in given and "alpha" not in given and cfg.fit.selection != "search":
        return (
            f"--alphas is only searched by --selection search; --selection "
            f"{cfg.fit.selection} steers at one fixed strength.",
            "drop --alphas (and give --alpha), or use --selection search.",
        )
    return None


def _band_width_unused(cfg: Any, given: set[str]) -> tuple[str, str] | None:
    searched = cfg.search.enabled and "band" in cfg.search.scopes
    if "band_width" in given and cfg.fit.scope != "band" and not searched:
        return (
            f"--band-width only applies to band steering, and neither --scope ({cfg.fit.scope}) "
            "nor the search uses bands.",
            "drop --band-width, or pass --scope band.",
        )
    return None


def _search_settings_without_search(cfg: Any, given: set[str]) -> tuple[str, str] | None:
    from fairlens.apps.run_config import RunConfig

    keys = [s.key for s in RunConfig.config_keys(("search",)) if s.key != "search"]
    typed = [k for k in keys if k in given]
    if typed and not cfg.search.enabled:
        flags = ", ".join(_flag(k) for k in typed)
        return (
            f"{flags} set the steering search, which this run does not do (--no-search).",
            "pass --search (or run `fairlens search`), or drop " + flags + ".",
        )
    return None


def _suite_settings_without_suite(cfg: Any, given: set[str]) -> tuple[str, str] | None:
    from fairlens.apps.run_config import RunConfig
    from fairlens.evaluate.suites import SUITES

    chosen = set(cfg.panel.suites)
    for spec in RunConfig.config_keys(("panel",)):
        owners = [name for name, suite in SUITES.items() if spec.key in suite.settings]
        if spec.key in given and owners and not chosen & set(owners):
            return (
                f"{_flag(spec.key)} sizes the {' / '.join(owners)} suite, which --suites "
                f"({' '.join(cfg.panel.suites)}) leaves out.",
                f"add {owners[0]} to --suites, or drop {_flag(spec.key)}.",
            )
    return None


RULES: tuple[Rule, ...] = (
    _alpha_and_alphas,
    _alphas_without_search,
    _band_width_unused,
    _search_settings_without_search,
    _suite_settings_without_suite,
)
"""Every conflict rule, in the order they are checked."""


def check_flags(cfg: Any, given: set[str]) -> None:
    """Refuse the first conflict among the flags ``given`` (flat keys) with :class:`ConfigError`."""
    for rule in RULES:
        found = rule(cfg, given)
        if found is not None:
            raise ConfigError(*found)
