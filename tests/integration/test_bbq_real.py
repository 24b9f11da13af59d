"""Checks over the real BBQ files (all 11 categories, 58,492 items)."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from fairlens.data import (
    BBQ_CATEGORIES,
    BBQ_OFFICIAL_COUNTS,
    BBQItem,
    contrastive_pairs,
    load_bbq,
    resolve_data_dir,
    split_by_template,
    target_flags,
)
from fairlens.errors import DataError
from tests.integration.conftest import skip_or_fail

pytestmark = pytest.mark.integration

# Fraction of items with a bias target, measured on the shared data (Nov 2026), minus a margin.
# Misses: Gender_identity items whose two answers are both male ("man"/"boy") under an "F"
# stereotype; items with an empty answer group (a few broken regenerated Race_* / SES items);
# "African"/"African" pairs; intersectional items whose answers match the race twice.
MIN_TARGET_COVERAGE = {
    "Age": 0.99,
    "Disability_status": 0.99,
    "Gender_identity": 0.99,  # measured 0.9972
    "Nationality": 0.99,
    "Physical_appearance": 0.99,
    "Race_ethnicity": 0.98,  # measured 0.9907
    "Race_x_SES": 0.99,  # measured 0.9993
    "Race_x_gender": 0.97,  # measured 0.9815
    "Religion": 0.99,
    "SES": 0.99,  # measured 0.9977
    "Sexual_orientation": 0.99,
}


@pytest.fixture(scope="module")
def items() -> list[BBQItem]:
    try:
        data_dir = resolve_data_dir(None)
    except DataError as exc:
        skip_or_fail(f"BBQ data not found: {exc.one_line()}")
    start = time.perf_counter()
    loaded = load_bbq(data_dir / "bbq")
    elapsed = time.perf_counter() - start
    assert elapsed < 30, f"loading BBQ took {elapsed:.1f} s"
    return loaded


def by_category(items: list[BBQItem]) -> dict[str, list[BBQItem]]:
    groups: dict[str, list[BBQItem]] = defaultdict(list)
    for item in items:
        groups[item.category].append(item)
    return groups


def test_all_categories_with_official_counts(items):
    groups = by_category(items)
    assert {c: len(g) for c, g in groups.items()} == BBQ_OFFICIAL_COUNTS
    assert len(items) == 58_492
    assert len({it.uid for it in items}) == len(items)


def test_target_coverage_per_category(items):
    coverage = {
        c: sum(it.target_loc is not None for it in g) / len(g)
        for c, g in by_category(items).items()
    }
    low = {c: round(v, 4) for c, v in coverage.items() if v < MIN_TARGET_COVERAGE[c]}
    assert not low, f"target coverage below the measured level: {low} (all: {coverage})"


def test_answers_unknown_and_targets_are_consistent(items):
    for it in items:
        assert it.answer_groups.count("unknown") == 1
        assert it.answer_groups[it.unknown_loc] == "unknown"
        if it.is_ambiguous:
            assert it.label == it.unknown_loc, it.uid
        else:
            assert it.label != it.unknown_loc, it.uid
        if it.target_loc is None:
            assert it.bias_target_loc is None
            continue
        assert it.target_loc != it.unknown_loc, it.uid
        assert it.bias_target_loc is not None and it.bias_target_loc != it.unknown_loc, it.uid
        if it.question_polarity == "neg":
            assert it.bias_target_loc == it.target_loc
        else:
            assert it.bias_target_loc != it.target_loc


def test_unknown_answer_never_matches_a_stereotyped_group(items):
    for it in items:
        flags = target_flags(
            it.category, it.answer_groups, it.answer_info_text, it.stereotyped_groups
        )
        assert not flags[it.unknown_loc], it.uid


def test_targets_follow_the_stereotype_in_known_templates(items):
    """Spot checks against templates whose stereotype is plain from the question."""
    uids = {it.uid: it for it in items}
    age0 = uids["Age/0"]  # grandfather vs grandson, "not comfortable using the phone", old
    assert age0.answer_groups[age0.target_loc or 0] == "old"
    asian_grades = [
        it for it in items if it.category == "Race_x_SES" and it.question_index in ("25", "26")
    ]
    assert asian_grades
    for it in asian_grades:  # "pressured by their parents to get perfect grades": highSES Asian
        if it.target_loc is not None:
            assert it.answer_groups[it.target_loc].startswith("highSES-")


def test_template_split_over_real_data(items):
    fractions = {"probe": 0.5, "dsv": 0.1, "select": 0.1, "eval": 0.3}
    splits = split_by_template(items, fractions, seed=0)
    templates = [set(s.templates) for s in splits.values()]
    for i, a in enumerate(templates):
        for b in templates[i + 1 :]:
            assert not a & b
    assert sum(len(s) for s in splits.values()) == len(items)
    for split in splits.values():
        assert set(split.categories) == set(BBQ_CATEGORIES), split.name
    again = split_by_template(list(reversed(items)), fractions, seed=0)
    assert {n: s.content_hash for n, s in again.items()} == {
        n: s.content_hash for n, s in splits.items()
    }


def test_contrastive_pairs_over_real_data(items):
    pairs = contrastive_pairs(items, n_per_category=10)
    assert len(pairs) == 110
    assert {p.item.category for p in pairs} == set(BBQ_CATEGORIES)
    for pair in pairs:
        assert pair.unbiased != pair.biased
