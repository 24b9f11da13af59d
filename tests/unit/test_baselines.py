"""The reviewer's baselines: letter-prior calibration and the CAST-style condition gate, checked by
hand on fixtures, against full runs, and in the panel (with their refusals)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fairlens.data import split_by_template
from fairlens.data.crows_pairs import CrowsPair
from fairlens.data.mcqa import MCItem
from fairlens.detect.condition_gate import ConditionGate
from fairlens.errors import ArtifactError, ConfigError, NotFittedError
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.suites import PanelConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.scoring.calibration import LetterPrior
from fairlens.scoring.letters import score_items
from fairlens.scoring.metrics import bbq_metrics
from fairlens.scoring.multiple_choice import mc_prompts, score_mc
from fairlens.steer.conditioned import ConditionedSteering
from fairlens.steer.fit_data import FitData
from fairlens.steer.interventions import method_context
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items

PAIRS = [
    CrowsPair(0, "Women are bad drivers.", "Men are bad drivers.", "stereo", "gender"),
    CrowsPair(1, "The poor man was lazy.", "The rich man was lazy.", "stereo", "socioeconomic"),
]


# ----------------------------------------------------------------------------- condition gate
def _gate_with(projections: list[float], labels: list[int]) -> ConditionGate:
    """A gate whose direction is fitted on a fixed 2-d fixture, thresholded on rows whose
    projections on that direction are ``projections``."""
    fit_x = np.array([[2.0, 0.0], [4.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    gate = ConditionGate("blocks.0.hook_resid_post").fit(fit_x, [0, 0, 1, 1])
    sel_x = np.array(projections)[:, None] * gate.direction_[None, :]
    return gate.select_threshold(sel_x, labels)


def test_the_direction_is_the_unit_difference_of_class_means():
    gate = _gate_with([0.0, 1.0, 2.0, 3.0], [1, 0, 1, 0])
    # mean steer (y=0) [3, 0] minus mean leave (y=1) [0, 2]
    np.testing.assert_allclose(gate.direction_, np.array([3.0, -2.0]) / math.sqrt(13))
    assert gate.n_fit_ == {"steer": 2, "leave": 2}


@pytest.mark.parametrize(
    ("projections", "labels", "threshold", "balanced"),
    [
        # candidates -inf .5, -1 .667, 0.5 .833, 1 .583, 2 .75, 3 .5 -> 0.5
        ([-1.0, 0.5, 1.0, 2.0, 3.0], [1, 1, 0, 1, 0], 0.5, 5 / 6),
        # 0 and 2 tie at .75: the highest threshold (the gate that fires least) wins
        ([0.0, 1.0, 2.0, 3.0], [1, 0, 1, 0], 2.0, 0.75),
        # tied projections: no threshold splits them (the naive cut between them would score 1.0)
        ([0.0, 1.0, 1.0, 1.0, 2.0], [1, 1, 1, 0, 0], 1.0, 0.75),
    ],
)
def test_the_threshold_follows_the_declared_rule(projections, labels, threshold, balanced):
    gate = _gate_with(projections, labels)
    assert gate.threshold_ == pytest.approx(threshold)
    assert gate.selection_["balanced_accuracy"] == pytest.approx(balanced)
    assert gate.selection_["n"] == len(labels)
    proj = torch.tensor(projections, dtype=torch.float64)[:, None] * torch.tensor(gate.direction_)
    fires = gate.fires(proj)
    assert fires.tolist() == [p > threshold + 1e-12 for p in projections]
    assert gate.predict(proj.numpy()).tolist() == [int(not f) for f in fires.tolist()]


def test_the_linear_form_fires_exactly_where_the_threshold_does():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    y = (x[:, 0] + 0.5 * rng.normal(size=400) < 0).astype(int)  # steer where x0 is high
    gate = ConditionGate().fit(x[:200], y[:200]).select_threshold(x[200:], y[200:])
    assert gate.selection_["balanced_accuracy"] > 0.7
    acts = torch.tensor(x, dtype=torch.float32)
    for tau in (0.2, 0.5, 0.8):
        coef, intercept = gate.linear_gate(tau)
        assert torch.equal(torch.sigmoid(acts @ coef + intercept) < tau, gate.fires(acts))


@pytest.mark.parametrize(
    ("x", "y", "needle"),
    [
        (np.ones((4, 2)), [0, 1, 1, 1], "needs >= 2 of each"),
        (np.full((4, 2), np.nan), [0, 0, 1, 1], "NaN or infinite"),
        (np.ones((4, 2)), [0, 2, 1, 1], "labels must be 0"),
        (np.ones(4), [0, 0, 1, 1], "X must be [n, d]"),
        (np.ones((4, 2)), [0, 0, 1, 1], "same mean activation"),
    ],
)
def test_bad_gate_inputs_are_refused(x, y, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        ConditionGate().fit(x, y)


def test_an_unfitted_gate_says_what_to_call():
    with pytest.raises(NotFittedError, match="fit"):
        ConditionGate().fires(torch.zeros(2, 3))
    gate = ConditionGate().fit(np.eye(4), [0, 0, 1, 1])
    with pytest.raises(NotFittedError, match="select_threshold"):
        gate.predict(np.eye(4))
    with pytest.raises(ConfigError, match="tau must be in"):
        _gate_with([0.0, 1.0, 2.0, 3.0], [1, 0, 1, 0]).linear_gate(1.0)


def test_the_gate_round_trips_as_an_artifact_and_refuses_a_broken_one(tmp_path):
    gate = _gate_with([0.0, 1.0, 2.0, 3.0], [1, 0, 1, 0])
    gate.save(tmp_path / "g", hook="blocks.0.hook_resid_post", select_split_hash="abc")
    back, provenance = ConditionGate.load(tmp_path / "g")
    assert provenance == {"hook": "blocks.0.hook_resid_post", "select_split_hash": "abc"}
    np.testing.assert_allclose(back.direction_, gate.direction_)
    assert (back.threshold_, back.hook_name) == (gate.threshold_, gate.hook_name)
    assert back.selection_ == gate.selection_
    from fairlens.artifacts import load_artifact, save_artifact

    tensors, meta = load_artifact(tmp_path / "g", "condition_gate")
    save_artifact(tmp_path / "bad", "condition_gate", {"direction": tensors["direction"] * np.nan},
                  {k: v for k, v in meta.items() if k not in ("kind", "fairlens_version")})  # fmt: skip
    with pytest.raises(ArtifactError, match="not finite"):
        ConditionGate.load(tmp_path / "bad")


# ----------------------------------------------------------------------------- letter prior
def test_the_letter_prior_is_each_letters_mean_over_the_rows_offering_it():
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [2.0, 2.0, 9.0]])
    prior = LetterPrior.fit(logits, [3, 3, 2])  # row 3 offers A and B only: its C is ignored
    assert prior.mean.tolist() == [2.0, 2.0, 2.0] and prior.counts == (3, 3, 2)
    assert prior.apply(torch.tensor([[2.0, 3.0]])).tolist() == [[0.0, 1.0]]
    assert prior.to_dict() == {"mean_logit": [2.0, 2.0, 2.0], "n": [3, 3, 2]}
    with pytest.raises(ConfigError, match="covers 3 letters"):
        prior.apply(torch.zeros(1, 4))
    with pytest.raises(ConfigError, match=r"letters \[2\] are offered by no"):
        LetterPrior.fit(logits, [2, 2, 2])
    with pytest.raises(ConfigError, match="not finite"):
        LetterPrior.fit(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ConfigError, match="needs"):
        LetterPrior.fit(torch.zeros(0, 3))


# ----------------------------------------------------------------------------- in the panel
@pytest.fixture(scope="module")
def fitted():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=12, per_template=12, categories=("Age", "SES", "Religion"))
    parts = {k: list(v.items) for k, v in split_by_template(
        items, {"probe": 0.4, "dsv": 0.2, "select": 0.2, "eval": 0.2}, seed=0).items()}  # fmt: skip
    fit = FitData(hf, parts["probe"], parts["dsv"], tokenizer=tok, layers=(0, 1, 2))
    fs = FairSteer(layers=(0, 1, 2), selection="probe", alphas=(4.0,), alpha_unit="absolute")
    fs.fit(hf, parts["probe"], parts["dsv"], tokenizer=tok, fit_data=fit)
    gate = fit.condition_gate(fs.hook_name_, parts["select"])
    return hooked, hf, tok, fs, fit, gate, parts


def test_the_gate_is_fitted_on_the_fit_rows_and_thresholded_on_the_selection_split(fitted):
    _, _, _, fs, fit, gate, parts = fitted
    x, y = fit.bad_rows(fs.hook_name_)
    mean_diff = x[torch.as_tensor(y == 0)].double().mean(0) - x[
        torch.as_tensor(y == 1)
    ].double().mean(0)
    np.testing.assert_allclose(gate.direction_, (mean_diff / mean_diff.norm()).numpy(), rtol=1e-6)
    assert gate.selection_["n"] <= len(parts["select"]) and gate.hook_name == fs.hook_name_
    with pytest.raises(ConfigError, match="in both the 'fit' and 'select' items"):
        fit.condition_gate(fs.hook_name_, parts["probe"][:5])
    with pytest.raises(ConfigError, match="no activations at"):
        fit.condition_gate("blocks.9.hook_resid_post", parts["select"])
    summary = ConditionedSteering(fs, gate).summary()
    assert summary["hook"] == fs.hook_name_ and -1 <= summary["direction_cosine_with_dsv"] <= 1


def test_cast_steers_where_the_condition_gate_fires_cached_equal_to_full_runs(fitted):
    hooked, hf, tok, fs, _, gate, parts = fitted
    cfg = PanelConfig(suites=("bbq", "crows"), methods=("base", "fairsteer", "cast"))
    kwargs = dict(bbq_items=parts["eval"], crows_pairs=PAIRS, condition_gate=gate, config=cfg)
    fast = evaluate_panel(hf, tok, fs, **kwargs)
    full = evaluate_panel(hooked, tok, fs, **kwargs)
    assert (
        fast.results["bbq"]["cast"]["prefix_cached"]
        and not full.results["bbq"]["cast"]["prefix_cached"]
    )
    for suite in ("bbq", "crows"):
        a, b = fast.results[suite]["cast"], full.results[suite]["cast"]
        assert a["metrics"]["pooled"] == pytest.approx(b["metrics"]["pooled"], abs=1e-3)
    # the cached gate rate is the condition gate's share of answer positions, recomputed here
    answer_acts = FitData(hf, parts["eval"], [], tokenizer=tok, layers=(0, 1, 2)).acts
    fires = gate.fires(answer_acts.acts[:, answer_acts.hook_names.index(fs.hook_name_)])
    assert fast.results["bbq"]["cast"]["gate_rate"] == pytest.approx(float(fires.float().mean()))
    assert full.results["bbq"]["cast"]["gate_rate"] == pytest.approx(float(fires.float().mean()))
    assert fast.settings["condition_gate"]["threshold"] == pytest.approx(gate.threshold_)
    with method_context("cast", hf, fs, positions="generated", condition_gate=gate) as stats:
        assert stats is not None
    with pytest.raises(ConfigError, match="need a fitted condition gate"):
        evaluate_panel(hf, tok, fs, bbq_items=parts["eval"],
                       config=PanelConfig(suites=("bbq",), methods=("cast",)))  # fmt: skip


def test_calibration_subtracts_the_selection_splits_letter_prior(fitted):
    hooked, hf, tok, fs, _, _, parts = fitted
    arc = [MCItem("arc_easy", "test", f"t{i}", f"Why {i}?", tuple(f"c{j}" for j in range(2 + i % 2)), i % 2)
           for i in range(10)]  # fmt: skip
    dev = [MCItem("arc_easy", "dev", f"d{i}", f"How {i}?", tuple(f"o{j}" for j in range(2 + i % 2)), 0)
           for i in range(8)]  # fmt: skip
    cfg = PanelConfig(suites=("bbq", "crows", "arc_easy"), methods=("base", "calibrated"))
    kwargs = dict(
        bbq_items=parts["eval"], crows_pairs=PAIRS, mc={"arc_easy": arc},
        bbq_calibration=parts["select"], mc_calibration={"arc_easy": dev}, config=cfg,
    )  # fmt: skip
    report = evaluate_panel(hf, tok, fs, **kwargs)
    # BBQ by hand: the eval letter logits minus the mean letter logits of the selection split
    prior = score_items(hf, parts["select"], mode="letter", tokenizer=tok).scores.mean(0)
    scores = score_items(hf, parts["eval"], mode="letter", tokenizer=tok).scores
    expected = bbq_metrics(parts["eval"], (scores - prior).argmax(-1)).to_dict()
    got = report.results["bbq"]["calibrated"]
    assert got["metrics"] == expected and got["prefix_cached"]
    assert got["letter_prior"]["mean_logit"] == pytest.approx(prior.tolist(), abs=1e-3)
    # ARC by hand: each letter's mean over the dev questions that offer it, then each question's
    # best own letter
    from fairlens.scoring.multiple_choice import mc_letter_ids

    letters = torch.tensor(mc_letter_ids(tok, 3))

    def logits_of(qs):
        out = []
        for p in mc_prompts(qs, tok):
            with torch.no_grad():
                out.append(
                    hf(torch.tensor([tok.encode(p, add_special_tokens=False)])).logits[
                        0, -1, letters
                    ]
                )
        return torch.stack(out).double()

    dl, tl = logits_of(dev), logits_of(arc)
    offers = torch.tensor([[j < len(q.choices) for j in range(3)] for q in dev])
    mean = (dl * offers).sum(0) / offers.sum(0)
    preds = [
        int((tl[i, : len(q.choices)] - mean[: len(q.choices)]).argmax()) for i, q in enumerate(arc)
    ]
    acc = float(np.mean([p == q.answer for p, q in zip(preds, arc, strict=True)]))
    assert report.results["arc_easy"]["calibrated"]["accuracy"] == pytest.approx(acc)
    base_preds = score_mc(hf, tok, arc, mc_prompts(arc, tok))
    changed = float(np.mean([p != int(b) for p, b in zip(preds, base_preds, strict=True)]))
    assert report.results["arc_easy"]["calibrated"]["side_effect_rate"] == pytest.approx(changed)
    # CrowS reads no letters: the model is unchanged, the row is base's
    crows = report.results["crows"]["calibrated"]
    assert crows["identical_to"] == "base"
    assert crows["metrics"] == report.results["crows"]["base"]["metrics"]
    assert "repeat base's numbers" in report.markdown()
    # on the analysis path (whole prompts on the HookedTransformer) the same answers
    tl_report = evaluate_panel(hooked, tok, fs, **kwargs)
    assert tl_report.results["bbq"]["calibrated"]["metrics"] == expected
    assert tl_report.results["arc_easy"]["calibrated"]["accuracy"] == pytest.approx(acc)


def test_calibration_refusals(fitted):
    _, hf, tok, fs, _, _, parts = fitted
    cfg = PanelConfig(suites=("bbq",), methods=("calibrated",))
    with pytest.raises(ConfigError, match="no calibration items for the 'bbq' suite"):
        evaluate_panel(hf, tok, fs, bbq_items=parts["eval"], config=cfg)
    with pytest.raises(ConfigError, match="in both the 'bbq_items' and 'bbq_calibration' items"):
        evaluate_panel(hf, tok, fs, bbq_items=parts["eval"], bbq_calibration=parts["eval"][:3],
                       config=cfg)  # fmt: skip
    # under the lm-eval protocol BBQ reads no letters: calibration is base, no calibration needed
    lm = PanelConfig(suites=("bbq",), methods=("calibrated",), bbq_protocol="lm-eval")
    report = evaluate_panel(hf, tok, None, bbq_items=parts["eval"][:6], config=lm)
    assert report.results["bbq"]["calibrated"]["identical_to"] == "base"
