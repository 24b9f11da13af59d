"""Steering explorer: a layer x alpha heatmap of a BBQ metric that fills in cell by cell, for any
fitted direction source, static or dynamic, at any gate threshold; a click on a cell opens the
per-item table (question, answer before / after, the gate's probability).

Thin over the steering search's scorer (:func:`fairlens.scoring.prefix_cache.make_scorer`): one
static edit per (source, layer, alpha) cell at the last prompt position, scored once; dynamic
steering at any ``tau`` is composed from the static and unsteered answers with the gate read on
the unsteered activation (:func:`~fairlens.scoring.variant_scorer.compose_dynamic`, exact for
last-position steering), so changing mode, ``tau`` or metric recomputes nothing. With a plain
transformers model (``fairlens.load_hf``) each cell is a one-token forward on a prefix cache; with
a ``HookedTransformer`` it reruns whole prompts (same numbers, slower).
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from fairlens.backend.batching import resolve_tokenizer
from fairlens.data import BBQItem
from fairlens.data.prompts import PromptFormat
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.scoring.letters import letter_token_ids, prompt_tokens
from fairlens.scoring.metrics import bbq_metrics
from fairlens.scoring.prefix_cache import make_scorer
from fairlens.steer.fitted import SteererSource
from fairlens.steer.steerer import Steerer
from fairlens.widgets._base import Explorer, json_safe

__all__ = ["SteeringExplorer"]

METRICS = ("acc_ambig", "acc_disambig", "s_amb", "s_dis", "gate_rate")


class SteeringExplorer(Explorer):
    """Live layer x alpha grid of steering on BBQ items.

    Args:
        model: The model the sources were fitted on (``load_hf``: fast; ``load_model``: exact too).
        items: BBQ items (from a split the sources were not fitted on).
        sources: Named direction sources, e.g. ``{"dsv": fairsteer}`` (anything with
            ``.steerer(mode=, alpha=, tau=, layer=)``: a FairSteer, a SteererFactory).
        layers: Candidate layers (rows of the grid).
        alphas: Strengths in each source's own unit (columns).
        prompt_format: Prompt format of the items.
        batch_size: Items per forward pass.
        tokenizer: The tokenizer, for a plain transformers model that does not carry one.
    """

    def __init__(
        self,
        model: Model,
        items: Sequence[BBQItem],
        sources: Mapping[str, SteererSource],
        *,
        layers: Sequence[int],
        alphas: Sequence[float] = (0.2, 0.4, 0.8),
        prompt_format: PromptFormat = "zero_shot",
        batch_size: int = 16,
        tokenizer: Any = None,
    ) -> None:
        super().__init__()
        if not sources:
            raise ConfigError("the steering explorer needs a fitted direction source.",
                              "pass sources={'dsv': fairsteer} (a fitted FairSteer).")  # fmt: skip
        if not layers or not alphas:
            raise ConfigError(
                "the grid needs at least one layer and one alpha.",
                "pass at least one layer (layers=...) and one alpha (alphas=...).",
            )
        w = self._w
        self.items, self.sources = list(items), dict(sources)
        self.layers, self.alphas = [int(x) for x in layers], [float(a) for a in alphas]
        self._steerers: dict[tuple[str, int, float], Steerer] = {
            (name, layer, alpha): src.steerer(mode="static", alpha=alpha, layer=layer)
            for name, src in self.sources.items()
            for layer in self.layers
            for alpha in self.alphas
        }
        tok = resolve_tokenizer(model, tokenizer)
        self.scorer = make_scorer(
            model, prompt_tokens(model, self.items, prompt_format, tokenizer=tok),
            read_ids=letter_token_ids(tok), tokenizer=tok, batch_size=batch_size,
            capture=sorted({s.hook_name for s in self._steerers.values()}),
            uids=[it.uid for it in self.items],
        )  # fmt: skip
        self.base = self.scorer.base_predictions
        self.static: dict[tuple[str, int, float], Tensor] = {}
        self.source = w.Dropdown(options=list(self.sources), description="direction")
        self.mode = w.ToggleButtons(options=["dynamic", "static"], description="mode")
        self.tau = w.FloatSlider(0.5, min=0.0, max=1.0, step=0.05, description="tau",
                                 continuous_update=False)  # fmt: skip
        self.metric = w.Dropdown(options=list(METRICS), value="acc_ambig", description="metric")
        self.fill_button = w.Button(description="fill the grid")
        self.figure = go.FigureWidget(
            data=[go.Heatmap(z=json_safe(self._grid()), x=[str(a) for a in self.alphas],
                             y=[str(x) for x in self.layers], colorscale="Viridis", hoverongaps=False)],
            layout={"height": 380, "xaxis": {"title": "alpha", "type": "category"},
                    "yaxis": {"title": "layer", "type": "category"}},
        )  # fmt: skip
        self.table = w.HTML(value="")
        for control in (self.source, self.mode, self.tau, self.metric):
            control.observe(lambda _c: self.redraw(), "value")
        self.fill_button.on_click(lambda _b: self.fill())
        heatmap: Any = self.figure.data[0]
        heatmap.on_click(self._clicked)
        self.widget = w.VBox([
            w.HBox([self.source, self.metric, self.fill_button]), w.HBox([self.mode, self.tau]),
            self.status, self.figure, self.table,
        ])  # fmt: skip
        self.redraw()

    # -- computing -------------------------------------------------------------------------------
    def predictions(self, layer: int, alpha: float) -> tuple[Tensor, Tensor]:
        """``(answers, fired)`` of the chosen source, mode and tau at one cell (its static edit
        is scored on first use)."""
        key = (str(self.source.value), int(layer), float(alpha))
        if key not in self._steerers:
            raise ConfigError(f"no grid cell at layer {layer}, alpha {alpha}.",
                              f"layers: {self.layers}; alphas: {self.alphas}.")  # fmt: skip
        st = self._steerers[key]
        if key not in self.static:
            self.static[key] = self.scorer.logits([st.static_edit()])[0].argmax(-1)
        if self.mode.value == "static":
            return self.static[key], torch.ones(len(self.items), dtype=torch.bool)
        fired = st.p_unbiased(self.scorer.base_acts[st.hook_name]) < float(self.tau.value)
        return torch.where(fired, self.static[key], self.base), fired

    def _value(self, layer: int, alpha: float) -> float:
        preds, fired = self.predictions(layer, alpha)
        if self.metric.value == "gate_rate":
            return float(fired.float().mean())
        value = getattr(bbq_metrics(self.items, preds).pooled, str(self.metric.value))
        return float("nan") if value is None else float(value)

    def _grid(self) -> list[list[float | None]]:
        name = str(self.source.value)
        return [
            [self._value(layer, a) if (name, layer, a) in self.static else None
             for a in self.alphas]
            for layer in self.layers
        ]  # fmt: skip

    # -- callbacks -------------------------------------------------------------------------------
    def redraw(self) -> bool:
        """Redraw the grid from the cells computed so far (no forward pass)."""
        return self.guarded("redraw", self._redraw)

    def _redraw(self) -> str | None:
        self.figure.data[0].z = json_safe(self._grid())
        done = sum(k[0] == self.source.value for k in self.static)
        self.figure.layout.title = (
            f"{self.metric.value}: {self.source.value}, {self.mode.value}"
            + (f", tau {self.tau.value:.2f}" if self.mode.value == "dynamic" else "")
            + f" (n={len(self.items)}; {done}/{len(self.layers) * len(self.alphas)} cells)"
        )
        return None if not done else f"{done} cells computed"

    def fill(self) -> bool:
        """Compute every missing cell of the chosen source, redrawing after each."""
        return self.guarded("fill", self._fill)

    def _fill(self) -> str:
        for layer in self.layers:
            for alpha in self.alphas:
                self.predictions(layer, alpha)
                self._redraw()
        return f"{len(self.layers) * len(self.alphas)} cells"

    def _clicked(self, _trace: Any, points: Any, _state: Any) -> None:
        if points.point_inds:
            row, col = points.point_inds[0]
            self.select(self.layers[row], self.alphas[col])

    def select(self, layer: int, alpha: float) -> bool:
        """Open the per-item table of one cell (what a click on the heatmap calls)."""
        return self.guarded("item table", lambda: self._select(layer, alpha))

    def _select(self, layer: int, alpha: float) -> str:
        preds, fired = self.predictions(layer, alpha)
        st = self._steerers[(str(self.source.value), int(layer), float(alpha))]
        prob = st.p_unbiased(self.scorer.base_acts[st.hook_name])
        changed_rows = (preds != self.base).numpy()
        order = np.argsort(~changed_rows, kind="stable")  # changed answers first
        letters = "ABC"
        rows = "".join(
            f"<tr><td>{html.escape(it.uid)}</td><td>{it.context_condition}</td>"
            f"<td>{html.escape(it.question)}</td><td>{letters[it.label]}</td>"
            f"<td>{letters[int(self.base[i])]}</td><td>{letters[int(preds[i])]}</td>"
            f"<td>{float(prob[i]):.3f}</td><td>{'yes' if bool(fired[i]) else ''}</td></tr>"
            for i in order.tolist()
            for it in [self.items[i]]
        )
        head = "".join(f"<th>{h}</th>" for h in
                       ("item", "context", "question", "gold", "before", "after", "P(unbiased)",
                        "steered"))  # fmt: skip
        changed = int(changed_rows.sum())
        self.table.value = (
            f"<b>layer {layer}, alpha {alpha}</b> ({self.mode.value}): {changed} of "
            f"{len(self.items)} answers changed<table><tr>{head}</tr>{rows}</table>"
        )
        self.selected = (layer, alpha)
        return f"{changed} answers changed at layer {layer}, alpha {alpha}"
