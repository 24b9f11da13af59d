"""Direction registry, the steering search, its protocol, its resume, and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.base import clone

from fairlens.data import split_by_template
from fairlens.directions import DIRECTION_METHODS, MeanDifference, get_direction_method
from fairlens.errors import ConfigError
from fairlens.scoring.letters import score_items
from fairlens.search.engine import SearchResult, run_search
from fairlens.search.space import SearchSpace, SelectionRule, Variant, expand
from fairlens.search.variants import score_variants, steering_vectors
from fairlens.steer.fit_data import FitData
from fairlens.steer.steerer import Steerer, SteeringConfig
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items


@pytest.fixture(scope="module")
def setup():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(
        items, {"probe": 0.5, "dsv": 0.2, "select": 0.15, "eval": 0.15}, seed=0
    )
    parts = {k: list(v.items) for k, v in splits.items()}
    fit = FitData(hf, parts["probe"], parts["dsv"], tokenizer=tok)
    return hooked, hf, tok, fit, parts


def test_every_registered_direction_fits(setup):
    *_, fit, _ = setup
    assert set(DIRECTION_METHODS) == {
        "dsv", "dsv_balanced", "colon", "probe", "pca", "say_unknown", "instruction", "optimised",
    }  # fmt: skip
    for name in DIRECTION_METHODS:
        d = fit.direction(name, [1, 2])
        assert d.vectors.shape == (2, 64) and bool(torch.isfinite(d.vectors).all()), name
        assert d.method == name and float(d.vectors.norm(dim=-1).min()) > 0
    # fitted once per layer: asking again for a superset reuses the layers already fitted
    again = fit.direction("optimised", [1, 2])
    assert torch.equal(again.vectors, fit.direction("optimised", [0, 1, 2]).vectors[1:])
    with pytest.raises(ConfigError, match="Did you mean 'dsv'"):
        get_direction_method("dvs")


def test_estimators_follow_sklearn_conventions():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 2, 8, generator=g)
    y = np.array([1, 0] * 20)
    groups = np.array(["A", "A", "B", "C"] * 10)
    est = MeanDifference(balance=True)
    assert clone(est).get_params() == {"balance": True}
    est.fit(X, y, groups=groups)
    # balanced: each side is the mean of its per-letter means
    pos = [X[(y == 1) & (groups == k)].mean(0) for k in sorted(set(groups[y == 1]))]
    neg = [X[(y == 0) & (groups == k)].mean(0) for k in sorted(set(groups[y == 0]))]
    torch.testing.assert_close(est.directions_, torch.stack(pos).mean(0) - torch.stack(neg).mean(0))
    plain = MeanDifference().fit(X, y)
    torch.testing.assert_close(plain.directions_, X[y == 1].mean(0) - X[y == 0].mean(0))
    with pytest.raises(ConfigError, match="both classes"):
        MeanDifference().fit(X, np.ones(40, dtype=int))
    with pytest.raises(ConfigError, match="NaN"):
        MeanDifference().fit(torch.full((4, 1, 2), float("nan")), [0, 1, 0, 1])


def test_optimised_direction_raises_the_unknown_margin(setup):
    *_, fit, _ = setup
    layer = 1
    hook = fit.hooks[layer]
    v = fit.direction("optimised", [layer]).vectors[0]
    cache = fit._optimise_cache()
    amb = torch.tensor([it.is_ambiguous for it in fit.probe_items])
    unknown = torch.tensor([it.unknown_loc for it in fit.probe_items])

    def margin(z):
        zu = z.gather(1, unknown[:, None]).squeeze(1)
        other = z.masked_fill(torch.nn.functional.one_hot(unknown, 3).bool(), float("-inf"))
        return (zu - other.logsumexp(1))[amb].mean()

    steered = cache.logits([{hook: v}])[0]
    assert margin(steered) > margin(cache.base_logits) + 0.1
    assert float(v.norm()) == pytest.approx(0.4 * fit.norm_at(hook), rel=1e-4)


def test_space_and_rule_validation():
    with pytest.raises(ConfigError, match="unknown direction method"):
        SearchSpace(directions=("nope",))
    with pytest.raises(ConfigError, match="finite"):
        SearchSpace(alphas=(float("inf"),))
    with pytest.raises(ConfigError, match="probabilities"):
        SearchSpace(taus=(1.5,))
    with pytest.raises(ConfigError, match="unknown scopes"):
        SearchSpace(scopes=("everywhere",))
    with pytest.raises(ConfigError, match="not fitted"):
        expand(SearchSpace(layers=(7,)), [0, 1, 2], 3)
    base = {"acc_ambig": 0.2, "acc_disambig": 0.7}
    rows = [
        {
            "key": "a",
            "acc_ambig": 0.6,
            "acc_disambig": 0.5,
            "strength": 0.1,
            "layer": 1,
        },  # too costly
        {"key": "b", "acc_ambig": 0.5, "acc_disambig": 0.69, "strength": 0.4, "layer": 3},
        {
            "key": "c",
            "acc_ambig": 0.5,
            "acc_disambig": 0.68,
            "strength": 0.2,
            "layer": 5,
        },  # tie: weaker
        {"key": "d", "acc_ambig": 0.4, "acc_disambig": 0.9, "strength": 0.1, "layer": 0},
    ]
    rule = SelectionRule()
    assert rule.choose(rows, base)["key"] == "c"
    assert "base - 2 points" in rule.describe()
    assert SelectionRule(margin=0.5).choose(rows, base)["key"] == "a"
    with pytest.raises(ConfigError, match="no variant"):
        SelectionRule(margin=0.0).choose(rows[:3], base)
    with pytest.raises(ConfigError, match="margin"):
        SelectionRule(margin=float("nan"))


def test_cached_variants_equal_real_steered_runs(setup):
    """Static at ':' and a scope-'all' variant against Steerer runs on full prompts (TL)."""
    hooked, _hf, _tok, fit, parts = setup
    items = parts["select"]
    static = Variant("dsv", 1, 0.5, "relative", "colon", "static", None, None)
    dynamic = Variant("probe", 2, 0.8, "relative", "colon", "dynamic", "bad", 0.5)
    everywhere = Variant("colon", 1, 0.3, "relative", "all", "static", None, None)
    _, rows, preds, _ = score_variants(fit, items, [static, dynamic, everywhere])
    for v in (static, dynamic):
        hook = fit.hooks[v.layer]
        vec = steering_vectors(fit, v)[hook]
        sweep = fit.gate("bad")
        i = sweep.layers.index(v.layer)
        steerer = Steerer(
            hook, vec, sweep.coef[i].float(), sweep.intercept[i].float(),
            SteeringConfig(mode=v.mode, alpha=1.0, tau=0.5),  # type: ignore[arg-type]
        )  # fmt: skip
        with steerer.apply(hooked):
            real = score_items(hooked, items).predictions.numpy()
        np.testing.assert_array_equal(preds[v.key], real)
    assert rows[0]["strength"] == pytest.approx(0.5, rel=1e-5)
    assert rows[1]["gate_rate_ambig"] is not None


def test_search_protocol_resume_and_refusals(setup, tmp_path, monkeypatch):
    _, _hf, _tok, fit, parts = setup
    space = SearchSpace(
        directions=("dsv", "probe"), alphas=(0.2, 0.8), scopes=("colon", "band"), band_width=2,
        gates=("bad", "ambig"), taus=(0.3, 0.5),
    )  # fmt: skip
    with pytest.raises(ConfigError, match="in both"):
        run_search(fit, parts["probe"][:20], space=space)
    with pytest.raises(ConfigError, match="in both"):
        run_search(fit, parts["select"], space=space, eval_items=parts["select"][:4])
    res = run_search(
        fit, parts["select"], space=space, eval_items=parts["eval"], out_dir=tmp_path / "grid"
    )
    # 2 directions x (3 colon layers + 2 band starts) x 2 alphas x (1 static + 2 gates x 2 taus)
    assert len(res.rows) == 2 * 5 * 2 * 5
    chosen = res.row(res.chosen)
    assert SelectionRule().eligible(chosen, res.base)
    assert chosen["acc_ambig"] == max(
        r["acc_ambig"] for r in res.rows if SelectionRule().eligible(r, res.base)
    )
    assert set(res.family_best) == {"dsv", "probe"} and set(res.family_best["dsv"]) == {
        "static",
        "dynamic",
    }
    assert {"base", "prompt", res.chosen} <= set(res.eval)
    entry = res.eval[res.chosen]["vs_base"]["ambig"]
    assert entry["n"] == sum(it.is_ambiguous for it in parts["eval"]) and "mcnemar" in entry
    assert (
        "paper_bbq_layer" in res.references
        and len(res.references["paper_bbq_layer"]["per_layer"]) == 3
    )
    assert [p["layer"] for p in res.patching["select"]["per_layer"]] == [0, 1, 2]
    assert set(res.diagnostics["gates"]) == {"bad", "context", "ambig"}
    assert "selection rule (declared before scoring)" in res.markdown()
    back = SearchResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.chosen == res.chosen and back.rows == res.rows

    # resume: cut the last saved line in half; nothing completed is scored again
    path = tmp_path / "grid" / "edits.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    calls = _count_scored_edits(monkeypatch, fit, parts["select"])
    again = run_search(fit, parts["select"], space=space, out_dir=tmp_path / "grid", patching=())
    assert again.chosen == res.chosen and again.rows == res.rows
    assert sum(calls) == 1  # only the cut edit was recomputed
    assert len(path.read_text().splitlines()) == len(lines)

    # a folder of another search (other selection items) is refused, not mixed in
    with pytest.raises(ConfigError, match="cannot be resumed"):
        run_search(fit, parts["select"][:-2], space=space, out_dir=tmp_path / "grid")


def test_unfitted_layers_are_refused(setup):
    *_, fit, _ = setup
    with pytest.raises(ConfigError, match="layers \\[9\\]"):
        fit.direction("dsv", [9])


def test_checkpoint_saves_every_fitted_direction_before_scoring(setup, tmp_path, monkeypatch):
    _, hf, tok, _, parts = setup
    fit = FitData(hf, parts["probe"], parts["dsv"], tokenizer=tok)
    # the grid needs only "pca"; "dsv" is needed by the paper references alone
    space = SearchSpace(directions=("pca",), alphas=(0.4,), gates=("bad",), taus=(0.5,))
    scored = _count_scored_edits(monkeypatch, fit, parts["select"])
    saved_after: list[int] = []

    def checkpoint() -> None:
        saved_after.append(len(scored))
        fit.save(tmp_path / "fit_data")

    run_search(fit, parts["select"], space=space, checkpoint=checkpoint, patching=())
    assert saved_after == [0] and sum(scored) > 0  # saved once, before any variant was scored
    back = FitData.load(tmp_path / "fit_data", hf, parts["probe"], parts["dsv"], tokenizer=tok)
    for cls in ("MeanDifference", "PCADirection"):
        monkeypatch.setattr(
            f"fairlens.directions.estimators.{cls}.fit",
            lambda *a, **k: pytest.fail("a saved direction was fitted again"),
        )
    for name in ("dsv", "pca"):
        torch.testing.assert_close(
            back.direction(name, fit.layers).vectors, fit.direction(name, fit.layers).vectors
        )


def _count_scored_edits(monkeypatch, fit, items) -> list[int]:
    """Record the number of edits of every ``logits`` call of the scorer class used on ``items``."""
    calls: list[int] = []
    scorer_cls = type(fit.scorer_for(items))
    real = scorer_cls.logits
    monkeypatch.setattr(
        scorer_cls,
        "logits",
        lambda self, edits, **kw: calls.append(len(edits)) or real(self, edits, **kw),
    )
    return calls
