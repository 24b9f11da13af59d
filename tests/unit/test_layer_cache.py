"""LayerCache: interventions continued from the cached residual stream equal whole forward passes."""

from __future__ import annotations

import pytest
import torch

from fairlens.analysis import LayerCache, directional_ablation, mean_ablation, zero_ablation
from fairlens.analysis.layer_cache import first_hooked_layer
from fairlens.backend import add_hooks, count_hooks
from fairlens.errors import ConfigError
from fairlens.scoring.letters import score_items
from tests.conftest import synthetic_items


def _whole(model, items, factory=None):
    if factory is None:
        return score_items(model, items, batch_size=3).scores
    with factory():
        return score_items(model, items, batch_size=3).scores


def test_interventions_from_the_cache_equal_whole_forward_passes(tiny):
    hooked, _, _ = tiny
    items = synthetic_items(n_templates=2, per_template=5)
    cache = LayerCache(hooked, items, batch_size=4, max_bytes=1)  # one layer held at a time
    torch.manual_seed(0)
    u = torch.randn(hooked.cfg.d_model)
    mean = torch.randn(hooked.cfg.d_head)
    cases = {
        "zero resid_post L1": lambda: zero_ablation(hooked, "blocks.1.hook_resid_post"),
        "DSV out L0": lambda: directional_ablation(hooked, "blocks.0.hook_resid_pre", u),
        "mean head 1 L1": lambda: mean_ablation(hooked, "blocks.1.attn.hook_z", mean, head=1),
    }
    torch.testing.assert_close(cache.letter_logits(), _whole(hooked, items), atol=1e-4, rtol=1e-4)
    for name, factory in cases.items():
        got = cache.letter_logits(factory)
        torch.testing.assert_close(got, _whole(hooked, items, factory), atol=1e-4, rtol=1e-4)
        assert count_hooks(hooked) == 0, name
    # a subset, in index order, equals the whole pass on those items
    rows = [7, 1, 4]
    sub = [items[r] for r in sorted(rows)]
    factory = cases["zero resid_post L1"]
    torch.testing.assert_close(
        cache.letter_logits(factory, rows), _whole(hooked, sub, factory), atol=1e-4, rtol=1e-4
    )
    assert cache.cached_layers == (1,)  # the least recently used layers dropped
    every = LayerCache(hooked, items, batch_size=4)  # all layers fit: captured by the base pass
    every.letter_logits()
    assert every.cached_layers == tuple(range(hooked.cfg.n_layers))
    for factory in cases.values():
        got = every.letter_logits(factory)
        torch.testing.assert_close(got, _whole(hooked, items, factory), atol=1e-4, rtol=1e-4)


def test_cached_effect_equals_ablation_effect_rows(tiny):
    from fairlens.analysis import ablation_effect

    hooked, _, _ = tiny
    items = synthetic_items(n_templates=2, per_template=4)
    hook = "blocks.1.hook_resid_post"
    ablations = {"zero": lambda: zero_ablation(hooked, hook)}
    cached = LayerCache(hooked, items).effect(ablations)
    whole = ablation_effect(hooked, items, ablations)
    assert cached.table() == whole.table()  # same predictions, so the same metrics
    assert cached.n_items == len(items) and cached.rows[0].name == "zero"


def test_first_hooked_layer_reads_the_registered_hooks(tiny):
    hooked, _, _ = tiny
    assert first_hooked_layer(hooked) is None
    with add_hooks(
        hooked,
        [
            ("blocks.1.hook_resid_post", lambda a: None),
            ("ln_final.hook_normalized", lambda a: None),
        ],
    ):
        assert first_hooked_layer(hooked) == 1
    with add_hooks(hooked, [("ln_final.hook_normalized", lambda a: None)]):
        assert first_hooked_layer(hooked) == hooked.cfg.n_layers


def test_layer_cache_refuses_bad_input(tiny):
    hooked, hf, _ = tiny
    items = synthetic_items(n_templates=1, per_template=3)
    with pytest.raises(ConfigError, match="HookedTransformer"):
        LayerCache(hf, items)
    with pytest.raises(ConfigError, match="at least one"):
        LayerCache(hooked, [])
    cache = LayerCache(hooked, items)
    with pytest.raises(ConfigError, match="empty"):
        cache.letter_logits(rows=[])
    with pytest.raises(ConfigError, match="out of range"):
        cache.letter_logits(rows=[0, len(items)])
