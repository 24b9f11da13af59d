"""Plotly figures for fairlens results.

Every function takes a result dataclass from :mod:`fairlens.analysis` (or a
:class:`~fairlens.detect.layer_sweep.SweepResult`) and returns a ``plotly.graph_objects.Figure`` with a title,
axis titles with units and a legend. They never show or write anything: writing figures is the job
of :func:`fairlens.apps.figures.regenerate_figures` and the ``fairlens figures`` command. Importing
this package imports plotly, so :mod:`fairlens` itself never imports it.
"""

from __future__ import annotations

from fairlens.plots.geometry import cosine_heatmap, entanglement_heatmap, method_cosine_curves
from fairlens.plots.separability import (
    head_heatmap,
    hook_type_heatmap,
    layer_curves,
    metrics_curves,
    pca_grid,
    projection_histograms,
)
from fairlens.plots.steering import (
    ablation_bars,
    explore_ablation,
    strength_curve,
    sweep_heatmap,
    tradeoff_scatter,
)
from fairlens.plots.tokens import token_figure

__all__ = [
    "ablation_bars",
    "cosine_heatmap",
    "entanglement_heatmap",
    "explore_ablation",
    "head_heatmap",
    "hook_type_heatmap",
    "layer_curves",
    "method_cosine_curves",
    "metrics_curves",
    "pca_grid",
    "projection_histograms",
    "strength_curve",
    "sweep_heatmap",
    "token_figure",
    "tradeoff_scatter",
]
