"""fairlens.analysis on a random-init tiny model: planted signals are found, ablations are exact."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairlens.activations.extraction import extract_activations
from fairlens.analysis import (
    ablation_effect,
    category_cosines,
    category_dsvs,
    cosine_matrix,
    directional_ablation,
    head_probe_sweep,
    hook_type_sweep,
    layer_cosines,
    layer_pca,
    mean_ablation,
    mean_activation,
    method_cosines,
    projections,
    separability_metrics,
    steering_sweep,
    token_view,
    zero_ablation,
)
from fairlens.backend import add_hooks, count_hooks
from fairlens.directions import mean_difference, pca_direction
from fairlens.errors import ConfigError, HookPointError
from fairlens.scoring.letters import score_items
from fairlens.steer.steerer import Steerer, SteeringConfig
from fairlens.testing import tiny_hooked
from tests.conftest import rejects_ill_typed, synthetic_items

K = 2
N = 160
SCALE = 30.0


@pytest.fixture(scope="module")
def planted():
    """Tiny GQA model (4 heads, 2 KV heads), label planted at blocks.K.hook_resid_post only."""
    model, _, _ = tiny_hooked(seed=7, n_layers=4)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 250, (N, 10), generator=gen)
    y = torch.randint(0, 2, (N,), generator=gen)
    u = torch.randn(model.cfg.d_model, generator=gen)
    u = u / u.norm()
    signs = (2 * y - 1).float()

    def plant(act):
        act = act.clone()
        act[:, -1] += SCALE * signs[: act.shape[0], None] * u
        return act

    def unplant(act):
        act = act.clone()
        act[:, -1] -= SCALE * signs[: act.shape[0], None] * u
        return act

    hooks = [(f"blocks.{K}.hook_resid_post", plant), (f"blocks.{K + 1}.hook_resid_pre", unplant)]
    kinds = ["resid_pre", "resid_post", "attn_out", "mlp_out"]
    with add_hooks(model, hooks):
        acts = extract_activations(model, tokens.tolist(), hooks=kinds, batch_size=N)
    return model, tokens, y, u, acts.with_labels(y)


def _resid_post(acts):
    idx = [i for i, h in enumerate(acts.hook_names) if h.endswith("resid_post")]
    from fairlens.activations.extraction import Activations

    return Activations(
        acts.acts[:, idx], tuple(acts.hook_names[i] for i in idx), acts.uids, acts.labels
    )


def test_hook_type_sweep_finds_the_planted_hook(planted):
    *_, acts = planted
    res = hook_type_sweep(acts, cv_folds=3)
    assert res.kinds == ("resid_pre", "resid_post", "attn_out", "mlp_out")
    assert res.accuracy.shape == (4, 4)
    assert res.best() == ("resid_post", K)
    assert res.accuracy[1, K] > 0.95
    assert np.isfinite(res.cv_std).all() and res.cv_std[1, K] <= 0.05  # stable across folds
    d = res.to_dict()
    assert d["best"] == ["resid_post", K] and len(d["accuracy"]) == 4


def test_separability_metrics_peak_at_planted_layer(planted):
    _, _, _, _, acts = planted
    m = separability_metrics(_resid_post(acts))
    assert m.layers == (0, 1, 2, 3)
    for values in (m.probe_accuracy, m.fisher, m.silhouette, m.margin):
        assert int(np.argmax(values)) == K
    assert m.margin[K] > 0 and m.fisher[K] > 5 * max(np.delete(m.fisher, K))
    assert set(m.to_dict()) >= {"fisher", "silhouette", "margin", "probe_accuracy"}


def test_pca_and_projection_on_planted_direction(planted):
    _, _, y, u, acts = planted
    ra = _resid_post(acts)
    pca = layer_pca(ra)
    assert pca.coords.shape == (4, N, 2)
    from sklearn.decomposition import PCA

    reference = PCA(2).fit(ra.acts[:, K].double().numpy()).explained_variance_ratio_
    np.testing.assert_allclose(pca.explained[K], reference, atol=1e-4)
    proj = projections(ra, u.expand(4, -1).clone() * 7.0, name="planted")
    gap = proj.values[y == 1, K].mean() - proj.values[y == 0, K].mean()
    assert gap == pytest.approx(2 * SCALE, rel=0.1)  # normalised: the 7x scale does not matter
    with pytest.raises(ConfigError, match="one per hook"):
        projections(ra, u[None])


def test_head_probe_sweep_finds_planted_head_and_kv_groups():
    model, _, _ = tiny_hooked(seed=3, n_layers=2)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 250, (N, 8), generator=gen)
    y = torch.randint(0, 2, (N,), generator=gen)
    signs = (2 * y - 1).float()

    def plant(z):
        z = z.clone()
        z[:, -1, 3, 0] += 40.0 * signs[: z.shape[0]]
        return z

    with add_hooks(model, [("blocks.1.attn.hook_z", plant)]):
        res = head_probe_sweep(model, tokens.tolist(), y, batch_size=N)
    assert res.accuracy.shape == (2, 4) and res.group_accuracy.shape == (2, 2)
    assert np.unravel_index(np.argmax(res.accuracy), res.accuracy.shape) == (1, 3)
    assert res.kv_group.tolist() == [0, 0, 1, 1]
    assert res.group_accuracy[1, 1] > 0.95  # head 3 belongs to KV group 1
    assert count_hooks(model) == 0


def test_geometry_cosines(planted, tiny):
    _, _, _, _, acts = planted
    ra = _resid_post(acts)
    c = cosine_matrix(torch.eye(3) + 0.0)
    assert torch.allclose(c, torch.eye(3, dtype=torch.float64))
    md = mean_difference(ra)
    lc = layer_cosines(md)
    assert lc.matrix.shape == (4, 4) and np.allclose(np.diag(lc.matrix), 1.0)
    mc = method_cosines({"mean_diff": md, "pca": pca_direction(ra), "same": md.vectors})
    assert mc.pairs == (("mean_diff", "pca"), ("mean_diff", "same"), ("pca", "same"))
    assert np.allclose(mc.values[1], 1.0, atol=1e-6)
    assert mc.matrix(ra.hook_names[K]).matrix.shape == (3, 3)

    hooked, _, _ = tiny
    dsvs = category_dsvs(hooked, synthetic_items(), layers=[1], n_per_category=4)
    cc = category_cosines(dsvs, "blocks.1.hook_resid_post")
    assert cc.labels == ("Age", "SES") and np.allclose(np.diag(cc.matrix), 1.0)


def test_directional_ablation_removes_the_projection_exactly(planted):
    model, tokens, _, u, _ = planted
    hook = f"blocks.{K}.hook_resid_post"
    seen = {}

    def capture(act):
        seen["a"] = act.detach().clone()
        return act

    with directional_ablation(model, hook, 3.0 * u), add_hooks(model, [(hook, capture)]):
        model(tokens[:8])
    assert (seen["a"] @ u).abs().max() < 1e-4
    assert count_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"), directional_ablation(model, hook, u):
        assert count_hooks(model) == 1
        raise RuntimeError("boom")
    assert count_hooks(model) == 0
    with pytest.raises(HookPointError):
        directional_ablation(model, "resid_post", u).__enter__()


def test_zero_and_mean_ablation_of_a_head(planted):
    model, tokens, _, _, _ = planted
    hook = "blocks.1.attn.hook_z"
    mean = mean_activation(model, tokens[:20].tolist(), hook)
    assert mean.shape == (model.cfg.n_heads, model.cfg.d_head)
    seen = {}

    def capture(z):
        seen["z"] = z.detach().clone()
        return z

    with zero_ablation(model, hook, head=2), add_hooks(model, [(hook, capture)]):
        model(tokens[:4])
    assert torch.all(seen["z"][:, :, 2] == 0) and torch.any(seen["z"][:, :, 1] != 0)
    with mean_ablation(model, hook, mean, head=0), add_hooks(model, [(hook, capture)]):
        model(tokens[:4])
    assert torch.allclose(seen["z"][:, :, 0], mean[0].expand(4, 10, -1))
    assert count_hooks(model) == 0
    with pytest.raises(HookPointError, match="hook_z"):
        zero_ablation(model, "blocks.1.hook_resid_post", head=0).__enter__()


def _steerer(model, layer, seed=0, **cfg):
    g = torch.Generator().manual_seed(seed)
    d = model.cfg.d_model
    return Steerer(
        f"blocks.{layer}.hook_resid_post",
        torch.randn(d, generator=g) * 5,
        torch.randn(d, generator=g) * 0.1,
        0.0,
        SteeringConfig(**cfg),
    )


class _Source:
    def __init__(self, model):
        self.model = model

    def steerer(self, *, mode="dynamic", alpha=None, tau=None, positions=None, layer=None):
        return _steerer(self.model, layer).with_config(
            mode=mode, alpha=alpha or 1.0, tau=0.5 if tau is None else tau
        )


def test_steering_sweep_grid_and_baseline(tiny):
    hooked, _, _ = tiny
    items = synthetic_items(n_templates=2, per_template=4)
    res = steering_sweep(
        hooked, items, _Source(hooked), layers=[0, 2], alphas=[0.5, 2.0], taus=[0.3, 0.7]
    )
    assert len(res.points) == 2 * 2 * 2 + 2 * 2  # dynamic x taus + static once
    base = score_items(hooked, items).predictions
    acc_amb = np.mean(
        [p == it.label for p, it in zip(base.tolist(), items, strict=True) if it.is_ambiguous]
    )
    assert res.base.acc_ambig == pytest.approx(acc_amb)
    grid = res.grid("acc_ambig", "static")
    assert grid.shape == (2, 2) and np.all(np.isfinite(grid))
    assert np.all(res.grid("gate_rate", "static") == 1.0)
    assert res.grid("gate_rate", "dynamic", tau=0.3).shape == (2, 2)
    assert res.to_dict()["base"]["tau"] is None
    assert count_hooks(hooked) == 0


@pytest.mark.ill_typed
def test_steering_sweep_refuses_an_unknown_mode(tiny):
    hooked, _, _ = tiny
    items = synthetic_items(n_templates=2, per_template=4)
    with rejects_ill_typed(ConfigError, "modes"):
        steering_sweep(hooked, items, _Source(hooked), layers=[0], modes=["always"])  # type: ignore[list-item]


def test_cached_sweep_equals_the_full_prompt_sweep(tiny):
    """On the plain transformers model the sweep runs on a prefix cache: same points as TL."""
    hooked, hf, tok = tiny
    items = synthetic_items(n_templates=2, per_template=6)
    kw = {"layers": [0, 2], "alphas": [0.5, 2.0], "taus": [0.3, 0.7]}
    full = steering_sweep(hooked, items, _Source(hooked), **kw)
    cached = steering_sweep(hf, items, _Source(hooked), tokenizer=tok, **kw)
    assert (
        cached.base.to_dict() == full.base.to_dict()
        and len(cached.points) == len(full.points) == 12
    )
    for a, b in zip(full.points, cached.points, strict=True):
        assert (a.mode, a.layer, a.alpha) == (b.mode, b.layer, b.alpha)
        for field in ("acc_ambig", "acc_disambig", "gate_rate"):
            assert getattr(a, field) == pytest.approx(getattr(b, field))
    with pytest.raises(ConfigError, match="template"):
        steering_sweep(hf, items, _Source(hooked), tokenizer=tok, exclude=items[:1], **kw)


def test_sweep_refuses_the_fit_split_but_not_the_selection_split(tiny):
    """A sweep is one more selection: the steerer's selection templates are allowed, fit ones not."""
    hooked, _, _ = tiny
    items = synthetic_items(n_templates=4, per_template=2)
    fit_items, select_items = items[:4], items[4:]
    source = _Source(hooked)
    tid = [f"{it.category}/{it.question_index}" for it in items]
    assert not set(tid[:4]) & set(tid[4:])
    source.fitted_templates_ = sorted(set(tid))  # probe + DSV + selection, as FairSteer.fit stores
    source.selection_templates_ = sorted(set(tid[4:]))
    kw = {"layers": [1], "alphas": [1.0], "modes": ["static"]}
    assert len(steering_sweep(hooked, select_items, source, **kw).points) == 1
    with pytest.raises(ConfigError, match="fit split"):
        steering_sweep(hooked, fit_items, source, **kw)


def test_ablation_effect_and_token_view(tiny):
    hooked, _, _ = tiny
    items = synthetic_items(n_templates=2, per_template=4)
    hook = "blocks.1.hook_resid_post"
    eff = ablation_effect(hooked, items, {"zero": lambda: zero_ablation(hooked, hook)})
    assert eff.rows[0].name == "zero" and "zero" in eff.table()
    assert set(eff.deltas()["zero"]) == {"acc_ambig", "acc_disambig", "s_amb", "s_dis"}
    assert count_hooks(hooked) == 0

    steerer = _steerer(hooked, 1)
    view = token_view(hooked, items[0], steerer)
    assert len(view.tokens) == len(view.projection) == len(view.p_unbiased)
    assert view.uid == items[0].uid and view.text.endswith("Answer:")
    # the view's probabilities are the gate's on the prompt's own activations, token by token
    captured: list[torch.Tensor] = []
    ids = hooked.tokenizer(view.text, add_special_tokens=True)["input_ids"]
    with (
        torch.no_grad(),
        add_hooks(hooked, [(steerer.hook_name, lambda a: captured.append(a[0]) and None)]),
    ):
        hooked(torch.tensor([ids]))
    expected = steerer.p_unbiased(captured[0]).numpy()
    np.testing.assert_allclose(view.p_unbiased, expected, atol=1e-5)
    np.testing.assert_array_equal(view.gated, expected < steerer.config.tau)
    assert count_hooks(hooked) == 0
