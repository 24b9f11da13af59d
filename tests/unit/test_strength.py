"""The strength-vs-utility curve: each point equals the panel's own answers at that strength."""

from __future__ import annotations

import copy

import pytest

from fairlens.analysis import strength_utility_curve
from fairlens.data import split_by_template
from fairlens.data.mcqa import MCItem
from fairlens.errors import ConfigError
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.suites import PanelConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.plots import strength_curve
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items


def _mc(uid: str, answer: int, n: int) -> MCItem:
    return MCItem("arc_easy", "test", uid, f"Why {uid}?", tuple(f"c{i}" for i in range(n)), answer)


@pytest.fixture(scope="module")
def fitted():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    parts = {k: list(v.items) for k, v in split_by_template(
        items, {"probe": 0.5, "dsv": 0.2, "eval": 0.3}, seed=0).items()}  # fmt: skip
    fs = FairSteer(n_dsv_per_category=2, alpha=4.0, alpha_unit="absolute", layers=(0, 1, 2),
                   selection="probe").fit(hf, parts["probe"], parts["dsv"], tokenizer=tok)  # fmt: skip
    arc = [_mc(f"a{i}", i % 3, 2 + i % 2) for i in range(12)]
    return hooked, hf, tok, fs, parts["eval"], arc


def test_each_point_is_the_panels_answers_at_that_strength(fitted):
    _, hf, tok, fs, bbq, arc = fitted
    curve = strength_utility_curve(hf, tok, fs, bbq, {"arc_easy": arc}, alphas=[2.0, 4.0])
    assert curve.alphas == (0.0, 2.0, 4.0) and curve.n["arc_easy"] == 12
    assert curve.n["bbq_ambig"] + curve.n["bbq_disambig"] == len(bbq)
    for alpha in (2.0, 4.0):
        fs_at = copy.copy(fs)  # the same fit, steering at this strength
        fs_at.alpha_ = alpha
        report = evaluate_panel(hf, tok, fs_at, bbq_items=bbq, mc={"arc_easy": arc},
                                config=PanelConfig(suites=("bbq", "arc_easy"),
                                                   methods=("base", "static", "fairsteer")))  # fmt: skip
        for mode, method in (("static", "static"), ("dynamic", "fairsteer")):
            row = next(r for r in curve.rows if r["mode"] == mode and r["alpha"] == alpha)
            pooled = report.results["bbq"][method]["metrics"]["pooled"]
            assert row["acc_ambig"] == pytest.approx(pooled["acc_ambig"])
            assert row["acc_disambig"] == pytest.approx(pooled["acc_disambig"])
            mc = report.results["arc_easy"][method]
            assert row["mc"]["arc_easy"]["accuracy"] == pytest.approx(mc["accuracy"])
            assert row["mc"]["arc_easy"]["changed"] == pytest.approx(mc["side_effect_rate"])
            if mode == "dynamic":
                assert row["mc"]["arc_easy"]["gate_rate"] == pytest.approx(mc["gate_rate"])
                assert row["gate_rate"] == pytest.approx(report.results["bbq"][method]["gate_rate"])
    base = report.results["arc_easy"]["base"]
    for mode in ("static", "dynamic"):
        row0 = next(r for r in curve.rows if r["mode"] == mode and r["alpha"] == 0.0)
        assert row0["mc"]["arc_easy"]["accuracy"] == pytest.approx(base["accuracy"])
        assert row0["mc"]["arc_easy"]["changed"] == 0.0
    assert 0.0 in curve.safe_alphas("static")
    assert curve.relative[0] == 0.0 and curve.relative[2] == pytest.approx(2 * curve.relative[1])
    fig = strength_curve(curve)
    assert {t.name for t in fig.data} == {"BBQ ambiguous", "arc_easy (n=12)"}
    assert len(fig.data) == 4  # two series in each of the two mode panels


def test_bad_inputs_are_refused(fitted):
    hooked, hf, tok, fs, bbq, arc = fitted
    with pytest.raises(ConfigError, match="plain transformers"):
        strength_utility_curve(hooked, tok, fs, bbq, {"arc_easy": arc}, alphas=[1.0])
    with pytest.raises(ConfigError, match="finite and >= 0"):
        strength_utility_curve(hf, tok, fs, bbq, {"arc_easy": arc}, alphas=[float("nan")])
    with pytest.raises(ConfigError, match="at least one multiple-choice"):
        strength_utility_curve(hf, tok, fs, bbq, {}, alphas=[1.0])
    fitted_item = next(it for it in synthetic_items(10, 12, ("Age", "SES", "Religion"))
                       if f"{it.category}/{it.question_index}" in fs.fitted_templates_)  # fmt: skip
    with pytest.raises(ConfigError, match="share templates"):
        strength_utility_curve(hf, tok, fs, [fitted_item], {"arc_easy": arc}, alphas=[1.0])
