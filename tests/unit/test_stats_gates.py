"""Intervals and paired tests on hand-computed values; gate labels and label composition."""

from __future__ import annotations

import numpy as np
import pytest

from fairlens.detect.gates import gate_labels, label_composition
from fairlens.errors import ConfigError
from fairlens.stats import compare, mcnemar, paired_bootstrap, wilson
from tests.conftest import synthetic_item


def test_wilson_matches_the_closed_form():
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.23659, abs=1e-4) and hi == pytest.approx(0.76341, abs=1e-4)
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.16113, abs=1e-4)
    with pytest.raises(ConfigError):
        wilson(3, 2)


def test_mcnemar_exact():
    a = np.array([0, 0, 0, 0, 0, 1, 1], dtype=bool)
    b = np.array([1, 1, 1, 1, 1, 1, 1], dtype=bool)
    res = mcnemar(a, b)  # 5 discordant pairs, all favour b: p = 2 * (1/2)^5
    assert res == {"b_only": 5, "a_only": 0, "p": pytest.approx(0.0625)}
    res = mcnemar(np.array([1, 0, 1, 0], bool), np.array([0, 1, 0, 1], bool))
    assert res["p"] == pytest.approx(1.0)  # 2 vs 2: no evidence
    assert mcnemar(a, a)["p"] == 1.0


def test_paired_bootstrap():
    a = np.zeros(50, dtype=bool)
    gain, lo, hi = paired_bootstrap(a, a)
    assert (gain, lo, hi) == (0.0, 0.0, 0.0)
    b = a.copy()
    b[:20] = True  # +40 points
    gain, lo, hi = paired_bootstrap(a, b, seed=1)
    assert gain == pytest.approx(0.4) and lo < 0.4 < hi and lo > 0.2
    assert paired_bootstrap(a, b, seed=1) == (gain, lo, hi)  # seeded
    out = compare(a, b)
    assert out["n"] == 50 and out["gain"] == pytest.approx(0.4)
    assert out["mcnemar"]["b_only"] == 20 and out["method_ci"][0] < 0.4 < out["method_ci"][1]


def _items():
    # ambiguous: gold = unknown (2), target 0 (neg); disambiguated: gold alternates 0/1
    return [
        synthetic_item("Age", 0, "1", ambiguous=True),
        synthetic_item("Age", 1, "1", ambiguous=True),
        synthetic_item("Age", 2, "2", ambiguous=False),  # gold 0 = target: never "biased"
        synthetic_item("SES", 3, "3", ambiguous=False),  # gold 1
        synthetic_item("SES", 4, "3", ambiguous=True),
    ]


def test_gate_labels_and_composition():
    items = _items()
    preds = np.array([0, 2, 0, 0, 0])  # biased, unknown, gold, target(biased), biased
    keep, y = gate_labels("bad", items, preds)
    assert keep.tolist() == [0, 1, 2, 3, 4] and y.tolist() == [0, 1, 1, 0, 0]
    keep, y = gate_labels("context", items, preds)
    assert y.tolist() == [0, 0, 1, 1, 0]
    keep, y = gate_labels("ambig", items, preds)
    assert keep.tolist() == [0, 1, 4] and y.tolist() == [0, 1, 0]
    comp = label_composition(items, preds)
    assert comp["pooled"]["unbiased"] == {"n": 2, "n_ambig": 1, "share_ambig": 0.5}
    assert comp["pooled"]["biased"] == {"n": 3, "n_ambig": 2, "share_ambig": pytest.approx(2 / 3)}
    assert comp["per_category"]["SES"]["biased"]["n"] == 2
    assert comp["share_ambig_all_items"] == pytest.approx(0.6)
    with pytest.raises(ConfigError, match="Did you mean 'bad'"):
        gate_labels("bda", items, preds)
