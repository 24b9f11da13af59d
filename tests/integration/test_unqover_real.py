"""The real UNQOVER word lists: the generator's sizes equal the README's (the authors'
configurations), and a seeded sample of every dataset is well formed."""

from __future__ import annotations

import pytest

from fairlens.data.unqover import UNQOVER_DATASETS, count_unqover, generate_unqover
from tests.integration.conftest import need_folder

pytestmark = pytest.mark.integration

# the README's table counts each subject order as an instance; fairlens asks both within one
README_INSTANCES = {
    "gender": 2_744_000,
    "nationality": 2_308_464,
    "ethnicity": 147_000,
    "religion": 77_000,
}


def test_sizes_and_samples(data_root):
    root = need_folder(data_root, "unqover")
    for dataset in UNQOVER_DATASETS:
        assert 2 * count_unqover(root, dataset) == README_INSTANCES[dataset]
        sample = generate_unqover(root, dataset, 20, seed=3)
        assert len({it.uid for it in sample}) == 20
        for it in sample:
            a, b = it.subjects
            assert a != b and a in it.context[0] and b in it.context[1]
            assert it.context[0].index(a) < it.context[0].index(b)  # x1 first
            assert "[" not in "".join(it.context + it.question)  # every placeholder filled
