"""Interactive explorers for Jupyter, built on ipywidgets and plotly ``FigureWidget``.

Each explorer is thin: its callbacks call public fairlens functions that work without widgets
(:class:`~fairlens.analysis.LayerCache`, :func:`~fairlens.analysis.ablate`,
:func:`~fairlens.analysis.layer_pca`, :func:`~fairlens.analysis.token_view`...), and a user mistake
shows as one line in the explorer's status area, never as a traceback in the notebook.

Importing ``fairlens`` never imports ipywidgets; this package needs it and anywidget (plotly's
``FigureWidget``): ``pip install 'fairlens[widgets]'``; it says so in one line when they are missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fairlens.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "AblationExplorer": "ablation",
    "SeparabilityExplorer": "separability",
    "SteeringExplorer": "steering",
    "TokenExplorer": "tokens",
}

__all__ = ["AblationExplorer", "SeparabilityExplorer", "SteeringExplorer", "TokenExplorer"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:
    from fairlens.widgets.ablation import AblationExplorer
    from fairlens.widgets.separability import SeparabilityExplorer
    from fairlens.widgets.steering import SteeringExplorer
    from fairlens.widgets.tokens import TokenExplorer
