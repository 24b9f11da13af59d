"""The real UNQOVER word lists: the generator's sizes equal the README's (the authors'
configurations), and a seeded sample of every dataset is well formed."""

from __future__ import annotations

import pytest

from fairlens.data import resolve_data_dir
from fairlens.data.unqover import UNQOVER_DATASETS, count_unqover, generate_unqover
from fairlens.errors import DataError
from tests.integration.conftest import skip_or_fail

pytestmark = pytest.mark.integration

# the README's table counts each subject order as an instance; fairlens asks both within one
README_INSTANCES = {
    "gender": 2_744_000,
    "nationality": 2_308_464,
    "ethnicity": 147_000,
    "religion": 77_000,
}


def test_sizes_and_samples():
    try:
        root = resolve_data_dir(None)
    except DataError as exc:
        skip_or_fail(f"data not found: {exc.one_line()}")
    if not (root / "unqover").is_dir():
        skip_or_fail(f"no unqover/ in {root}")
    for dataset in UNQOVER_DATASETS:
        assert 2 * count_unqover(root, dataset) == README_INSTANCES[dataset]
        sample = generate_unqover(root, dataset, 20, seed=3)
        assert len({it.uid for it in sample}) == 20
        for it in sample:
            a, b = it.subjects
            assert a != b and a in it.context[0] and b in it.context[1]
            assert it.context[0].index(a) < it.context[0].index(b)  # x1 first
            assert "[" not in "".join(it.context + it.question)  # every placeholder filled
