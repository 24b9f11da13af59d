"""Ablation explorer: pick a hook point, layer, head, method and item subset; the BBQ effect table
and bars update.

Every update is :meth:`fairlens.analysis.LayerCache.effect` with one
:func:`fairlens.analysis.ablate` context: the items are tokenised once, the unablated logits
computed once, and an ablation at layer ``l`` reruns blocks ``l..n-1`` from the cached residual
stream. Mean ablation's reference (:func:`~fairlens.analysis.mean_activation` over the items'
tokens) is computed once per hook point.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from torch import Tensor

from fairlens.analysis.ablation import ablate, mean_activation
from fairlens.analysis.layer_cache import LayerCache
from fairlens.backend.hook_points import HOOK_KINDS, hook_name
from fairlens.data import BBQItem
from fairlens.data.prompts import PromptFormat
from fairlens.directions.core import Directions
from fairlens.errors import ConfigError
from fairlens.model_types import Model
from fairlens.widgets._base import Explorer, json_safe

__all__ = ["AblationExplorer", "item_subset"]

_METRICS = (("acc_ambig", "Δ acc amb (pts)", 100), ("acc_disambig", "Δ acc dis (pts)", 100),
            ("s_amb", "Δ s_AMB", 1), ("s_dis", "Δ s_DIS", 1))  # fmt: skip


def item_subset(items: Sequence[BBQItem], subset: str) -> list[int]:
    """Indices of ``items`` in a named subset: ``"all"``, ``"ambiguous"``, ``"disambiguated"`` or a
    BBQ category name (an empty subset is an error naming the choices)."""
    categories = sorted({it.category for it in items})
    chosen = {
        "all": lambda it: True,
        "ambiguous": lambda it: it.is_ambiguous,
        "disambiguated": lambda it: not it.is_ambiguous,
    }.get(subset)
    if chosen is None:
        if subset not in categories:
            raise ConfigError(
                f"unknown item subset {subset!r}.",
                f"use all, ambiguous, disambiguated or one of: {', '.join(categories)}.",
            )
        rows = [i for i, it in enumerate(items) if it.category == subset]
    else:
        rows = [i for i, it in enumerate(items) if chosen(it)]
    if not rows:
        raise ConfigError(f"the item subset {subset!r} is empty.", "pick another subset.")
    return rows


class AblationExplorer(Explorer):
    """Zero, mean or directional ablation at any hook point, live, on BBQ items.

    Args:
        model: A ``HookedTransformer``.
        items: BBQ items scored under each ablation (100 make an update of a few seconds).
        directions: Named fitted directions for directional ablation (a ``Directions`` from
            :func:`fairlens.compute_dsv` / ``FairSteer.dsv_``, used at the hooks it was fitted at,
            or one ``[d_model]`` vector used at any residual-width hook).
        prompt_format: Prompt format of the items.
        batch_size: Items per forward pass.

    Outside widgets the same numbers come from ``LayerCache(model, items).effect({name: lambda:
    ablate(model, hook, method, ...)})``.
    """

    def __init__(
        self,
        model: Model,
        items: Sequence[BBQItem],
        *,
        directions: Mapping[str, Directions | Tensor] | None = None,
        prompt_format: PromptFormat = "zero_shot",
        batch_size: int = 16,
    ) -> None:
        super().__init__()
        w = self._w
        self.model: Any = model  # a HookedTransformer (LayerCache refuses anything else)
        self.cache = LayerCache(model, items, prompt_format=prompt_format, batch_size=batch_size)
        self.directions = dict(directions or {})
        self._means: dict[str, Tensor] = {}
        n_layers, n_heads = self.cache.n_layers, int(self.model.cfg.n_heads)
        categories = sorted({it.category for it in items})
        self.kind = w.Dropdown(options=list(HOOK_KINDS), value="resid_post", description="hook")
        self.layer = w.IntSlider(0, 0, n_layers - 1, description="layer", continuous_update=False)
        self.head = w.IntSlider(
            -1, -1, n_heads - 1, description="head (z)", continuous_update=False
        )
        methods = ["zero", "mean", *(f"directional: {name}" for name in self.directions)]
        self.method = w.Dropdown(options=methods, value="zero", description="method")
        subsets = ["all", "ambiguous", "disambiguated", *categories]
        self.subset = w.Dropdown(options=subsets, value="all", description="items")
        self.figure = go.FigureWidget(
            data=[go.Bar(x=[label for _, label, _ in _METRICS], y=[0.0] * len(_METRICS))],
            layout={"height": 320, "margin": {"t": 40}, "title": "ablation effect vs unablated"},
        )
        self.table = w.HTML(value="")
        self.effect: Any = None
        self._holding = False
        for control in (self.kind, self.layer, self.head, self.method, self.subset):
            control.observe(lambda _change: None if self._holding else self.update(), "value")
        self.widget = w.VBox(
            [
                w.HBox([self.kind, self.method, self.subset]),
                w.HBox([self.layer, self.head]),
                self.status,
                self.figure,
                self.table,
            ]
        )
        self.update()

    def set(self, **values: Any) -> bool:
        """Change several controls at once, then update once (what a test or a script calls)."""
        controls = {c: getattr(self, c) for c in ("kind", "layer", "head", "method", "subset")}
        unknown = sorted(set(values) - set(controls))
        if unknown:
            return self._fail(f"unknown controls {unknown}; valid: {sorted(controls)}.")
        method = values.get("method")
        if isinstance(method, str) and method not in self.method.options:
            if method.startswith("directional"):
                return self._fail(
                    f"no fitted direction {method.removeprefix('directional').strip(': ')!r} "
                    "for directional ablation; pass directions={'dsv': fs.dsv_} (or any "
                    "[d_model] vector) when creating the explorer."
                )
            return self._fail(f"unknown method {method!r}; valid: {list(self.method.options)}.")
        for key, value in values.items():
            low, high = getattr(controls[key], "min", None), getattr(controls[key], "max", None)
            if low is not None and not low <= value <= high:
                what = f"{key} {value} is out of range ({low}..{high}"
                return self._fail(what + ("; -1: all heads)." if key == "head" else ")."))
        self._holding = True
        try:
            for key, value in values.items():
                controls[key].value = value
        except Exception as exc:
            return self._fail(f"{key}={value!r} refused: {exc}")
        finally:
            self._holding = False
        return self.update()

    def _hook(self) -> tuple[str, int | None]:
        kind, head = str(self.kind.value), int(self.head.value)
        name = hook_name(kind, int(self.layer.value), n_layers=self.cache.n_layers)
        if kind == "z":
            return name, None if head < 0 else head
        return name, None

    def _direction(self, label: str, name: str) -> Tensor:
        found = self.directions.get(label)
        if found is None:
            raise ConfigError(
                f"no fitted direction named {label!r}.",
                "pass directions={'dsv': fs.dsv_} (or any [d_model] vector) to the explorer.",
            )
        if isinstance(found, Tensor):
            return found
        if name not in found.hook_names:
            raise ConfigError(
                f"direction {label!r} was not fitted at {name}.",
                f"pick one of its hooks: {', '.join(found.hook_names)}.",
            )
        return found.at(name)

    def _ablation(self) -> tuple[str, Any]:
        name, head = self._hook()
        method = str(self.method.value)
        label = f"{method} @ {name}" + ("" if head is None else f" head {head}")
        if method == "zero":
            return label, lambda: ablate(self.model, name, "zero", head=head)
        if method == "mean":
            if name not in self._means:
                self._means[name] = mean_activation(self.model, self.cache.sequences, name)
            mean = self._means[name]
            return label, lambda: ablate(self.model, name, "mean", mean=mean, head=head)
        direction = self._direction(method.removeprefix("directional: "), name)
        return label, lambda: ablate(
            self.model, name, "directional", direction=direction, head=head
        )

    def update(self) -> bool:
        """Recompute the effect for the current controls (errors go to the status line)."""
        return self.guarded("ablation", self._update)

    def _update(self) -> str:
        rows = item_subset(self.cache.items, str(self.subset.value))
        label, factory = self._ablation()
        effect = self.cache.effect({label: factory}, rows)
        deltas = effect.deltas()[label]
        with self.figure.batch_update():
            self.figure.data[0].y = json_safe([deltas[key] * scale for key, _, scale in _METRICS])
            self.figure.layout.title = f"{label}: effect vs unablated (n={effect.n_items})"
        self.table.value = f"<pre>{html.escape(effect.table())}</pre>"
        self.effect = effect
        return (
            f"n={effect.n_items}; {len(self.cache.cached_layers)} layers' residual streams cached"
        )
