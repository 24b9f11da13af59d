"""Category entanglement: each source category's DSV added at one layer, Δ ambiguous accuracy per
target category, equal to full steered runs computed here (prefix cache exact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fairlens.analysis as an
import fairlens.plots as plots
from fairlens.backend import add_hooks, hook_name
from fairlens.data import split_by_template
from fairlens.errors import ConfigError
from fairlens.scoring.letters import score_items
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items


def _mean_last_norm(model, items, hook) -> float:
    """The mean residual norm at the answer position (left padding: the last column)."""
    store: list[torch.Tensor] = []

    def capture(act: torch.Tensor) -> None:
        store.append(act[:, -1].norm(dim=-1))

    with add_hooks(model, [(hook, capture)]):
        score_items(model, items)
    return float(torch.cat(store).mean())


def _adder(vector: torch.Tensor):
    def add(act: torch.Tensor) -> torch.Tensor:
        act[:, -1] += vector
        return act

    return add


def test_the_matrix_equals_full_steered_runs():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=8, per_template=8, categories=("Age", "SES", "Religion"))
    parts = split_by_template(items, {"dsv": 0.5, "eval": 0.5}, seed=0)
    dsv, ev = list(parts["dsv"].items), list(parts["eval"].items)
    res = an.category_entanglement(hf, dsv, ev, layer=1, alpha=2.0, n_pairs=3, tokenizer=tok)
    assert res.sources == ("Age", "Religion", "SES") and res.delta.shape == (3, len(res.targets))
    hook = hook_name("resid_post", 1)
    dsvs = an.category_dsvs(hooked, dsv, hooks=[hook], n_per_category=3)
    base = score_items(hooked, ev).predictions.numpy()
    label = np.array([it.label for it in ev])
    norm = _mean_last_norm(hooked, ev, hook)
    for i, s in enumerate(res.sources):
        v = dsvs[s].at(hook).float()
        with add_hooks(hooked, [(hook, _adder(2.0 * norm * v / v.norm()))]):
            steered = score_items(hooked, ev).predictions.numpy()
        for j, t in enumerate(res.targets):
            mask = np.array([it.is_ambiguous and it.category == t for it in ev])
            want = 100 * (
                (steered[mask] == label[mask]).mean() - (base[mask] == label[mask]).mean()
            )
            assert res.delta[i, j] == pytest.approx(want, abs=1e-9)
    assert np.abs(res.delta).max() > 0  # the directions move answers: the comparison has teeth
    assert len(plots.entanglement_heatmap(res).data) == 1 and res.to_dict()["hook"] == hook
    with pytest.raises(ConfigError, match="overlap"):
        an.category_entanglement(hf, dsv, dsv[:4], layer=1, tokenizer=tok)
