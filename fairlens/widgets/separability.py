"""Separability explorer: hook-type and layer controls over cached activations; a PCA scatter
coloured by probe label, BBQ category or context condition (hover: the BBQ item), and the probe
accuracy curve of the hook type with the chosen layer marked.

Thin over :func:`fairlens.analysis.layer_pca` (one hook at a time, computed when chosen) and
:func:`fairlens.analysis.hook_type_sweep` (once, at construction, unless a sweep is passed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from fairlens.activations.extraction import Activations
from fairlens.analysis.separability import HookTypeSweep, hook_type_sweep, layer_pca
from fairlens.backend.hook_points import hook_name, parse_hook_name
from fairlens.data import BBQItem
from fairlens.errors import ConfigError
from fairlens.plots._common import item_hover
from fairlens.widgets._base import Explorer, json_safe

__all__ = ["SeparabilityExplorer", "colour_groups"]

COLOUR_BY = ("label", "category", "context")


def colour_groups(acts: Activations, items: Sequence[BBQItem] | None, by: str) -> list[str]:
    """One group name per row of ``acts`` for colouring: the probe label (unbiased / biased), the
    BBQ category, or the context condition (items matched by uid)."""
    if by == "label":
        if acts.labels is None:
            raise ConfigError(
                "these activations carry no labels.", "colour by category or context."
            )
        return ["unbiased" if int(v) == 1 else "biased" for v in acts.labels.tolist()]
    if by not in COLOUR_BY:
        raise ConfigError(f"unknown colouring {by!r}.", f"use one of: {', '.join(COLOUR_BY)}.")
    if items is None:
        raise ConfigError(f"colouring by {by} needs the BBQ items.", "pass items=... too.")
    by_uid = {it.uid: it for it in items}
    missing = [u for u in acts.uids if u not in by_uid]
    if missing:
        raise ConfigError(
            f"{len(missing)} activation rows have no BBQ item (e.g. {missing[0]!r}).",
            "pass the items the activations were extracted from.",
        )
    key = "category" if by == "category" else "context_condition"
    return [str(getattr(by_uid[u], key)) for u in acts.uids]


class SeparabilityExplorer(Explorer):
    """PCA and probe accuracy per hook of cached activations.

    Args:
        acts: Activations at one or more hook kinds and layers, with probe labels
            (``extract_activations(..., labels=...)``).
        items: The BBQ items of the rows (for hover text and category / context colours).
        sweep: A precomputed :func:`~fairlens.analysis.hook_type_sweep` of ``acts`` (computed
            here when omitted).
        groups: Template id per row for the sweep's template-disjoint split (when computed here).
    """

    def __init__(
        self,
        acts: Activations,
        items: Sequence[BBQItem] | None = None,
        *,
        sweep: HookTypeSweep | None = None,
        groups: Sequence[Any] | None = None,
    ) -> None:
        super().__init__()
        w = self._w
        self.acts, self.items = acts, items
        self._layers: dict[str, list[int]] = {}
        for name in acts.hook_names:
            kind, layer = parse_hook_name(name)
            self._layers.setdefault(kind, []).append(layer)
        self.sweep = sweep if sweep is not None else hook_type_sweep(acts, groups=groups)
        kinds = list(self._layers)
        best_kind, best_layer = self._start(kinds)
        self.kind = w.Dropdown(options=kinds, value=best_kind, description="hook")
        self.layer = w.SelectionSlider(
            options=self._layers[best_kind], value=best_layer, description="layer"
        )
        colours = list(COLOUR_BY) if acts.labels is not None else list(COLOUR_BY[1:])
        self.colour = w.Dropdown(options=colours, value=colours[0], description="colour")
        self.scatter = go.FigureWidget(layout={"height": 420, "title": "PCA"})
        self.curve = go.FigureWidget(layout={"height": 300, "title": "probe accuracy"})
        self.kind.observe(lambda _c: self._on_kind(), "value")
        self.layer.observe(lambda _c: self.update(), "value")
        self.colour.observe(lambda _c: self.update(), "value")
        self.widget = w.VBox(
            [w.HBox([self.kind, self.layer, self.colour]), self.status, self.scatter, self.curve]
        )
        self.update()

    def _start(self, kinds: list[str]) -> tuple[str, int]:
        """Where the explorer opens: FairSteer's hook kind (``resid_post``) when extracted, else
        the first, at that kind's most separable layer by the sweep's validation accuracy (a
        kind-wide best could be a degenerate hook, e.g. layer 0's ``resid_pre``: the same token
        embedding for every prompt)."""
        kind = "resid_post" if "resid_post" in kinds else kinds[0]
        layers = self._layers[kind]
        if kind in self.sweep.kinds:
            row = self.sweep.accuracy[self.sweep.kinds.index(kind)]
            scored = [
                (row[self.sweep.layers.index(x)], -x) for x in layers if x in self.sweep.layers
            ]
            finite = [(a, x) for a, x in scored if np.isfinite(a)]
            if finite:
                return kind, -max(finite)[1]
        return kind, layers[-1]

    def _on_kind(self) -> None:
        layers = self._layers[str(self.kind.value)]
        self.layer.unobserve_all("value")
        self.layer.options = layers
        self.layer.value = layers[-1]
        self.layer.observe(lambda _c: self.update(), "value")
        self.update()

    def update(self) -> bool:
        """Redraw the scatter and the curve for the chosen hook (errors to the status line)."""
        return self.guarded("separability", self._update)

    def _update(self) -> str:
        kind, layer = str(self.kind.value), int(self.layer.value)
        name = hook_name(kind, layer)
        pca = layer_pca(self.acts, [name])
        groups = colour_groups(self.acts, self.items, str(self.colour.value))
        hover = item_hover(self.items, self.acts.uids)
        xy, (e1, e2) = pca.coords[0], pca.explained[0]
        with self.scatter.batch_update():
            self.scatter.data = ()
            for g in sorted(set(groups)):
                rows = [i for i, x in enumerate(groups) if x == g]
                self.scatter.add_scatter(
                    x=xy[rows, 0], y=xy[rows, 1], mode="markers", name=g,
                    text=[hover[i] for i in rows], hoverinfo="text",
                )  # fmt: skip
            self.scatter.layout.title = f"PCA at {name}"
            self.scatter.layout.xaxis.title = f"PC1 ({100 * e1:.1f}% var)"
            self.scatter.layout.yaxis.title = f"PC2 ({100 * e2:.1f}% var)"
        k = self.sweep.kinds.index(kind) if kind in self.sweep.kinds else None
        with self.curve.batch_update():
            self.curve.data = ()
            if k is not None:
                acc = self.sweep.accuracy[k]
                self.curve.add_scatter(
                    x=list(self.sweep.layers), y=json_safe(acc), name=f"{kind} val acc"
                )
                self.curve.add_scatter(
                    x=list(self.sweep.layers), y=json_safe(self.sweep.cv_mean[k]), name="CV mean",
                    line={"dash": "dot"},
                )  # fmt: skip
                self.curve.layout.shapes = [
                    {"type": "line", "x0": layer, "x1": layer, "y0": 0, "y1": 1, "yref": "paper",
                     "line": {"dash": "dash", "color": "grey"}}
                ]  # fmt: skip
            self.curve.layout.title = f"probe accuracy by layer ({kind}, n={self.sweep.n})"
        at = self.sweep.layers.index(layer) if layer in self.sweep.layers else None
        acc = np.nan if k is None or at is None else float(self.sweep.accuracy[k][at])
        return f"{name}: probe accuracy {100 * acc:.1f}% (n={self.sweep.n})"
