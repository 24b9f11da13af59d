"""Figures of a steering search: layer x alpha heatmaps per direction, patching ceiling, gates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fairlens.plots._common import finish
from fairlens.runtime import write_atomic
from fairlens.search.engine import SearchResult

__all__ = ["gate_sweeps", "patching_curves", "search_heatmaps", "write_search"]

_LABELS = {
    "acc_ambig": "ambiguous accuracy (%)",
    "acc_disambig": "disambiguated accuracy (%)",
    "acc_overall": "accuracy (%)",
}


def _grid(
    rows: Sequence[Mapping[str, Any]], metric: str
) -> tuple[list[int], list[float], np.ndarray]:
    layers = sorted({int(r["layer"]) for r in rows})
    alphas = sorted({float(r["alpha"]) for r in rows})
    z = np.full((len(alphas), len(layers)), np.nan)
    for r in rows:
        value = r.get(metric)
        if value is not None:
            z[alphas.index(float(r["alpha"])), layers.index(int(r["layer"]))] = 100 * value
    return layers, alphas, z


def search_heatmaps(
    result: SearchResult,
    metric: str = "acc_ambig",
    *,
    mode: str = "dynamic",
    scope: str = "colon",
    gate: str | None = None,
    tau: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Layer x alpha heatmap of ``metric`` on the selection split, one panel per direction.

    Colours are centred on the unsteered base; the chosen variant's cell is outlined. For dynamic
    mode the first gate and tau of the space are shown unless given.
    """
    if metric not in _LABELS:
        raise ValueError(f"metric must be one of {sorted(_LABELS)}; got {metric!r}.")
    space = result.space
    gate = gate or space.gates[0]
    tau = space.taus[0] if tau is None else tau
    rows = [
        r
        for r in result.rows
        if r["mode"] == mode
        and r["scope"] == scope
        and (mode == "static" or (r["gate"] == gate and abs(r["tau"] - tau) < 1e-12))
    ]
    directions = [d for d in space.directions if any(r["direction"] == d for r in rows)]
    if not directions:
        raise ValueError(f"no {mode}/{scope} rows in this search.")
    cols = min(4, len(directions))
    n_rows = -(-len(directions) // cols)
    fig = make_subplots(
        rows=n_rows,
        cols=cols,
        subplot_titles=directions,
        horizontal_spacing=0.06,
        vertical_spacing=0.14,
    )
    base = 100 * (result.base.get(metric) or 0.0)
    grids = [_grid([r for r in rows if r["direction"] == d], metric) for d in directions]
    finite = np.concatenate([g[2][np.isfinite(g[2])] for g in grids])
    span = float(np.max(np.abs(finite - base))) if finite.size else 1.0
    for i, (d, (layers, alphas, z)) in enumerate(zip(directions, grids, strict=True)):
        r, c = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[str(v) for v in layers],
                y=[f"{a:g}" for a in alphas],
                colorscale="RdBu",
                zmid=base,
                zmin=base - span,
                zmax=base + span,
                showscale=i == 0,
                colorbar={"title": {"text": "%"}},
                hovertemplate=f"{d}<br>layer %{{x}}<br>alpha %{{y}}<br>{_LABELS[metric]} %{{z:.1f}}<extra></extra>",
            ),
            row=r,
            col=c,
        )
    chosen = result.row(result.chosen)
    unit = space.alpha_unit
    head = title or (
        f"{_LABELS[metric]} on the selection split (n={result.settings.get('n_select')}), "
        f"{mode} {scope}"
        + (f", gate {gate}, tau {tau:g}" if mode == "dynamic" else "")
        + f"; base {base:.1f}%; chosen: {chosen['key']}"
    )
    fig = finish(fig, head, width=320 * cols + 120, height=300 * n_rows + 120)
    fig.update_xaxes(title_text="layer")
    fig.update_yaxes(title_text=f"alpha ({unit})")
    return fig


def patching_curves(
    result: SearchResult, split: str = "select", *, title: str | None = None
) -> go.Figure:
    """Per layer: accuracy when the instructed ``:`` residual is patched in, beside the search's best.

    Solid lines: the patching ceiling (ambiguous, disambiguated); dashed: the best dynamic variant of
    the grid at that layer (by ambiguous accuracy, selection split); dotted: base and prompt.
    """
    patch = result.patching.get(split)
    if not patch:
        raise ValueError(f"this search has no patching results for split {split!r}.")
    layers = [p["layer"] for p in patch["per_layer"]]
    fig = go.Figure()
    colours = {"acc_ambig": "#d62728", "acc_disambig": "#1f77b4"}
    for metric, colour in colours.items():
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=[100 * p[metric] for p in patch["per_layer"]],
                mode="lines+markers",
                name=f"patched: {_LABELS[metric]}",
                line={"color": colour},
            )
        )
        for what, dash in (("base", "dot"), ("prompt", "dash")):
            fig.add_hline(
                y=100 * patch[what][metric],
                line={"color": colour, "dash": dash, "width": 1},
                annotation_text=f"{what} {metric}",
                annotation_position="right",
            )
        if split == "select":
            best = []
            for layer in layers:
                cands = [r for r in result.rows if r["layer"] == layer and r["mode"] == "dynamic"]
                top = max(cands, key=lambda r: r["acc_ambig"], default=None)
                best.append(None if top is None else 100 * top[metric])
            fig.add_trace(
                go.Scatter(
                    x=layers,
                    y=best,
                    mode="lines",
                    line={"color": colour, "dash": "longdash"},
                    name=f"best dynamic variant: {_LABELS[metric]}",
                )
            )
    return finish(
        fig,
        title or f"Instruction patching at ':' per layer ({split} split, n={patch['n']})",
        x="layer",
        y="accuracy (%)",
    )


def gate_sweeps(diagnostics: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """Validation accuracy per layer of the BAD gate and its two controls on one plot."""
    fig = go.Figure()
    names = {
        "bad": "BAD (answered gold vs bias target)",
        "context": "control: context condition",
        "ambig": "ambiguous only: unknown vs bias target",
    }
    for key, sweep in diagnostics["gates"].items():
        if "unavailable" in sweep:
            continue
        fig.add_trace(
            go.Scatter(
                x=sweep["layers"],
                y=[100 * s["accuracy"] for s in sweep["scores"]],
                mode="lines+markers",
                name=f"{names.get(key, key)} (n={sweep['n']})",
            )
        )
    comp = diagnostics.get("composition", {}).get("pooled", {})
    note = ", ".join(
        f"{c}: {100 * v['share_ambig']:.0f}% ambiguous"
        for c, v in comp.items()
        if v.get("share_ambig") is not None
    )
    return finish(
        fig,
        title or f"Gate probes per layer (template-disjoint validation); BAD labels {note}",
        x="layer",
        y="validation accuracy (%)",
    )


def write_search(result: SearchResult, folder: str | Path) -> dict[str, str]:
    """Write ``search.json``, ``search.md`` and the figures as HTML into ``folder``; returns paths."""
    import json

    from fairlens.search.report import search_markdown

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "search.json", "markdown": out / "search.md"}
    write_atomic(paths["json"], json.dumps(result.to_dict(), indent=1))  # first: numbers
    write_atomic(paths["markdown"], search_markdown(result) + "\n")
    figures: dict[str, Any] = {}
    for mode in result.space.modes:
        for scope in result.space.scopes:
            for metric in ("acc_ambig", "acc_disambig"):
                try:
                    figures[f"heatmap_{mode}_{scope}_{metric}"] = search_heatmaps(
                        result, metric, mode=mode, scope=scope
                    )
                except ValueError:
                    continue
    for split in result.patching:
        figures[f"patching_{split}"] = patching_curves(result, split)
    if result.diagnostics:
        figures["gates"] = gate_sweeps(result.diagnostics)
    for name, fig in figures.items():
        path = out / f"{name}.html"
        fig.write_html(str(path), include_plotlyjs="cdn")
        paths[name] = path
    return {k: str(v) for k, v in paths.items()}
