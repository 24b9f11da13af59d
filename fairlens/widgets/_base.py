"""What every explorer shares: the ipywidgets import with a one-line error, a status line where
mistakes are reported (never a traceback), timing of each update, and display only inside Jupyter."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable
from typing import Any

from fairlens.errors import ConfigError, FairlensError


def require_widgets() -> Any:
    """The ``ipywidgets`` module, or a one-line error saying how to install it."""
    try:
        import anywidget  # noqa: F401 - plotly's FigureWidget needs it
        import ipywidgets
    except ImportError as exc:
        raise ConfigError(
            f"fairlens.widgets needs ipywidgets and anywidget ({exc.name or exc} is missing).",
            "pip install 'fairlens[widgets]', then restart the kernel.",
        ) from exc
    return ipywidgets


def in_jupyter() -> bool:
    """Whether a Jupyter kernel runs this code (widgets render only there)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def json_safe(values: Any) -> Any:
    """Nested lists / arrays with NaN and infinities as ``None`` (a widget's comm messages must be
    strict JSON; plotly draws ``None`` as a gap)."""
    if hasattr(values, "tolist"):
        values = values.tolist()
    if isinstance(values, (list, tuple)):
        return [json_safe(v) for v in values]
    if isinstance(values, float) and not math.isfinite(values):
        return None
    return values


class Explorer:
    """Base of the explorers: ``status`` (an HTML line), ``last_error``, ``last_update_s`` and
    ``widget`` (the layout to display). Subclasses build ``widget`` and call :meth:`guarded`."""

    widget: Any

    def __init__(self) -> None:
        self._w = require_widgets()
        self.status = self._w.HTML(value="")
        self.last_error: str | None = None
        self.last_update_s: float | None = None

    def guarded(self, what: str, fn: Callable[[], str | None]) -> bool:
        """Run ``fn`` (one update); its message, or the error it raised, goes to the status line.

        A fairlens error shows its cause and fix; any other exception its type and message (a bug
        to report, still not a traceback in the notebook). Returns whether it succeeded.
        """
        t0 = time.perf_counter()
        try:
            note = fn()
        except FairlensError as exc:
            return self._fail(str(exc))
        except Exception as exc:
            return self._fail(f"unexpected {type(exc).__name__} while {what}: {exc}")
        self.last_update_s = time.perf_counter() - t0
        self.last_error = None
        text = f"{what}: {self.last_update_s:.2f} s" + (f" · {note}" if note else "")
        self.status.value = f"<span style='color:#555'>{html.escape(text)}</span>"
        return True

    def _fail(self, message: str) -> bool:
        self.last_error = message
        self.status.value = (
            f"<span style='color:#b00020'><b>error:</b> {html.escape(message)}</span>"
        )
        return False

    def show(self) -> Any:
        """Display the explorer (Jupyter only; elsewhere a one-line error)."""
        if not in_jupyter():
            raise ConfigError(
                "fairlens explorers need a running Jupyter kernel (JupyterLab or Notebook).",
                "open a notebook and run the cell there; outside Jupyter call the public "
                "functions the explorer uses (its docstring names them).",
            )
        from IPython.display import display

        display(self.widget)
        return None

    def _ipython_display_(self) -> None:
        self.show()
