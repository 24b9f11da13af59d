"""FairSteer end to end on a tiny random model: fit, steer, evaluate, save/load, refusals."""

from __future__ import annotations

import pytest
import torch

from fairlens.backend import add_hooks, count_hooks, encode
from fairlens.data import split_by_template
from fairlens.errors import ArtifactError, ConfigError, NotFittedError
from fairlens.evaluate.bbq import evaluate
from fairlens.fairsteer.config import FairSteerConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.scoring.letters import build_prompts, score_items
from fairlens.testing import tiny_hooked
from tests.conftest import rejects_ill_typed, synthetic_items


@pytest.fixture(scope="module")
def fitted():
    hooked, _, _ = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(items, {"probe": 0.6, "dsv": 0.2, "eval": 0.2}, seed=0)
    fs = FairSteer(FairSteerConfig(scoring="loglik", selection="probe", C=1.0, layers=(0, 1, 2)))
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


def _option_sequences(model, item) -> list[list[int]]:
    """The three token sequences loglik scoring runs for ``item`` (prompt + each option)."""
    tok = model.tokenizer
    prompt = encode(tok, build_prompts([item], "zero_shot", tok, None))[0]
    return [prompt + tok.encode(" " + a.strip(), add_special_tokens=False) for a in item.answers]


def test_evaluate_reports_three_methods(fitted):
    hooked, fs, splits = fitted
    # padded batches: the gate's statistics count tokens, never pads
    report = evaluate(hooked, list(splits["eval"].items), fs, scoring="loglik", batch_size=8)
    assert [r.method for r in report.results] == ["base", "static", "fairsteer"]
    assert report.results[0].gate_rate is None
    assert report.results[1].gate_rate == 1.0  # measured: every probed position was steered
    # The dynamic rate is what the gate decides on the unsteered activations at the steered hook
    # (loglik scoring probes every position of every option), recomputed here independently.
    steerer = fs.steerer(mode="dynamic")
    seqs = [s for it in splits["eval"].items for s in _option_sequences(hooked, it)]
    captured: list[torch.Tensor] = []
    with (
        torch.no_grad(),
        add_hooks(hooked, [(fs.hook_name_, lambda a: captured.append(a[0]) and None)]),
    ):
        for seq in seqs:
            hooked(torch.tensor([seq]))
    fired = sum(int((steerer.p_unbiased(a) < fs.config.tau).sum()) for a in captured)
    probed = sum(a.shape[0] for a in captured)
    assert 0 < fired < probed  # the gate decided both ways, so the rate below is informative
    assert report.results[2].gate_rate == pytest.approx(fired / probed)
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
        FairSteer(scoring="loglik", selection="probe").fit(hooked, items, items[:10])


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
    shots = few_shot_examples(list(splits["shots"].items), 2, seed=0)
    fs = FairSteer(scoring="loglik", prompt_format="few_shot", layer=1, selection="probe").fit(
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


@pytest.fixture(scope="module")
def letter_setup():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(
        items, {"probe": 0.5, "dsv": 0.2, "select": 0.15, "eval": 0.15}, seed=0
    )
    return hooked, hf, tok, {k: list(v.items) for k, v in splits.items()}


def test_default_selection_searches_layer_and_alpha_on_the_select_split(letter_setup):
    """The default: highest ambiguous accuracy with disambiguated accuracy >= base - 2 points."""
    from fairlens.search.space import SelectionRule

    hooked, hf, tok, parts = letter_setup
    fs = FairSteer().fit(hf, parts["probe"], parts["dsv"], parts["select"], tokenizer=tok)
    rows = fs.selection_["rows"]
    assert len(rows) == 3 * len(fs.config.alphas)  # every fitted layer x every alpha
    chosen = next(r for r in rows if r["key"] == fs.selection_["chosen"])
    assert (chosen["layer"], chosen["alpha"]) == (fs.layer_, fs.alpha_)
    ok = [r for r in rows if SelectionRule().eligible(r, fs.selection_["base"])]
    assert chosen["acc_ambig"] == max(r["acc_ambig"] for r in ok)
    assert fs.relative_strength() == pytest.approx(fs.alpha_, rel=1e-5)  # relative units
    assert fs.config.alpha_unit == "relative" and fs.summary()["relative_strength"] > 0
    # the fitted steerer reproduces the selection-split score it was chosen by (TL, full prompts)
    from fairlens.scoring.metrics import bbq_metrics

    with fs.steering(hooked):
        preds = score_items(hooked, parts["select"]).predictions
    pooled = bbq_metrics(parts["select"], preds).pooled
    assert pooled.acc_ambig == pytest.approx(chosen["acc_ambig"])
    assert pooled.acc_disambig == pytest.approx(chosen["acc_disambig"])
    with pytest.raises(ConfigError, match="needs select_items"):
        FairSteer().fit(hf, parts["probe"], parts["dsv"], tokenizer=tok)
    with pytest.raises(ConfigError, match="in both"):
        FairSteer().fit(hf, parts["probe"], parts["dsv"], parts["probe"][:8], tokenizer=tok)


def test_reference_selection_tries_every_layer_at_alpha_one(letter_setup):
    """selection='bbq' is the reference code's: overall accuracy over all layers, fixed alpha."""
    _hooked, hf, tok, parts = letter_setup
    fs = FairSteer(selection="bbq", alpha=1.0, alpha_unit="absolute").fit(
        hf, parts["probe"], parts["dsv"], parts["select"], tokenizer=tok
    )
    rows = fs.selection_["rows"]
    assert sorted(r["layer"] for r in rows) == [0, 1, 2] and {r["alpha"] for r in rows} == {1.0}
    best = max(rows, key=lambda r: (r["acc_overall"], -r["layer"]))
    assert fs.layer_ == best["layer"] and fs.alpha_ == 1.0
    assert fs.relative_strength() == pytest.approx(
        float(fs.dsv_.vectors[fs.layer_].norm() / fs.residual_norms_[fs.layer_]), rel=1e-5
    )


def test_gate_and_band_are_selectable_and_saved(letter_setup, tmp_path):
    hooked, hf, tok, parts = letter_setup
    fs = FairSteer(gate="context", scope="band", band_width=2, layer=0, alpha=0.5).fit(
        hf, parts["probe"], parts["dsv"], parts["select"], tokenizer=tok
    )
    assert fs.layers_ == (0, 1) and fs.selection_["rule"] == "fixed layer and alpha"
    steerer = fs.steerer()
    assert steerer.hook_names == ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    torch.testing.assert_close(steerer.coef, fs.gates_["context"].coef[0].float())
    fs.save(tmp_path / "fs")
    back = FairSteer.load(tmp_path / "fs", model=hf)
    assert back.layers_ == (0, 1) and back.config.gate == "context"
    items = parts["eval"]
    with fs.steering(hooked):
        a = score_items(hooked, items).scores
    with back.steering(hooked):
        b = score_items(hooked, items).scores
    assert torch.equal(a, b)
    assert count_hooks(hooked) == 0


def test_old_artifacts_are_refused_with_how_to_refit(letter_setup, tmp_path):
    import json

    _hooked, hf, tok, parts = letter_setup
    fs = FairSteer(layer=1, alpha=0.2).fit(hf, parts["probe"], parts["dsv"], tokenizer=tok)
    fs.save(tmp_path / "fs")
    meta = json.loads((tmp_path / "fs" / "meta.json").read_text())
    del meta["format"]
    (tmp_path / "fs" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="refit"):
        FairSteer.load(tmp_path / "fs")


@pytest.mark.ill_typed
def test_bad_config_values():
    for kwargs, needle in (
        ({"direction": "dsvv"}, "Did you mean 'dsv'"),
        ({"gate": "nope"}, "unknown gate"),
        ({"alphas": (0.1, float("nan"))}, "finite"),
        ({"alpha": float("inf")}, "finite"),
        ({"margin": -1.0}, "margin"),
        ({"scope": "band", "band_width": 1}, "band_width"),
    ):
        with pytest.raises(ConfigError, match=needle):
            FairSteerConfig(**kwargs)
    with rejects_ill_typed(ConfigError, "selection must be"):
        FairSteerConfig(selection="magic")  # type: ignore[arg-type]
    with rejects_ill_typed(ConfigError, "letter scoring"):
        FairSteer(scoring="loglik").fit(None, [], [], [object()])  # type: ignore[list-item]
