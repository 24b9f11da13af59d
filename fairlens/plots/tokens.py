"""Highlighted-text figure: each token coloured by its projection on the DSV, gate shown below."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from fairlens.analysis.tokens import TokenView
from fairlens.plots._common import finish

__all__ = ["token_figure"]


def token_figure(view: TokenView, *, per_line: int = 14, title: str | None = None) -> go.Figure:
    """Tokens laid out as text, each cell coloured by its DSV projection (diverging at 0).

    Tokens the gate would steer (``P(unbiased) < tau``) are marked with a bold border; hovering a
    token shows its projection and gate probability.
    """
    n = len(view.tokens)
    rows = int(np.ceil(n / per_line))
    z = np.full((rows, per_line), np.nan)
    text = np.full((rows, per_line), "", dtype=object)
    hover = np.full((rows, per_line), "", dtype=object)
    for i, (t, pr, p) in enumerate(zip(view.tokens, view.projection, view.p_unbiased, strict=True)):
        r, c = divmod(i, per_line)
        z[r, c] = pr
        shown = t.replace("\n", "⏎").strip() or "␣"
        text[r, c] = shown[:10]
        hover[r, c] = f"token {i}: {t!r}<br>projection {pr:.3f}<br>P(unbiased) {p:.3f}"
    # The first token is an attention sink with a huge norm: scale colours by the other tokens.
    rest = np.abs(view.projection[1:]) if n > 1 else np.abs(view.projection)
    span = float(np.nanpercentile(rest, 98)) or 1.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            text=text,
            texttemplate="%{text}",
            textfont={"size": 12},
            customdata=hover,
            hovertemplate="%{customdata}<extra></extra>",
            colorscale="RdBu",
            zmid=0,
            zmin=-span,
            zmax=span,
            xgap=2,
            ygap=2,
            colorbar={"title": {"text": "projection on DSV<br>(act. units)"}},
        )
    )
    for i in np.flatnonzero(view.gated):
        r, c = divmod(int(i), per_line)
        fig.add_shape(
            type="rect", x0=c - 0.5, x1=c + 0.5, y0=r - 0.5, y1=r + 0.5,
            line={"color": "black", "width": 2},
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            marker={"symbol": "square-open", "color": "black", "size": 12},
            name=f"gate fires (P(unbiased) < {view.tau:g})",
        )
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed")
    fig.update_layout(legend={"orientation": "h", "y": -0.02, "yanchor": "top"})
    last = f"last token P(unbiased)={view.p_unbiased[-1]:.2f}"
    name = f" {view.uid}" if view.uid else ""
    return finish(
        fig,
        title
        or f"Per-token projection on the DSV{name}<br><sup>{view.hook_name}; {last}; "
        "colours clipped at the 98th percentile</sup>",
        width=1150,
        height=60 * rows + 190,
    )
