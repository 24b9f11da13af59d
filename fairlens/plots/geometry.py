"""Figures for direction geometry: cosine heatmaps and per-layer agreement between methods."""

from __future__ import annotations

import plotly.graph_objects as go

from fairlens.analysis.entanglement import EntanglementResult
from fairlens.analysis.geometry import CosineMatrix, MethodCosines
from fairlens.plots._common import finish, layer_of

__all__ = ["cosine_heatmap", "method_cosine_curves"]

_PLURAL = {"layer": "layers", "category": "BBQ categories", "method": "methods"}


def cosine_heatmap(cm: CosineMatrix, *, title: str | None = None) -> go.Figure:
    """Symmetric cosine-similarity heatmap (diverging colours centred on 0)."""
    labels = [str(layer_of(s)) if cm.what == "layer" else s for s in cm.labels]
    k = len(labels)
    fig = go.Figure(
        go.Heatmap(
            z=cm.matrix,
            x=labels,
            y=labels,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=[[f"{v:.2f}" for v in row] for row in cm.matrix],
            texttemplate="%{text}" if k <= 12 else None,
            colorbar={"title": {"text": "cosine"}},
            hovertemplate="%{y} vs %{x}<br>cosine %{z:.3f}<extra></extra>",
        )
    )
    where = f" at {cm.hook_name}" if cm.hook_name else ""
    axis = {"layer": "layer (block index)", "category": "BBQ category", "method": "method"}[cm.what]
    size = max(520, min(900, 40 * k + 260))
    fig.update_yaxes(autorange="reversed")
    return finish(
        fig,
        title or f"Cosine similarity of directions across {_PLURAL[cm.what]}{where}",
        x=axis,
        y=axis,
        width=size + 80,
        height=size,
    )


def method_cosine_curves(mc: MethodCosines, *, title: str | None = None) -> go.Figure:
    """Cosine between each pair of direction estimators, per layer."""
    layers = [layer_of(h) for h in mc.hook_names]
    fig = go.Figure()
    for (a, b), vals in zip(mc.pairs, mc.values, strict=True):
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=vals,
                mode="lines+markers",
                name=f"{a} vs {b}",
                hovertemplate=f"{a} vs {b}<br>layer %{{x}}<br>cosine %{{y:.3f}}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line={"color": "grey", "dash": "dot"})
    fig.update_yaxes(range=[-1.05, 1.05])
    return finish(
        fig,
        title or "Agreement between direction estimators per layer",
        x="layer (block index)",
        y="cosine similarity",
    )


def entanglement_heatmap(result: EntanglementResult, *, title: str | None = None) -> go.Figure:
    """Source x target Δ ambiguous accuracy (points; diverging colours centred on 0)."""
    z = result.delta
    bound = float(max(1.0, abs(z).max()))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{t} (n={result.n_ambig[t]})" for t in result.targets],
            y=list(result.sources),
            zmin=-bound,
            zmax=bound,
            colorscale="RdBu",
            text=[[f"{v:+.1f}" for v in row] for row in z],
            texttemplate="%{text}",
            colorbar={"title": {"text": "Δ acc_amb (pts)"}},
            hovertemplate="direction from %{y}<br>scored on %{x}<br>Δ %{z:+.1f} pts<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    size = max(520, min(900, 45 * len(result.targets) + 300))
    return finish(
        fig,
        title
        or f"Direction fitted on one category, effect on every category ({result.hook}, "
        f"α={result.alpha:g}×‖h‖)",
        x="scored category (ambiguous items)",
        y="direction fitted on",
        width=size + 120,
        height=size,
    )
