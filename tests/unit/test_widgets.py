"""The explorers, headless: each handler changes the figure / table, and a user mistake is one line
in the status area (never an exception out of the callback)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fairlens.activations.extraction import Activations
from fairlens.analysis import LayerCache, zero_ablation
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
    assert "refused" in ex.last_error or "direction" in ex.last_error
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
    assert len(ex.view.tokens) == int(np.isfinite(ex.figure.data[0].z).sum())
    assert "the gate fires on" in ex.status.value


def test_widgets_outside_jupyter_and_without_ipywidgets(tiny, wide_items, monkeypatch):
    hooked, _, _ = tiny
    ex = AblationExplorer(hooked, wide_items[:4])
    with pytest.raises(ConfigError, match="Jupyter kernel"):
        ex.show()
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ConfigError, match="fairlens\\[widgets\\]"):
        AblationExplorer(hooked, wide_items[:4])
