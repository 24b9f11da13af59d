"""Error classes raised for user mistakes and missing resources.

Every fairlens error says what went wrong *and* how to fix it, so the CLI can print one line instead
of a traceback. Library code raises these for anything a user can cause (bad paths, malformed data,
unknown names, mismatched artifacts); genuine bugs still surface as ordinary exceptions.
Each class has a docs page under ``docs/errors/``.
"""

from __future__ import annotations


class FairlensError(Exception):
    """Base class: a user-facing error with a cause and a fix.

    Args:
        cause: What was expected and what was received.
        fix: The action (ideally an exact command) that resolves it.
    """

    def __init__(self, cause: str, fix: str | None = None) -> None:
        self.cause = cause
        self.fix = fix
        super().__init__(cause if fix is None else f"{cause} Fix: {fix}")

    def one_line(self) -> str:
        """The message as a single line (newlines folded), as printed by the CLI."""
        return " ".join(str(self).split())


class DataError(FairlensError):
    """A dataset is missing, unreadable or malformed (file, line and field are named)."""


class ModelLoadError(FairlensError):
    """A model spec cannot be resolved or loaded (unknown name, missing package, bad file)."""


class HookPointError(FairlensError, KeyError):
    """A hook name or layer does not exist on the model; suggests the nearest valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return Exception.__str__(self)


class ConfigError(FairlensError, ValueError):
    """An option or config value is out of range or inconsistent."""


class ArtifactError(FairlensError):
    """A saved artifact is unreadable or does not belong to the model it is applied to."""


class NotFittedError(FairlensError, AttributeError):
    """An estimator was used before ``fit``."""
