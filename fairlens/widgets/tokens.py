"""Token view of any prompt typed in: each token's projection on the steering direction and the
gate's ``P(unbiased)``, from :func:`fairlens.analysis.token_view` drawn by
:func:`fairlens.plots.token_figure` (the same numbers without widgets)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from fairlens.analysis.tokens import token_view
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.plots.tokens import token_figure
from fairlens.steer.steerer import Steerer
from fairlens.widgets._base import Explorer, json_safe

__all__ = ["TokenExplorer"]


class TokenExplorer(Explorer):
    """Type a prompt, see where its tokens lean biased under a fitted steerer.

    Args:
        model: The ``HookedTransformer`` the steerer was fitted on.
        steerer: Supplies the hook, direction and gate (``FairSteer.steerer()``).
        prompt: The first prompt shown.
    """

    def __init__(self, model: Model, steerer: Steerer, prompt: str = "") -> None:
        super().__init__()
        w = self._w
        self.model, self.steerer = model, steerer
        self.prompt = w.Textarea(
            value=prompt, description="prompt", layout={"width": "95%", "height": "6em"}
        )
        self.button = w.Button(description="show tokens")
        self.figure = go.FigureWidget(layout={"height": 260, "title": "token view"})
        self.view: Any = None
        self.button.on_click(lambda _b: self.update())
        self.widget = w.VBox([self.prompt, self.button, self.status, self.figure])
        if prompt:
            self.update()

    def update(self) -> bool:
        """Read the prompt's tokens and redraw (errors to the status line)."""
        return self.guarded("token view", self._update)

    def _update(self) -> str:
        text = str(self.prompt.value)
        if not text.strip():
            raise ConfigError("the prompt is empty.", "type a prompt, then press 'show tokens'.")
        view = token_view(self.model, text, self.steerer)
        fig = token_figure(view)
        with self.figure.batch_update():
            self.figure.data = ()
            traces: list[Any] = list(fig.data)
            for trace in traces:
                for key in ("z", "x", "y"):
                    if getattr(trace, key, None) is not None:
                        trace[key] = json_safe(trace[key])
            self.figure.add_traces(traces)
            self.figure.layout = fig.layout
        self.view = view
        steered = int(view.gated.sum())
        return f"{len(view.tokens)} tokens at {view.hook_name}; the gate fires on {steered}"
