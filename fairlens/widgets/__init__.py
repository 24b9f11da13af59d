"""Interactive explorers for Jupyter, built on ipywidgets and plotly ``FigureWidget``.

Each explorer is thin: its callbacks call public fairlens functions that work without widgets
(:class:`~fairlens.analysis.LayerCache`, :func:`~fairlens.analysis.ablate`,
:func:`~fairlens.analysis.layer_pca`, :func:`~fairlens.analysis.token_view`...), and a user mistake
shows as one line in the explorer's status area, never as a traceback in the notebook.

Importing ``fairlens`` never imports ipywidgets; this package needs it and anywidget (plotly's
``FigureWidget``): ``pip install 'fairlens[widgets]'``; it says so in one line when they are missing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    "AblationExplorer": "ablation",
    "SeparabilityExplorer": "separability",
    "SteeringExplorer": "steering",
    "TokenExplorer": "tokens",
}

__all__ = ["AblationExplorer", "SeparabilityExplorer", "SteeringExplorer", "TokenExplorer"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fairlens.widgets' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"fairlens.widgets.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from fairlens.widgets.ablation import AblationExplorer
    from fairlens.widgets.separability import SeparabilityExplorer
    from fairlens.widgets.steering import SteeringExplorer
    from fairlens.widgets.tokens import TokenExplorer
