"""The explorers, headless: each handler changes the figure / table, and a user mistake is one line
in the status area (never an exception out of the callback)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fairlens.activations.extraction import Activations
from fairlens.analysis import LayerCache, zero_ablation
from fairlens.backend import count_hooks
from fairlens.errors import ConfigError
from fairlens.steer.steerer import Steerer, SteeringConfig
from fairlens.widgets import AblationExplorer, SeparabilityExplorer, TokenExplorer
from fairlens.widgets.ablation import item_subset
from tests.conftest import synthetic_items


@pytest.fixture
def wide_items():
    return synthetic_items(n_templates=2, per_template=4)


def test_ablation_explorer_updates_and_matches_the_layer_cache(tiny, wide_items):
    hooked, _, _ = tiny
    u = torch.randn(hooked.cfg.d_model)
    ex = AblationExplorer(hooked, wide_items, directions={"random": u})
    assert ex.last_error is None and "ablation" in ex.status.value
    assert ex.set(kind="resid_post", layer=1, method="zero", subset="all")
    expected = LayerCache(hooked, wide_items).effect(
        {"x": lambda: zero_ablation(hooked, "blocks.1.hook_resid_post")}
    )
    assert ex.effect.table().splitlines()[2:] != [] and ex.effect.n_items == len(wide_items)
    assert ex.effect.rows[0].to_dict() | {"name": "x"} == expected.rows[0].to_dict()
    deltas = expected.deltas()["x"]
    assert ex.figure.data[0].y[0] == pytest.approx(100 * deltas["acc_ambig"], nan_ok=True)
    assert "zero @ blocks.1.hook_resid_post" in ex.table.value
    # every method and a head of hook_z, through the controls' own observers
    ex.method.value = "directional: random"
    assert ex.last_error is None and "directional" in ex.figure.layout.title.text
    assert ex.set(kind="z", layer=0, head=1, method="mean")
    assert "head 1" in ex.table.value
    ex.subset.value = "ambiguous"
    assert ex.effect.n_items == sum(it.is_ambiguous for it in wide_items)


def test_ablation_explorer_reports_mistakes_in_its_status_line(tiny, wide_items):
    hooked, _, _ = tiny
    ex = AblationExplorer(hooked, wide_items)
    assert not ex.set(head=99)  # a head out of range
    assert "head" in ex.last_error and "error" in ex.status.value
    assert not ex.set(kind="resid_post", head=-1, method="directional: dsv")  # none fitted
    assert "no fitted direction 'dsv'" in ex.last_error and "directions=" in ex.last_error
    assert not ex.set(layer=hooked.cfg.n_layers)  # a layer out of range
    assert f"layer {hooked.cfg.n_layers} is out of range" in ex.last_error
    assert not ex.set(kind="resid_sideways")
    assert "refused" in ex.last_error
    assert not ex.set(colour="red")
    assert "unknown controls" in ex.last_error
    with pytest.raises(ConfigError, match="empty"):
        item_subset([it for it in wide_items if it.is_ambiguous], "disambiguated")
    with pytest.raises(ConfigError, match="unknown item subset"):
        item_subset(wide_items, "Nope")
    assert ex.set(kind="resid_post", method="zero", layer=0)  # recovers after an error
    assert ex.last_error is None


def test_directional_ablation_with_directions_fitted_elsewhere_is_refused(tiny, wide_items):
    from fairlens.directions.core import Directions

    hooked, _, _ = tiny
    dirs = Directions(
        torch.randn(1, hooked.cfg.d_model), ("blocks.0.hook_resid_post",), "dsv", "last", 1, 1
    )
    ex = AblationExplorer(hooked, wide_items, directions={"dsv": dirs})
    assert not ex.set(layer=1, method="directional: dsv")
    assert "not fitted at blocks.1.hook_resid_post" in ex.last_error
    assert ex.set(layer=0)


def test_separability_explorer_redraws_per_hook_and_colour():
    wide_items = synthetic_items(n_templates=4, per_template=4)
    n, d = len(wide_items), 8
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([i % 2 for i in range(n)])
    x = torch.randn(n, 4, d, generator=gen)
    x[:, 1, 0] += 4 * labels  # separable at resid_post layer 1
    names = (
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.0.hook_mlp_out",
        "blocks.1.hook_mlp_out",
    )
    acts = Activations(x, names, tuple(it.uid for it in wide_items), labels)
    groups = ["/".join(map(str, it.template_id)) for it in wide_items]
    ex = SeparabilityExplorer(acts, wide_items, groups=groups)
    assert ex.last_error is None and len(ex.scatter.data) == 2  # biased / unbiased
    assert ex.scatter.layout.title.text == "PCA at blocks.1.hook_resid_post"
    assert ex.scatter.data[0].text[0].startswith("<b>")  # the BBQ item on hover
    ex.colour.value = "category"
    assert {t.name for t in ex.scatter.data} == {it.category for it in wide_items}
    ex.colour.value = "context"
    assert {t.name for t in ex.scatter.data} == {"ambig", "disambig"}
    ex.kind.value = "mlp_out"
    assert ex.scatter.layout.title.text == "PCA at blocks.1.hook_mlp_out"
    ex.layer.value = 0
    assert "blocks.0.hook_mlp_out" in ex.status.value
    assert ex.curve.layout.shapes[0].x0 == 0  # the chosen layer marked on the curve
    no_items = SeparabilityExplorer(acts, None, sweep=ex.sweep)
    no_items.colour.value = "category"
    assert "needs the BBQ items" in no_items.last_error


def test_token_explorer_draws_a_typed_prompt(tiny):
    hooked, _, _ = tiny
    d = hooked.cfg.d_model
    steerer = Steerer(
        "blocks.1.hook_resid_post", torch.randn(d), torch.randn(d) * 0.1, 0.0, SteeringConfig()
    )
    ex = TokenExplorer(hooked, steerer)
    assert ex.view is None and len(ex.figure.data) == 0
    ex.button.click()
    assert "prompt is empty" in ex.last_error
    ex.prompt.value = "The nurse and the engineer talked. Who was bad at math?"
    ex.button.click()
    from fairlens.plots.tokens import token_figure

    assert ex.last_error is None
    assert len(ex.figure.data) == len(token_figure(ex.view).data)
    assert len(ex.view.tokens) == sum(v is not None for row in ex.figure.data[0].z for v in row)
    assert "the gate fires on" in ex.status.value
    import json  # the comm messages are strict JSON: the heatmap's gaps are None, not NaN

    json.dumps(ex.figure.data[0].z, allow_nan=False)


def test_widgets_outside_jupyter_and_without_ipywidgets(tiny, wide_items, monkeypatch):
    hooked, _, _ = tiny
    ex = AblationExplorer(hooked, wide_items[:4])
    with pytest.raises(ConfigError, match="Jupyter kernel"):
        ex.show()
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ConfigError, match="fairlens\\[widgets\\]"):
        AblationExplorer(hooked, wide_items[:4])


class _Source:
    """A direction source: one random vector and probe per layer (fixed seeds)."""

    def __init__(self, model):
        self.d = model.cfg.d_model

    def steerer(self, *, mode="dynamic", alpha=None, tau=None, positions=None, layer=None):
        g = torch.Generator().manual_seed(layer)
        vector, coef = torch.randn(self.d, generator=g) * 5, torch.randn(self.d, generator=g) * 0.1
        cfg = SteeringConfig(mode=mode, alpha=alpha or 1.0, tau=0.5 if tau is None else tau)
        return Steerer(f"blocks.{layer}.hook_resid_post", vector, coef, 0.0, cfg)


@pytest.mark.parametrize("path", ["hooked", "hf"])
def test_steering_explorer_grid_equals_the_steering_sweep(tiny, path):
    from fairlens.analysis import steering_sweep
    from fairlens.widgets import SteeringExplorer

    hooked, hf, tok = tiny
    model = hooked if path == "hooked" else hf
    items = synthetic_items(n_templates=2, per_template=6)
    source = _Source(hooked)
    ex = SteeringExplorer(
        model, items, {"random": source}, layers=[0, 2], alphas=[0.5, 2.0], tokenizer=tok
    )
    assert np.all(np.isnan(np.array(ex.figure.data[0].z, dtype=float)))  # nothing computed yet
    ex.fill_button.click()
    assert ex.last_error is None and "4/4 cells" in ex.figure.layout.title.text
    sweep = steering_sweep(hooked, items, source, layers=[0, 2], alphas=[0.5, 2.0], taus=[0.3])
    for mode in ("static", "dynamic"):
        ex.mode.value = mode
        ex.tau.value = 0.3
        for metric in ("acc_ambig", "acc_disambig", "gate_rate"):
            ex.metric.value = metric
            got = np.array(ex.figure.data[0].z, dtype=float)
            np.testing.assert_allclose(got, sweep.grid(metric, mode, tau=0.3), equal_nan=True)
    # a click on a cell opens its per-item table (changed answers first)
    assert ex.select(2, 2.0), ex.last_error
    assert ex.selected == (2, 2.0)
    assert "layer 2, alpha 2.0" in ex.table.value and ex.table.value.count("<tr>") == len(items) + 1
    assert not ex.select(1, 2.0) and "no grid cell" in ex.last_error
    assert count_hooks(hooked) + count_hooks(hf) == 0


def test_steering_explorer_refuses_an_empty_grid(tiny):
    from fairlens.widgets import SteeringExplorer

    hooked, _, _ = tiny
    items = synthetic_items(n_templates=1, per_template=2)
    with pytest.raises(ConfigError, match="direction source"):
        SteeringExplorer(hooked, items, {}, layers=[0])
    with pytest.raises(ConfigError, match="one layer"):
        SteeringExplorer(hooked, items, {"r": _Source(hooked)}, layers=[])
