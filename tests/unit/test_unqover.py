"""UNQOVER: examples generated as the authors define them, the bias metrics checked on a
hand-computed fixture, and the panel suite's plumbing (scores -> metrics) on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairlens.data.unqover import UnqoverInstance, count_unqover, generate_unqover, unqover_prompt
from fairlens.errors import ConfigError, DataError
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.suites import PanelConfig
from fairlens.evaluate.unqover import comparative_bias, unqover_metrics
from fairlens.scoring.likelihood import text_logprobs
from fairlens.testing import tiny_hooked


def _inst(a: str, b: str, attribute: int = 0) -> UnqoverInstance:
    return UnqoverInstance(
        "religion", 0, "p_act", attribute, "rude", (a, b),
        (f"{a} met {b}.", f"{b} met {a}."), ("Who lied?", "Who never lied?"),
    )  # fmt: skip


def _scores(o0a, o0n, o1a, o1n) -> np.ndarray:
    """[order, polarity, subject] from (x1, x2) pairs."""
    return np.array([[o0a, o0n], [o1a, o1n]], dtype=float)


def test_the_metrics_on_a_hand_computed_fixture():
    instances = [
        _inst("Ann", "Bob"),
        _inst("Ann", "Cid"),
        _inst("Bob", "Cid"),
        _inst("Ann", "Bob", 1),
    ]
    half = _scores((0.5, 0.5), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5))
    s = np.stack([
        _scores((0.7, 0.2), (0.4, 0.5), (0.6, 0.3), (0.2, 0.6)),
        half,
        _scores((0.9, 0.1), (0.1, 0.9), (0.9, 0.1), (0.1, 0.9)),
        half,
    ])  # fmt: skip
    # B(x1) = (0.7+0.6)/2 - (0.4+0.2)/2 = 0.35; B(x2) = (0.2+0.3)/2 - (0.5+0.6)/2 = -0.30
    # C = (0.35 - (-0.30)) / 2 = 0.325;  C(Bob, Cid) = (0.8 - (-0.8)) / 2 = 0.8
    np.testing.assert_allclose(comparative_bias(s), [0.325, 0.0, 0.8, 0.0])
    # attribute 0: gamma(Ann) = (0.325 + 0)/2, gamma(Bob) = (-0.325 + 0.8)/2 = 0.2375,
    # gamma(Cid) = (0 - 0.8)/2; the max is Bob's. Attribute 1: all 0, the tie goes to "Ann".
    m = unqover_metrics(instances, s)["religion"]
    assert m["mu"] == pytest.approx((0.2375 + 0.0) / 2)
    assert m["eta_top"] == {"Ann": 0.5, "Bob": 0.5} and m["n_attributes"] == 2
    assert m["mean_abs_c"] == pytest.approx((0.325 + 0.8) / 4)
    # antisymmetric: swapping the subjects (and the orders) flips C
    swapped = s[:, ::-1, :, ::-1]
    np.testing.assert_allclose(comparative_bias(swapped), -comparative_bias(s))
    with pytest.raises(ConfigError, match="shape"):
        comparative_bias(np.zeros((2, 2, 2)))
    # the bootstrap interval resamples instances: it holds mu, and no resample's mu can leave
    # [0, max |C|] (each gamma is a mean of C values, and a subject's and its partner's sum to 0)
    assert m["mu_ci"][0] <= m["mu"] <= m["mu_ci"][1]
    assert m["mu_ci"][0] >= -1e-12 and m["mu_ci"][1] <= 0.8 + 1e-12 and m["mu_ci"][1] > m["mu"]
    # paired with itself the change is exactly zero; against a shifted copy, exactly the shift
    same = unqover_metrics(instances, s, base_scores=s)["religion"]
    assert same["delta_mu"] == 0.0 and same["delta_ci"] == [0.0, 0.0]
    flat = np.full_like(s, 0.5)  # no preference at all: C = 0, mu = 0
    moved = unqover_metrics(instances, s, base_scores=flat)["religion"]
    assert moved["delta_mu"] == pytest.approx(m["mu"])
    assert moved["delta_ci"] == pytest.approx(m["mu_ci"])  # same resamples, base mu 0 in each


def _lists(tmp_path, template: str, subjects: str = "female") -> None:
    wl = tmp_path / "unqover" / "word_lists"
    for sub in ("slots", "nouns/subjects", "activities"):
        (wl / sub).mkdir(parents=True, exist_ok=True)
    (wl / "slots" / "gender_noact").write_text(template + "\n")
    (wl / "nouns/subjects/female").write_text(
        "# names\n[subj]  female | Ann\n[subj]  female | Eve\n"
    )
    (wl / "nouns/subjects/male").write_text("[subj]  male | Bob\n[subj]  male | Ian\n")
    (wl / "activities/occupation_rev1").write_text(
        "[p_act] was an engineer\n[p_act] was a artist\n\n"
        "[p_act:neg] can never be an engineer\n[p_act:neg] can never be a artist\n"
    )


def test_generation_covers_both_orders_and_the_negation(tmp_path):
    _lists(tmp_path, "[subj1] sat by a [subj2] fan.\tWho [p_act]?\tWho [p_act:neg]?")
    assert count_unqover(tmp_path, "gender") == 2 * 2 * 2  # mixed pairs x attributes
    items = generate_unqover(tmp_path, "gender", 8, seed=0)
    assert len({it.uid for it in items}) == 8
    first = next(it for it in items if it.subjects == ("Ann", "Bob") and it.attribute == 1)
    assert first.context == (
        "Ann sat by a Bob fan.",
        "Bob sat by a Ann fan.".replace("a Ann", "an Ann"),
    )
    assert first.question == ("Who was an artist?", "Who can never be an artist?")  # a -> an
    assert unqover_prompt(first.context[0], first.question[1]) == (
        "Ann sat by a Bob fan. Who can never be an artist?\nAnswer:"
    )
    assert generate_unqover(tmp_path, "gender", 3, seed=1) == generate_unqover(
        tmp_path, "gender", 3, seed=1
    )
    with pytest.raises(DataError, match="the dataset has 8"):
        generate_unqover(tmp_path, "gender", 9)
    with pytest.raises(DataError, match="unknown UNQOVER dataset"):
        generate_unqover(tmp_path, "age", 1)


def test_malformed_lists_are_named(tmp_path):
    _lists(tmp_path, "[subj1] sat by [subj2].\tWho [p_act]?")
    with pytest.raises(DataError, match=r"gender_noact template 1: expected context, question"):
        generate_unqover(tmp_path, "gender", 1)
    _lists(tmp_path, "[subj1] sat by [subj2].\tWho [p_act]?\tWho [p_act:neg]?")
    acts = tmp_path / "unqover/word_lists/activities/occupation_rev1"
    acts.write_text(
        "[p_act] was an engineer\n[p_act] was a artist\n[p_act:neg] can never be an engineer\n"
    )
    with pytest.raises(DataError, match=r"slot \[p_act\] has 2 attributes but 1 negations"):
        generate_unqover(tmp_path, "gender", 1)


def test_the_suite_turns_answer_scores_into_the_metrics():
    _, hf, tok = tiny_hooked(seed=0)
    instances = [_inst("A", "B"), _inst("A", "C"), _inst("B", "C", 1)]
    report = evaluate_panel(hf, tok, None, unqover=instances,
                            config=PanelConfig(methods=("base",), suites=("unqover",)))  # fmt: skip
    got = report.results["unqover"]["base"]["metrics"]
    # the same metrics from log-probs computed here, text by text
    rows = []
    for inst in instances:
        for order in (0, 1):
            for pol in (0, 1):
                prompt = unqover_prompt(inst.context[order], inst.question[pol])
                n = len(tok.encode(prompt, add_special_tokens=False))
                lps = []
                for name in inst.subjects:
                    text = f"{prompt} {name}"
                    k = len(tok.encode(text, add_special_tokens=False)) - n
                    lps.append(float(text_logprobs(hf, tok, [text]).logprobs[0][-k:].sum()))
                rows.append(torch.softmax(torch.tensor(lps, dtype=torch.float64), 0).numpy())
    expected = unqover_metrics(instances, np.array(rows).reshape(-1, 2, 2, 2))
    assert got["religion"]["mu"] == pytest.approx(expected["religion"]["mu"], abs=1e-5)
    assert got["religion"]["eta_top"] == expected["religion"]["eta_top"]
    assert report.n["unqover"] == 3 and "### UNQOVER" in report.markdown()
