"""FairSteer end to end on a tiny random model: fit, steer, evaluate, save/load, refusals."""

from __future__ import annotations

import pytest
import torch

from fairlens.data import split_by_template
from fairlens.errors import ArtifactError, ConfigError, NotFittedError
from fairlens.evaluation import evaluate
from fairlens.fairsteer import FairSteer, FairSteerConfig
from fairlens.hooks import count_hooks
from fairlens.scoring import score_items
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items


@pytest.fixture(scope="module")
def fitted():
    hooked, _, _ = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(items, {"probe": 0.6, "dsv": 0.2, "eval": 0.2}, seed=0)
    fs = FairSteer(FairSteerConfig(scoring="loglik", C=1.0, layers=(0, 1, 2)))
    fs.fit(hooked, list(splits["probe"].items), list(splits["dsv"].items))
    return hooked, fs, splits


def test_fit_sets_learned_state(fitted):
    hooked, fs, splits = fitted
    assert fs.layer_ in (0, 1, 2)
    assert fs.dsv_.vectors.shape == (3, hooked.cfg.d_model)
    assert fs.sweep_.coef.shape == (3, hooked.cfg.d_model)
    assert fs.probe_counts_["unbiased"] >= 10 and fs.probe_counts_["biased"] >= 10
    assert fs.split_hashes_["probe"] == splits["probe"].content_hash
    assert fs.config.steer_positions == "all"  # loglik scoring probes every position


def test_steering_changes_only_when_steering(fitted):
    hooked, fs, splits = fitted
    items = list(splits["eval"].items)
    base = score_items(hooked, items, mode="loglik")
    with fs.steering(hooked, mode="static"):
        static = score_items(hooked, items, mode="loglik")
    with fs.steering(hooked, mode="dynamic", alpha=0.0):
        zero = score_items(hooked, items, mode="loglik")
    assert count_hooks(hooked) == 0
    assert not torch.allclose(base.scores, static.scores)
    assert torch.equal(base.scores, zero.scores)


def test_evaluate_reports_three_methods(fitted):
    hooked, fs, splits = fitted
    report = evaluate(hooked, list(splits["eval"].items), fs, scoring="loglik")
    assert [r.method for r in report.results] == ["base", "static", "fairsteer"]
    assert report.results[0].gate_rate is None
    assert report.results[1].gate_rate == 1.0
    assert 0.0 <= report.results[2].gate_rate <= 1.0
    assert "fairsteer" in report.table()
    assert report.n_items == len(splits["eval"].items)


def test_evaluate_refuses_items_the_steerer_was_fitted_on(fitted):
    hooked, fs, splits = fitted
    with pytest.raises(ConfigError, match="share"):
        evaluate(hooked, list(splits["probe"].items)[:5], fs, scoring="loglik")


def test_save_load_round_trip_and_model_refusal(fitted, tmp_path):
    hooked, fs, splits = fitted
    fs.save(tmp_path / "fs")
    assert sorted(p.name for p in (tmp_path / "fs").iterdir()) == [
        "meta.json",
        "tensors.safetensors",
    ]
    back = FairSteer.load(tmp_path / "fs", model=hooked)
    assert back.layer_ == fs.layer_ and back.config == fs.config
    assert torch.equal(back.dsv_.vectors, fs.dsv_.vectors.float())
    items = list(splits["eval"].items)
    with fs.steering(hooked):
        a = score_items(hooked, items, mode="loglik")
    with back.steering(hooked):
        b = score_items(hooked, items, mode="loglik")
    assert torch.equal(a.scores, b.scores)
    other, _, _ = tiny_hooked(seed=11)
    with pytest.raises(ArtifactError, match="fitted on model"):
        FairSteer.load(tmp_path / "fs", model=other)
    with pytest.raises(ArtifactError, match="fitted on model"), back.steering(other):
        pass
    assert count_hooks(other) == 0


def test_unfitted_and_bad_config():
    with pytest.raises(NotFittedError, match="not fitted"):
        FairSteer().steerer()
    with pytest.raises(ConfigError, match="hook_kind"):
        FairSteerConfig(hook_kind="z")
    with pytest.raises(ConfigError, match="Unknown FairSteer config keys"):
        FairSteerConfig.from_dict({"alpah": 1.0})


def test_overlapping_splits_are_refused():
    hooked, _, _ = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=4, per_template=8)
    with pytest.raises(ConfigError, match="in both"):
        FairSteer(scoring="loglik").fit(hooked, items, items[:10])


def test_fast_path_evaluation_equals_tl(fitted):
    """A FairSteer fitted on the TL model steers the plain HF model with identical predictions."""
    hooked, fs, splits = fitted
    _, hf, tok = tiny_hooked(seed=0)
    items = list(splits["eval"].items)
    tl = evaluate(hooked, items, fs, scoring="loglik")
    fast = evaluate(hf, items, fs, scoring="loglik", tokenizer=tok)
    for a, b in zip(tl.results, fast.results, strict=True):
        assert a.metrics.to_dict() == b.metrics.to_dict()
        assert a.gate_rate == b.gate_rate


def test_few_shot_fit_and_evaluate():
    """Few-shot prompts: shots come from their own split and are passed to fit and evaluate."""
    from fairlens.data import few_shot_examples

    hooked, _, _ = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(items, {"probe": 0.5, "dsv": 0.2, "shots": 0.1, "eval": 0.2}, seed=1)
    shots = few_shot_examples(list(splits["shots"].items), 8, seed=0)
    fs = FairSteer(scoring="loglik", prompt_format="few_shot", layer=1).fit(
        hooked, list(splits["probe"].items), list(splits["dsv"].items), shots=shots
    )
    assert fs.layer_ == 1
    report = evaluate(
        hooked,
        list(splits["eval"].items),
        fs,
        scoring="loglik",
        prompt_format="few_shot",
        shots=shots,
    )
    assert report.settings["prompt_format"] == "few_shot"
    with pytest.raises(ConfigError):
        evaluate(hooked, list(splits["eval"].items), fs, scoring="loglik", prompt_format="few_shot")


def test_layer_selection_by_bbq_accuracy():
    """selection='bbq' tries the top-k probe layers with steering on the selection split."""
    hooked, _, _ = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(items, {"probe": 0.6, "dsv": 0.2, "select": 0.2}, seed=0)
    fs = FairSteer(scoring="loglik", selection="bbq", top_k=2, layers=(0, 1, 2)).fit(
        hooked, list(splits["probe"].items), list(splits["dsv"].items), list(splits["select"].items)
    )
    assert len(fs.selection_scores_) == 2
    assert fs.layer_ in fs.selection_scores_
    assert fs.selection_scores_[fs.layer_] == max(fs.selection_scores_.values())
    top2 = sorted(fs.sweep_.scores, key=lambda s: -s.accuracy)[:2]
    assert set(fs.selection_scores_) == {s.layer for s in top2}
    with pytest.raises(ConfigError, match="needs select_items"):
        FairSteer(scoring="loglik", selection="bbq").fit(
            hooked, list(splits["probe"].items), list(splits["dsv"].items)
        )
