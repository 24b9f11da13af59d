"""Real CrowS-Pairs, the real neutral corpus and SmolLM2: counts, prefixes, TL == fast path."""

from __future__ import annotations

import pytest

from fairlens.data.crows_pairs import (
    CROWS_BIAS_TYPES,
    group_prefixes,
    load_crows_pairs,
    subsample_pairs,
    type_counts,
)
from fairlens.errors import DataError
from fairlens.evaluate.crows import crows_metrics, score_crows_pairs
from tests.integration.conftest import skip_or_fail

pytestmark = pytest.mark.integration

OFFICIAL = {
    "race-color": 516,
    "gender": 262,
    "socioeconomic": 172,
    "nationality": 159,
    "religion": 105,
    "age": 87,
    "sexual-orientation": 84,
    "physical-appearance": 63,
    "disability": 60,
}


@pytest.fixture(scope="module")
def pairs():
    from fairlens.data import resolve_data_dir

    try:
        return load_crows_pairs(resolve_data_dir(None))
    except DataError as exc:
        skip_or_fail(f"CrowS-Pairs not found: {exc.one_line()}")


def test_all_pairs_with_official_counts(pairs):
    assert len(pairs) == 1508
    assert type_counts(pairs) == dict(sorted(OFFICIAL.items()))
    assert set(OFFICIAL) == set(CROWS_BIAS_TYPES)
    assert sum(p.direction == "antistereo" for p in pairs) == 218
    assert all("\n" not in p.sent_more + p.sent_less for p in pairs)


def test_prefixes_cover_nearly_every_pair(pairs):
    prefixes = group_prefixes(pairs)
    assert len(prefixes) >= 1450
    assert all(p.more != p.less for p in prefixes)


def test_crows_scores_agree_between_tl_and_fast_path(smollm2, pairs):
    hooked, hf, tok = smollm2
    chosen = subsample_pairs(pairs, 2, seed=0)
    tl = crows_metrics(chosen, score_crows_pairs(hooked, tok, chosen))
    fast = crows_metrics(chosen, score_crows_pairs(hf, tok, chosen))
    assert tl.pooled.n == 18
    assert tl.pooled.stereotype_score == fast.pooled.stereotype_score
    assert tl.pooled.mean_logprob_gap == pytest.approx(fast.pooled.mean_logprob_gap, abs=1e-3)


def test_neutral_corpus_downloads_and_cleans():
    from fairlens.data.corpus import load_neutral_texts

    texts = load_neutral_texts()
    assert 450 <= len(texts) <= 600
    assert all(15 <= len(t.split()) <= 120 and t[-1] in ".?!" for t in texts)
    assert texts[0].startswith("The Workshop on Electronic Texts drew together")
