"""Figures for steering sweeps and ablations: layer x alpha heatmaps, trade-off scatter, bars."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from fairlens.analysis.ablation import AblationEffect, AblationMethod, ablate, ablation_effect
from fairlens.analysis.strength import StrengthCurve
from fairlens.analysis.sweeps import SteeringSweep
from fairlens.data import BBQItem
from fairlens.model_types import Model
from fairlens.plots._common import MODE_COLOURS, finish
from fairlens.scoring.letters import ScoringMode

__all__ = [
    "ablation_bars",
    "explore_ablation",
    "strength_curve",
    "sweep_heatmap",
    "tradeoff_scatter",
]

_LABELS = {
    "acc_ambig": ("ambiguous accuracy (%)", 100.0),
    "acc_disambig": ("disambiguated accuracy (%)", 100.0),
    "s_amb": ("s_AMB (bias score, x100)", 1.0),
    "s_dis": ("s_DIS (bias score, x100)", 1.0),
    "gate_rate": ("gate rate (% of probed positions)", 100.0),
}


def sweep_heatmap(
    sweep: SteeringSweep,
    metric: str = "acc_ambig",
    *,
    modes: tuple[str, ...] = ("dynamic", "static"),
    tau: float | None = None,
    title: str | None = None,
) -> go.Figure:
    """Layer x alpha heatmap of one metric, one panel per mode, relative to the unsteered base."""
    label, scale = _LABELS[metric]
    base = getattr(sweep.base, metric) * scale if metric != "gate_rate" else 0.0
    fig = make_subplots(
        rows=1,
        cols=len(modes),
        subplot_titles=[f"{m} steering" for m in modes],
        horizontal_spacing=0.12,
    )
    grids = [scale * sweep.grid(metric, m, tau) for m in modes]
    finite = np.concatenate([g[np.isfinite(g)] for g in grids]) if grids else np.array([])
    span = float(np.max(np.abs(finite - base))) if finite.size else 1.0
    diverging = metric != "gate_rate"
    for i, (mode, z) in enumerate(zip(modes, grids, strict=True), start=1):
        fig.add_trace(
            go.Heatmap(
                z=z.T,
                x=[str(v) for v in sweep.layers],
                y=[f"{a:g}" for a in sweep.alphas],
                colorscale="RdBu" if diverging else "Viridis",
                zmid=base if diverging else None,
                zmin=base - span if diverging else None,
                zmax=base + span if diverging else None,
                text=[[f"{v:.1f}" for v in row] for row in z.T],
                texttemplate="%{text}",
                showscale=i == len(modes),
                colorbar={"title": {"text": label.split(" (")[0]}},
                hovertemplate=f"{mode}<br>layer %{{x}}<br>alpha %{{y}}<br>{label} %{{z:.2f}}<extra></extra>",
            ),
            row=1,
            col=i,
        )
        fig.update_xaxes(title_text="steered layer", type="category", row=1, col=i)
        fig.update_yaxes(
            title_text="alpha (DSV scale)" if i == 1 else None, type="category", row=1, col=i
        )
    tau_txt = f", tau={sweep.taus[0] if tau is None else tau:g}" if "dynamic" in modes else ""
    base_txt = f" (unsteered: {base:.1f})" if metric != "gate_rate" else ""
    return finish(
        fig,
        title
        or f"{label} under steering<br><sup>{base_txt.strip()}{tau_txt}, n={sweep.n_items} items</sup>",
        width=max(820, 380 * len(modes) + 120),
        height=430,
    )


def tradeoff_scatter(sweep: SteeringSweep, *, title: str | None = None) -> go.Figure:
    """Fairness-accuracy trade-off: |s_AMB| vs ambiguous accuracy, disambiguated accuracy as size."""
    fig = go.Figure()
    groups = {"base": [sweep.base], "dynamic": [], "static": []}
    for p in sweep.points:
        groups[p.mode].append(p)
    for mode, pts in groups.items():
        if not pts:
            continue
        fig.add_trace(
            go.Scatter(
                x=[100 * p.acc_ambig for p in pts],
                y=[abs(p.s_amb) for p in pts],
                mode="markers",
                name=mode if mode != "base" else "unsteered",
                marker={
                    "color": MODE_COLOURS[mode],
                    "size": [6 + 20 * np.nan_to_num(p.acc_disambig) for p in pts],
                    "symbol": "star" if mode == "base" else "circle",
                    "line": {"width": 1, "color": "black"},
                    "opacity": 0.85,
                },
                text=[
                    f"{mode}<br>layer {p.layer}, alpha {p.alpha:g}"
                    + (f", tau {p.tau:g}" if mode == "dynamic" else "")
                    + f"<br>acc_amb {100 * p.acc_ambig:.1f}%  acc_dis {100 * p.acc_disambig:.1f}%"
                    f"<br>s_AMB {p.s_amb:.2f}  s_DIS {p.s_dis:.2f}"
                    for p in pts
                ],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    return finish(
        fig,
        title
        or f"Fairness–accuracy trade-off of steering settings<br><sup>n={sweep.n_items} items; "
        "marker size = disambiguated accuracy</sup>",
        x="ambiguous accuracy (%) — higher is better",
        y="|s_AMB| (bias score, x100) — lower is better",
    )


def ablation_bars(effect: AblationEffect, *, title: str | None = None) -> go.Figure:
    """Grouped bars: change of accuracy (pp) and bias score under each ablation vs unablated."""
    deltas = effect.deltas()
    names = list(deltas)
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=["accuracy change (pp)", "bias-score change (x100)"]
    )
    for key, colour, col, scale in (
        ("acc_ambig", "#1f77b4", 1, 100.0),
        ("acc_disambig", "#aec7e8", 1, 100.0),
        ("s_amb", "#d62728", 2, 1.0),
        ("s_dis", "#ff9896", 2, 1.0),
    ):
        fig.add_trace(
            go.Bar(
                x=names,
                y=[scale * deltas[n][key] for n in names],
                name=_LABELS[key][0].split(" (")[0],
                marker_color=colour,
                hovertemplate=f"%{{x}}<br>{key} change %{{y:.2f}}<extra></extra>",
            ),
            row=1,
            col=col,
        )
    fig.update_yaxes(title_text="percentage points", row=1, col=1)
    fig.update_yaxes(title_text="score points", row=1, col=2)
    fig.update_xaxes(tickangle=-25)
    b = effect.base
    return finish(
        fig,
        title
        or f"Effect of ablations vs unablated (acc_amb {100 * b.acc_ambig:.1f}%, s_AMB {b.s_amb:.1f}; n={effect.n_items})",
        width=1000,
        height=480,
    )


def explore_ablation(
    model: Model,
    items: Sequence[BBQItem],
    hook: str,
    method: AblationMethod = "directional",
    *,
    direction: Tensor | None = None,
    mean: Tensor | None = None,
    head: int | None = None,
    scoring: ScoringMode = "letter",
    batch_size: int = 16,
) -> tuple[AblationEffect, Any]:
    """Notebook helper: pick a hook and a method, get the effect table and its bar figure.

    Returns:
        ``(effect, figure)``; print ``effect.table()`` and display ``figure``.
    """
    label = f"{method} @ {hook}" + (f"[{head}]" if head is not None else "")
    effect = ablation_effect(
        model,
        items,
        {label: lambda: ablate(model, hook, method, direction=direction, mean=mean, head=head)},
        scoring=scoring,
        batch_size=batch_size,
    )
    return effect, ablation_bars(effect)


def strength_curve(curve: StrengthCurve, *, title: str | None = None) -> go.Figure:
    """Strength against utility: BBQ ambiguous accuracy and every multiple-choice accuracy (95 %
    Wilson bars) along the strength, one panel per mode; the unsteered interval of each
    multiple-choice suite shaded, so the safe range is where its line stays in the band."""
    x = [100 * r for r in curve.relative]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("dynamic (FairSteer gate)", "static"),
                        shared_yaxes=True)  # fmt: skip
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2"]
    for col, mode in enumerate(("dynamic", "static"), start=1):
        amb = curve.series(mode, "acc_ambig")
        fig.add_trace(
            go.Scatter(x=x, y=[100 * v if v is not None else None for v in amb],
                       mode="lines+markers", name="BBQ ambiguous", legendgroup="amb",
                       line={"color": "#d62728", "width": 3}, showlegend=col == 1),
            row=1, col=col,
        )  # fmt: skip
        for k, suite in enumerate(curve.suites):
            colour = palette[k % len(palette)]
            acc = curve.series(mode, "accuracy", suite)
            ci = curve.series(mode, "ci", suite)
            low, high = ci[0]  # the unsteered interval
            fig.add_hrect(y0=100 * low, y1=100 * high, fillcolor=colour, opacity=0.08,
                          line_width=0, row=1, col=col)  # fmt: skip  # pyright: ignore[reportArgumentType]
            fig.add_trace(
                go.Scatter(
                    x=x, y=[100 * a for a in acc], mode="lines+markers",
                    name=f"{suite} (n={curve.n[suite]})", legendgroup=suite,
                    line={"color": colour}, showlegend=col == 1,
                    error_y={"type": "data", "symmetric": False,
                             "array": [100 * (c[1] - a) for a, c in zip(acc, ci, strict=True)],
                             "arrayminus": [100 * (a - c[0]) for a, c in zip(acc, ci, strict=True)]},
                ),
                row=1, col=col,
            )  # fmt: skip
    return finish(
        fig,
        title or f"Strength vs utility at {curve.hook} (BBQ n={curve.n['bbq_ambig']} ambiguous)",
        x="steering strength ‖αv‖/‖h‖ (%)",
        y="accuracy (%)",
        width=1000,
    )
