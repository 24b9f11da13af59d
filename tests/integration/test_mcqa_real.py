"""The real ARC, OpenBookQA and MMLU files: the loaders' counts equal the releases', and the
multiple-choice suites score SmolLM2 through the panel."""

from __future__ import annotations

import pytest

from fairlens.data.mcqa import (
    ARC_OFFICIAL_COUNTS,
    OPENBOOKQA_OFFICIAL_COUNTS,
    load_arc,
    load_openbookqa,
)
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.suite_mcqa import load_mc_inputs
from fairlens.evaluate.suites import PanelConfig
from tests.integration.conftest import need_folder

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def data_dir(data_root):
    return need_folder(data_root, "arc")


def test_release_counts(data_dir):
    for (subset, split), n in ARC_OFFICIAL_COUNTS.items():
        items = load_arc(data_dir, subset, split)  # type: ignore[arg-type]
        assert len(items) == n
        assert {len(it.choices) for it in items} <= {3, 4, 5}
    for split, n in OPENBOOKQA_OFFICIAL_COUNTS.items():
        assert len(load_openbookqa(data_dir, split)) == n  # type: ignore[arg-type]
    challenge = load_arc(data_dir, "challenge", "test")
    assert sum(len(it.choices) == 5 for it in challenge) == 3  # the README's table
    mc, shots = load_mc_inputs(data_dir, ("mmlu", "arc_challenge"), mmlu_per_subject=1, questions=7)
    assert len(mc["mmlu"]) == 57 and len(shots) == 285 and len(mc["arc_challenge"]) == 7


def test_smollm2_answers_every_suite(data_dir, smollm2):
    _, hf, tok = smollm2
    suites = ("mmlu", "arc_easy", "arc_challenge", "openbookqa")
    mc, shots = load_mc_inputs(data_dir, suites, mmlu_per_subject=None, questions=4, seed=1)
    mc["mmlu"] = [it for it in mc["mmlu"] if it.subject == "astronomy"][:4]
    report = evaluate_panel(
        hf,
        tok,
        None,
        mc=mc,
        mc_shots=shots,
        config=PanelConfig(methods=("base", "prompt"), suites=suites),
    )
    for name in suites:
        assert report.n[name] == 4
        prompt = report.results[name]["prompt"]
        assert prompt["vs_base"]["n"] == 4 and prompt["side_effect_rate"] is not None
