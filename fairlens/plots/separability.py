"""Figures for layer separability: heatmaps, curves with spread, PCA grids, projection histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fairlens.analysis.heads import HeadSweep
from fairlens.analysis.separability import HookTypeSweep, LayerMetrics, PCAResult, ProjectionResult
from fairlens.detect.layer_sweep import SweepResult
from fairlens.plots._common import CLASS_COLOURS, CLASS_NAMES, finish, item_hover, layer_of

__all__ = [
    "head_heatmap",
    "hook_type_heatmap",
    "layer_curves",
    "metrics_curves",
    "pca_grid",
    "projection_histograms",
]


def hook_type_heatmap(res: HookTypeSweep, *, title: str | None = None) -> go.Figure:
    """Layers x hook-type heatmap of probe validation accuracy (%), best cell annotated."""
    z = 100 * res.accuracy
    text = [[f"{v:.0f}" if np.isfinite(v) else "" for v in row] for row in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(res.layers),
            y=list(res.kinds),
            colorscale="Viridis",
            zmin=50,
            zmax=100,
            text=text,
            texttemplate="%{text}" if len(res.layers) <= 32 else None,
            textfont={"size": 9 if len(res.layers) > 16 else 12},
            colorbar={"title": {"text": "val. acc. (%)"}},
            hovertemplate="layer %{x}<br>%{y}<br>accuracy %{z:.1f}%<extra></extra>",
        )
    )
    kind, layer = res.best()
    fig.add_annotation(x=layer, y=kind, text="best", showarrow=True, arrowhead=2, ay=-30)
    return finish(
        fig,
        title or f"Probe accuracy by layer and hook type (n={res.n})",
        x="layer (block index)",
        y="hook type",
        width=max(720, 34 * len(res.layers) + 220),
        height=380,
    )


def _band(
    fig: go.Figure, x: list[int], mean: np.ndarray, std: np.ndarray, name: str, colour: str
) -> None:
    """A mean curve with a +-1 std shaded band (legend-grouped)."""
    ok = np.isfinite(std)
    if ok.any():
        xs = [x[i] for i in range(len(x)) if ok[i]]
        up, lo = (mean + std)[ok], (mean - std)[ok]
        fig.add_trace(
            go.Scatter(
                x=xs + xs[::-1],
                y=list(up) + list(lo[::-1]),
                fill="toself",
                fillcolor=colour,
                opacity=0.18,
                line={"width": 0},
                hoverinfo="skip",
                legendgroup=name,
                showlegend=False,
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=mean,
            mode="lines+markers",
            name=name,
            line={"color": colour},
            legendgroup=name,
            hovertemplate=f"{name}<br>layer %{{x}}<br>%{{y:.1f}}<extra></extra>",
        )
    )


# 12 distinct colours: enough for BBQ's 11 categories without repeats.
_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#e7ba52",
]  # fmt: skip


def layer_curves(res: HookTypeSweep | SweepResult, *, title: str | None = None) -> go.Figure:
    """Probe accuracy per layer: CV mean with a +-1 std band, validation accuracy dashed."""
    fig = go.Figure()
    if isinstance(res, SweepResult):
        kinds = [res.hook_names[0].rsplit("hook_", 1)[-1]]
        layers = list(res.layers)
        rows = [
            (
                np.array([s.cv_mean for s in res.scores]),
                np.array([s.cv_std for s in res.scores]),
                np.array([s.accuracy for s in res.scores]),
            )
        ]
        n = res.n
    else:
        kinds, layers, n = list(res.kinds), list(res.layers), res.n
        rows = [(res.cv_mean[i], res.cv_std[i], res.accuracy[i]) for i in range(len(kinds))]
    for i, (kind, (mean, std, val)) in enumerate(zip(kinds, rows, strict=True)):
        colour = _PALETTE[i % len(_PALETTE)]
        if np.isfinite(mean).any():
            _band(fig, layers, 100 * mean, 100 * std, f"{kind} (CV mean ± std)", colour)
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=100 * val,
                mode="lines",
                line={"color": colour, "dash": "dash"},
                name=f"{kind} (validation)",
                visible=True if len(kinds) == 1 else "legendonly",
                hovertemplate=f"{kind} validation<br>layer %{{x}}<br>%{{y:.1f}}%<extra></extra>",
            )
        )
    fig.add_hline(y=50, line={"color": "grey", "dash": "dot"}, annotation_text="chance")
    return finish(
        fig,
        title
        or f"Linear probe accuracy across layers (n={n})"
        + ("; click the legend for validation curves" if len(kinds) > 1 else ""),
        x="layer (block index)",
        y="probe accuracy (%)",
    )


def metrics_curves(m: LayerMetrics, *, title: str | None = None) -> go.Figure:
    """Four stacked panels: probe accuracy, Fisher ratio, silhouette and margin per layer."""
    panels = [
        ("probe_accuracy", "probe accuracy (%)", 100.0),
        ("fisher", "Fisher ratio (unitless)", 1.0),
        ("silhouette", "silhouette (-1..1)", 1.0),
        ("margin", "median margin (act. units)", 1.0),
    ]
    fig = make_subplots(
        rows=4,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.07,
        subplot_titles=[p[1] for p in panels],
    )
    for i, (key, label, scale) in enumerate(panels, start=1):
        fig.add_trace(
            go.Scatter(
                x=list(m.layers),
                y=scale * getattr(m, key),
                mode="lines+markers",
                name=label,
                showlegend=False,
                line={"color": _PALETTE[i - 1]},
            ),
            row=i,
            col=1,
        )
    fig.update_xaxes(title_text="layer (block index)", row=4, col=1)
    return finish(
        fig,
        title or "Separability of biased vs unbiased activations per layer",
        width=900,
        height=860,
    )


def pca_grid(
    pca: PCAResult,
    *,
    categories: Sequence[str] | None = None,
    items: Sequence[Any] | None = None,
    colour_by: str = "label",
    max_panels: int = 12,
    title: str | None = None,
) -> go.Figure:
    """Small multiples: each layer's activations on its first two principal components.

    Args:
        pca: From :func:`~fairlens.analysis.layer_pca`.
        categories: ``[n]`` BBQ category per row (needed for ``colour_by="category"``).
        items: BBQ items for the hover text (matched by uid).
        colour_by: ``"label"`` (biased/unbiased) or ``"category"``.
        max_panels: At most this many layers, evenly spaced.
        title: Figure title.
    """
    if colour_by == "category" and categories is None:
        from fairlens.errors import ConfigError

        raise ConfigError(
            "colour_by='category' needs the category of each row.",
            "pass categories=[...] (one per row), or colour_by='label'.",
        )
    k = len(pca.hook_names)
    idx = sorted({round(i) for i in np.linspace(0, k - 1, min(k, max_panels))})
    cols = min(4, len(idx))
    rows = math.ceil(len(idx) / cols)
    titles = [
        f"layer {layer_of(pca.hook_names[i])} ({100 * pca.explained[i].sum():.0f}% var.)"
        for i in idx
    ]
    fig = make_subplots(
        rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.05, vertical_spacing=0.1
    )
    hover = item_hover(items, pca.uids)
    if colour_by == "category":
        assert categories is not None
        groups = {c: np.array([x == c for x in categories]) for c in sorted(set(categories))}
        colours = {c: _PALETTE[j % len(_PALETTE)] for j, c in enumerate(groups)}
        names = {c: c for c in groups}
    else:
        labels = pca.labels if pca.labels is not None else np.ones(len(pca.uids), dtype=int)
        groups = {c: labels == c for c in (1, 0) if (labels == c).any()}
        colours, names = CLASS_COLOURS, CLASS_NAMES
    for p, i in enumerate(idx):
        r, c = p // cols + 1, p % cols + 1
        for g, mask in groups.items():
            fig.add_trace(
                go.Scattergl(
                    x=pca.coords[i, mask, 0],
                    y=pca.coords[i, mask, 1],
                    mode="markers",
                    marker={"size": 5, "color": colours[g], "opacity": 0.7},  # type: ignore[index]
                    name=str(names[g]),  # type: ignore[index]
                    legendgroup=str(g),
                    showlegend=p == 0,
                    text=[hover[j] for j in np.flatnonzero(mask)],
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=r,
                col=c,
            )
    fig.update_xaxes(title_text="PC1", title_font={"size": 10}, showticklabels=False)
    fig.update_yaxes(title_text="PC2", title_font={"size": 10}, showticklabels=False)
    return finish(
        fig,
        title or f"PCA of activations per layer, coloured by {colour_by}",
        width=1100,
        height=270 * rows + 120,
    )


def projection_histograms(
    proj: ProjectionResult,
    *,
    items: Sequence[Any] | None = None,
    max_panels: int = 6,
    title: str | None = None,
) -> go.Figure:
    """Per-class histograms of the projection on a direction, one panel per layer, with a rug
    of individual items (hover shows the BBQ item)."""
    if proj.labels is None:
        from fairlens.errors import ConfigError

        raise ConfigError(
            "projection_histograms needs labelled projections.",
            "project labelled activations: projections(acts.with_labels(labels), ...).",
        )
    k = len(proj.hook_names)
    idx = sorted({round(i) for i in np.linspace(0, k - 1, min(k, max_panels))})
    cols = min(3, len(idx))
    rows = math.ceil(len(idx) / cols)
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"layer {layer_of(proj.hook_names[i])}" for i in idx],
        vertical_spacing=0.14,
    )
    hover = item_hover(items, proj.uids)
    for p, i in enumerate(idx):
        r, c = p // cols + 1, p % cols + 1
        for cls in (1, 0):
            mask = proj.labels == cls
            vals = proj.values[mask, i]
            fig.add_trace(
                go.Histogram(
                    x=vals, name=CLASS_NAMES[cls], marker_color=CLASS_COLOURS[cls], opacity=0.55,
                    nbinsx=25, legendgroup=str(cls), showlegend=p == 0,
                    hovertemplate="%{x}<br>%{y} items<extra></extra>",
                ),
                row=r, col=c,
            )  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=vals, y=np.full(len(vals), -0.5 - 0.7 * (1 - cls)), mode="markers",
                    marker={"symbol": "line-ns-open", "color": CLASS_COLOURS[cls], "size": 8},
                    legendgroup=str(cls), showlegend=False,
                    text=[hover[j] for j in np.flatnonzero(mask)],
                    hovertemplate="%{text}<br>projection %{x:.2f}<extra></extra>",
                ),
                row=r, col=c,
            )  # fmt: skip
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(
        title_text=f"projection on {proj.direction} (act. units)", title_font={"size": 11}
    )
    fig.update_yaxes(title_text="items", title_font={"size": 11})
    return finish(
        fig,
        title or f"Projection on the {proj.direction} direction by class",
        width=1100,
        height=330 * rows + 120,
    )


def head_heatmap(res: HeadSweep, *, title: str | None = None) -> go.Figure:
    """Per-head probe accuracy (%) as a layer x head heatmap; head labels name their KV group."""
    heads = [f"h{h} (kv{g})" for h, g in enumerate(res.kv_group)]
    fig = go.Figure(
        go.Heatmap(
            z=100 * res.accuracy.T,
            x=list(res.layers),
            y=heads,
            colorscale="Viridis",
            zmin=50,
            zmax=100,
            colorbar={"title": {"text": "val. acc. (%)"}},
            hovertemplate="layer %{x}<br>%{y}<br>accuracy %{z:.1f}%<extra></extra>",
        )
    )
    return finish(
        fig,
        title
        or f"Probe accuracy of each attention head's output (hook_z; {res.n_heads} heads, {res.n_kv_heads} KV groups)",
        x="layer (block index)",
        y="query head (KV group)",
        width=max(720, 26 * len(res.layers) + 200),
        height=max(360, 28 * res.n_heads + 160),
    )
