"""Shared figure conventions: one template, class colours, hover text for BBQ items."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from fairlens.backend import parse_hook_name

TEMPLATE = "plotly_white"
CLASS_COLOURS = {1: "#1f77b4", 0: "#d62728"}
CLASS_NAMES = {1: "unbiased (y=1)", 0: "biased (y=0)"}
MODE_COLOURS = {"base": "#7f7f7f", "dynamic": "#2ca02c", "static": "#ff7f0e"}
FONT = {"size": 13}


def finish(
    fig: go.Figure,
    title: str,
    *,
    x: str | None = None,
    y: str | None = None,
    width: int = 820,
    height: int = 480,
) -> go.Figure:
    """Apply the house layout: title, axis titles with units, size (for static export)."""
    fig.update_layout(
        title={"text": title, "x": 0.02, "xanchor": "left"},
        template=TEMPLATE,
        width=width,
        height=height,
        font=FONT,
        margin={"l": 70, "r": 30, "t": 80, "b": 60},
        legend={"bgcolor": "rgba(255,255,255,0.8)"},
    )
    fig.update_annotations(font_size=13)  # subplot titles
    if x is not None:
        fig.update_xaxes(title_text=x)
    if y is not None:
        fig.update_yaxes(title_text=y)
    return fig


def layer_of(hook: str) -> int:
    """Layer index of a hook name (``-1`` when it is not a per-layer hook)."""
    try:
        return parse_hook_name(hook.split("[")[0])[1]
    except KeyError:
        return -1


def item_hover(items: Sequence[Any] | None, uids: Sequence[str]) -> list[str]:
    """Hover text per uid: the BBQ item's category, context, question and gold answer.

    ``items`` are :class:`~fairlens.data.BBQItem` s (any order; matched by ``uid``) or None.
    """
    by_uid: Mapping[str, Any] = {it.uid: it for it in items} if items is not None else {}
    out = []
    for uid in uids:
        it = by_uid.get(uid)
        if it is None:
            out.append(uid)
            continue
        ctx = it.context if len(it.context) < 160 else it.context[:157] + "..."
        out.append(
            f"<b>{it.uid}</b> ({it.category}, {it.context_condition})<br>"
            + "<br>".join(_wrap(ctx))
            + f"<br><i>{it.question}</i><br>gold: {it.answers[it.label]}"
        )
    return out


def _wrap(text: str, width: int = 70) -> list[str]:
    lines, cur = [], ""
    for word in text.split():
        if len(cur) + len(word) + 1 > width and cur:
            lines.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}".strip()
    return [*lines, cur] if cur else lines
