"""Tests for the per-layer probe sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from fairlens.detect.layer_sweep import LayerScore, SweepResult, probe_sweep, train_val_split
from fairlens.detect.probes import LinearProbe
from fairlens.errors import ConfigError
from tests.conftest import rejects_ill_typed


def _planted(
    n: int = 400, n_layers: int = 6, d: int = 16, k: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations ``[batch, layer, d_model]`` where only layer ``k`` carries the label."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    acts = torch.randn(n, n_layers, d, generator=g)
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    acts[:, k] += 2.0 * (2 * y[:, None].float() - 1) * direction  # margin along `direction`
    return acts, y, direction


def test_planted_signal_is_found_at_its_layer() -> None:
    acts, y, direction = _planted(k=3)
    result = probe_sweep(acts, y, cv_folds=3)
    assert result.best_layer() == 3
    assert result.layers == tuple(range(6))
    assert result.hook_names[3] == "blocks.3.hook_resid_post"
    scores = {s.layer: s for s in result.scores}
    assert scores[3].accuracy > 0.95 and scores[3].auroc > 0.95 and scores[3].cv_mean > 0.95
    assert all(scores[i].accuracy < 0.7 for i in (0, 1, 2, 4, 5))
    assert scores[3].n_train == 320 and scores[3].n_val == 80
    probe = result.probe(3)
    cos = float(np.dot(probe.direction_, direction.numpy()))
    assert cos > 0.9, f"probe direction misaligned with the planted one (cos={cos:.3f})"


def test_layer_labels_and_hook_names_follow_the_caller() -> None:
    acts, y, _ = _planted(k=1, n_layers=3)
    result = probe_sweep(
        acts, y.numpy(), layers=[10, 12, 14], hook_names=["a", "b", "c"], cv_folds=0
    )
    assert result.best_layer() == 12 and result.hook_names == ("a", "b", "c")
    assert math.isnan(result.scores[0].cv_mean)
    with pytest.raises(
        ConfigError, match=r"Layer 3 was not part of this sweep; swept layers: \[10, 12, 14\]"
    ):
        result.probe(3)


def test_probe_from_result_reproduces_validation_accuracy() -> None:
    acts, y, _ = _planted(k=2, n_layers=4)
    result = probe_sweep(acts, y, cv_folds=0)
    _, val = train_val_split(y, val_fraction=0.2, seed=42)
    probe = result.probe(2)
    assert isinstance(probe, LinearProbe)
    assert probe.score(acts[val, 2], y[val].numpy()) == pytest.approx(result.scores[2].accuracy)


def test_group_split_keeps_groups_disjoint() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=500)
    y = rng.integers(0, 2, size=500)
    train, val = train_val_split(y, groups, val_fraction=0.25, seed=42)
    assert set(groups[train]).isdisjoint(groups[val])
    assert len(train) + len(val) == 500 and len(np.unique(groups[val])) == 10
    _, strat_val = train_val_split(y, val_fraction=0.2, seed=42)
    assert len(strat_val) == 100 and abs(y[strat_val].mean() - y.mean()) < 0.02
    acts = torch.randn(500, 2, 8)
    acts[:, 0, 0] += torch.from_numpy(4.0 * y - 2.0).float()
    result = probe_sweep(acts, y, groups=groups.tolist(), val_fraction=0.25, cv_folds=3)
    assert result.scores[0].n_val == len(val) and result.scores[0].accuracy > 0.9


def test_sklearn_solver_agrees_with_batched() -> None:
    acts, y, _ = _planted(n=300, n_layers=3, d=8, k=0)
    fast = probe_sweep(acts, y, cv_folds=2)
    ref = probe_sweep(acts, y, cv_folds=2, solver="sklearn")
    for a, b in zip(fast.scores, ref.scores, strict=True):
        assert abs(a.accuracy - b.accuracy) <= 0.005 and abs(a.cv_mean - b.cv_mean) <= 0.005
    torch.testing.assert_close(fast.coef, ref.coef, rtol=1e-2, atol=1e-3)


def test_to_dict_is_json_safe() -> None:
    acts, y, _ = _planted(n=200, n_layers=2, k=0)
    result = probe_sweep(acts, y, cv_folds=0, progress=True)
    d = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert d["layers"] == [0, 1] and d["best_layer"] == 0 and d["d_model"] == 16
    assert d["scores"][0]["cv_mean"] is None
    assert d["class_balance"] == pytest.approx(float(y.float().mean()))


def test_best_layer_tie_rule() -> None:
    def score(layer: int, acc: float, auroc: float) -> LayerScore:
        return LayerScore(layer, acc, auroc, math.nan, math.nan, 8, 2)

    result = SweepResult(
        hook_names=("a", "b", "c"),
        layers=(5, 6, 7),
        scores=(score(5, 0.9, 0.8), score(6, 0.9, 0.95), score(7, 0.9, 0.95)),
        class_balance=0.5,
        n=10,
        val_fraction=0.2,
        seed=42,
        C=1.0,
        coef=torch.zeros(3, 4, dtype=torch.float64),
        intercept=torch.zeros(3, dtype=torch.float64),
    )
    assert result.best_layer() == 6
    with pytest.raises(ConfigError, match="disagree on the number of layers"):
        SweepResult(**{**result.__dict__, "layers": (5, 6)})


@pytest.mark.ill_typed
def test_sweep_input_errors() -> None:
    acts, y, _ = _planted(n=100, n_layers=2, k=1)
    with rejects_ill_typed(
        ConfigError, r"shape \[batch, layer, d_model\]; received shape \(100, 16\)"
    ):
        probe_sweep(acts[:, 0], y)
    with rejects_ill_typed(ConfigError, r"labels must have shape \[100\].*received \(99,\)"):
        probe_sweep(acts, y[:99])
    few = torch.zeros(100, dtype=torch.long)
    few[:5] = 1
    with pytest.raises(
        ConfigError,
        match=r"at least 10 examples of each class; received 95 biased \(0\) and 5 unbiased",
    ):
        probe_sweep(acts, few)
    with pytest.raises(
        ConfigError, match=r"0 \(biased\) or 1 \(unbiased\); received values \[0, 1, 2\]"
    ):
        probe_sweep(acts, torch.arange(100) % 3)
    bad = acts.clone()
    bad[7, 1, 2] = float("nan")
    with pytest.raises(ConfigError, match="acts contains NaN"):
        probe_sweep(bad, y)
    with pytest.raises(ConfigError, match="layers has 3 entries but acts has 2 layer entries"):
        probe_sweep(acts, y, layers=[0, 1, 2])
    with pytest.raises(ConfigError, match="val_fraction must be in"):
        probe_sweep(acts, y, val_fraction=1.5)
    with pytest.raises(ConfigError, match="cv_folds=5 needs at least 5 groups"):
        probe_sweep(acts, y, groups=np.arange(100) % 4)
