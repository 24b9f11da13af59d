"""Template-disjoint splits and deterministic subsets."""

from __future__ import annotations

import random

import pytest

from fairlens.data import BBQItem, Split, content_hash, split_by_template, subsample
from fairlens.data.splits import _allocate
from fairlens.errors import ConfigError
from tests.conftest import rejects_ill_typed

FRACTIONS = {"probe": 0.5, "dsv": 0.1, "select": 0.1, "eval": 0.3}


def make_item(category: str, example_id: int, question_index: str, ambiguous: bool) -> BBQItem:
    return BBQItem(
        category=category,
        example_id=example_id,
        question_index=question_index,
        question_polarity="neg" if example_id % 4 < 2 else "nonneg",
        context_condition="ambig" if ambiguous else "disambig",
        context=f"Context {example_id}.",
        question="Who did it?",
        answers=("The old man", "The young man", "Unknown"),
        answer_groups=("old", "nonOld", "unknown"),
        answer_info_text=("old man", "young man", "Unknown"),
        stereotyped_groups=("old",),
        subcategory="None",
        label=2 if ambiguous else 0,
        unknown_loc=2,
        target_loc=0,
        bias_target_loc=0,
        source_file=f"{category}.jsonl",
        line_number=example_id + 1,
    )


def make_items(templates: dict[str, int], per_template: int = 4) -> list[BBQItem]:
    """``templates``: category -> number of templates; 4 items each (2 ambig, 2 disambig)."""
    items = []
    for category, n_templates in templates.items():
        example_id = 0
        for t in range(1, n_templates + 1):
            for j in range(per_template):
                items.append(make_item(category, example_id, str(t), ambiguous=j % 2 == 0))
                example_id += 1
    return items


ITEMS = make_items({"Age": 25, "Religion": 25, "SES": 10, "Sexual_orientation": 3})


def test_splits_are_template_disjoint_and_cover_everything():
    splits = split_by_template(ITEMS, FRACTIONS, seed=0)
    assert list(splits) == list(FRACTIONS)
    seen: set[tuple[str, str]] = set()
    for split in splits.values():
        assert isinstance(split, Split)
        templates = {it.template_id for it in split.items}
        assert templates == set(split.templates)
        assert not templates & seen
        seen |= templates
    assert seen == {it.template_id for it in ITEMS}
    assert sum(len(s) for s in splits.values()) == len(ITEMS)


def test_stratified_by_category_with_fractions_over_templates():
    splits = split_by_template(ITEMS, FRACTIONS, seed=3)
    age = {name: sum(t[0] == "Age" for t in s.templates) for name, s in splits.items()}
    # 25 templates * (0.5, 0.1, 0.1, 0.3) = 12.5, 2.5, 2.5, 7.5 -> largest remainder
    assert sum(age.values()) == 25
    assert all(abs(age[name] - 25 * f) <= 1 for name, f in FRACTIONS.items())
    for name in FRACTIONS:  # every category with >= 4 templates is in every split
        assert {"Age", "Religion", "SES"} <= set(splits[name].categories)
    # 3 templates cannot reach 4 splits: proportional (1.5, .3, .3, .9 -> 2, 0, 0, 1), none lost.
    so = {
        name: sum(t[0] == "Sexual_orientation" for t in s.templates) for name, s in splits.items()
    }
    assert so == {"probe": 2, "dsv": 0, "select": 0, "eval": 1}


def test_reproducible_regardless_of_input_order_and_seed_sensitive():
    shuffled = list(ITEMS)
    random.Random(7).shuffle(shuffled)
    a = split_by_template(ITEMS, FRACTIONS, seed=1)
    b = split_by_template(shuffled, FRACTIONS, seed=1)
    assert {n: s.content_hash for n, s in a.items()} == {n: s.content_hash for n, s in b.items()}
    assert a == b  # same items, same order inside each split
    c = split_by_template(ITEMS, FRACTIONS, seed=2)
    assert a["probe"].templates != c["probe"].templates


def test_content_hash_is_short_sha256_of_sorted_uids():
    split = split_by_template(ITEMS, {"all": 1.0})["all"]
    assert len(split.content_hash) == 16
    int(split.content_hash, 16)
    assert split.content_hash == content_hash(reversed(ITEMS))
    assert content_hash(ITEMS[:-1]) != split.content_hash
    assert split.items == tuple(sorted(ITEMS, key=lambda it: (it.category, it.example_id)))
    summary = split.summary()
    assert summary["n_items"] == len(ITEMS) and summary["content_hash"] == split.content_hash


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({}, "fractions is empty"),
        ({"a": 0.5, "b": 0.4}, "must sum to 1, got 0.9"),
        ({"a": 1.2, "b": -0.2}, "must be positive, got -0.2"),
        ({"a": 1.0, "b": 0.0}, "must be positive, got 0.0"),
        ({"a": float("nan"), "b": 1.0}, "must be positive"),
        ({"": 1.0}, "non-empty strings"),
    ],
)
def test_fraction_validation(fractions, message):
    with pytest.raises(ConfigError, match=message):
        split_by_template(ITEMS, fractions)


@pytest.mark.ill_typed
def test_fraction_of_the_wrong_type_is_refused():
    with rejects_ill_typed(ConfigError, "must be a number"):
        split_by_template(ITEMS, {"a": "0.5", "b": 0.5})  # type: ignore[dict-item]


def test_fractions_within_tolerance_are_accepted():
    splits = split_by_template(ITEMS, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3 + 5e-7})
    assert sum(len(s) for s in splits.values()) == len(ITEMS)


def test_duplicate_items_are_rejected():
    with pytest.raises(ConfigError, match="appears twice"):
        split_by_template([*ITEMS, ITEMS[0]], FRACTIONS)


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (25, [0.5, 0.1, 0.1, 0.3], [13, 3, 2, 7]),  # ties at .5 go to the earlier split
        (10, [0.5, 0.1, 0.1, 0.3], [5, 1, 1, 3]),
        (4, [0.7, 0.1, 0.1, 0.1], [1, 1, 1, 1]),
        (5, [0.9, 0.05, 0.05], [3, 1, 1]),
        (2, [0.5, 0.25, 0.25], [1, 1, 0]),
    ],
)
def test_allocate(n, fractions, expected):
    assert _allocate(n, fractions) == expected


def test_subsample_balanced_deterministic_and_order_independent():
    shuffled = list(ITEMS)
    random.Random(0).shuffle(shuffled)
    picked = subsample(ITEMS, 7, seed=5)
    assert picked == subsample(shuffled, 7, seed=5)
    assert picked != subsample(ITEMS, 7, seed=6)
    for category in ("Age", "Religion", "SES", "Sexual_orientation"):
        mine = [it for it in picked if it.category == category]
        assert len(mine) == 7
        assert sum(it.is_ambiguous for it in mine) == 4  # the odd one is ambiguous
    assert picked == sorted(picked, key=lambda it: (it.category, it.example_id))


def test_subsample_tops_up_and_keeps_small_categories_whole():
    only_ambig = [it for it in ITEMS if it.is_ambiguous and it.category == "SES"]
    few = [it for it in ITEMS if it.category == "Sexual_orientation"]  # 12 items
    picked = subsample(only_ambig + few, 6)
    assert sum(it.category == "SES" for it in picked) == 6  # all ambiguous: topped up
    assert len(subsample(few, 50)) == 12
    unbalanced = subsample(ITEMS, 5, balance_context=False)
    assert len(unbalanced) == 20


@pytest.mark.parametrize("n", [0, -1, True])
def test_subsample_validates_n(n):
    with pytest.raises(ConfigError, match="n_per_category"):
        subsample(ITEMS, n)


@pytest.mark.ill_typed
def test_subsample_refuses_a_fractional_n():
    with rejects_ill_typed(ConfigError, "n_per_category"):
        subsample(ITEMS, 2.5)  # type: ignore[arg-type]
