"""The paper preset: its settings, its BAD data (zero-shot + 8-shot + MMLU anchors), MMLU loading."""

from __future__ import annotations

import numpy as np
import pytest

from fairlens.apps.run_config import PRESETS, RunConfig
from fairlens.data import few_shot_examples, split_by_template
from fairlens.data.mmlu import load_mmlu, mmlu_anchor_prompts
from fairlens.detect.gates import gate_labels
from fairlens.errors import ConfigError, DataError
from fairlens.steer.fit_data import FitData
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items


def test_preset_settings_and_overrides():
    cfg = RunConfig.from_preset("paper")
    assert cfg.preset == "paper" and cfg.fit.selection == "bbq" and cfg.fit.alpha == 1.0
    assert cfg.fit.alpha_unit == "absolute" and cfg.fit.tau == 0.5 and cfg.data.paper_few_shot
    assert cfg.data.probe_per_category is None
    assert cfg.data.mmlu_anchors == PRESETS["paper"]["mmlu_anchors"]
    assert RunConfig.from_preset("paper", limit=3, mmlu_anchors=10).data.limit == 3
    assert cfg.fit.direction == "dsv" and cfg.flat()["alpha_unit"] == "absolute"
    with pytest.raises(ConfigError, match="unknown preset"):
        RunConfig.from_preset("fast")


def test_bad_data_adds_eight_shot_rows_and_anchors():
    _, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(items, {"probe": 0.6, "dsv": 0.2, "shots": 0.2}, seed=0)
    shots = few_shot_examples(list(splits["shots"].items), 8, seed=0)
    probe, dsv = list(splits["probe"].items), list(splits["dsv"].items)
    anchors = [("What is 2 + 2?\nA. 3\nB. 4\nC. 5\nAnswer:", 1)] * 12
    plain = FitData(hf, probe, dsv, tokenizer=tok, n_dsv_per_category=2)
    paper = FitData(
        hf, probe, dsv, tokenizer=tok, n_dsv_per_category=2, few_shot_too=shots, extra_bad=anchors
    )
    x0, _y0, _ = plain._bad_rows()
    x1, y1, groups = paper._bad_rows()
    acts_fs, preds_fs = paper._few_shot_pass()
    n_fs = len(gate_labels("bad", probe, preds_fs)[0])
    assert x1.shape[0] == x0.shape[0] + n_fs + len(anchors)
    assert y1[-len(anchors) :].tolist() == [1] * len(anchors)
    assert groups[-1][0] == "anchor"
    assert acts_fs.shape == plain.acts.acts.shape and not np.array_equal(
        acts_fs.numpy(), plain.acts.acts.numpy()
    )
    # the contrastive pairs are built in both formats (2 pairs per category, x2 formats, x2 rows)
    X, _y, letters = paper.recipe("pairs")
    assert X.shape[0] == 2 * plain.recipe("pairs")[0].shape[0] and set(letters) <= {"A", "B", "C"}
    with pytest.raises(ConfigError, match="zero-shot"):
        FitData(
            hf, probe, dsv, tokenizer=tok, prompt_format="few_shot", shots=shots, few_shot_too=shots
        )


def test_mmlu_loader_validates_rows(tmp_path):
    root = tmp_path / "mmlu" / "val"
    root.mkdir(parents=True)
    (root / "anatomy_val.csv").write_text(
        '"Which bone?\nPick one.",Femur,None,Ulna,Tibia,A\r\nWhat is 1+1?,1,2,3,4,B\n',
        encoding="utf-8",
    )
    items = load_mmlu(tmp_path, "val", subjects=["anatomy"])
    assert [it.answer for it in items] == [0, 1]
    assert items[0].question == "Which bone?\nPick one." and items[0].choices[1] == "None"
    prompts = mmlu_anchor_prompts(items, 2, seed=0)
    assert all(
        p.endswith("\nAnswer:") and p.count("\nA. ") == 1 and "\nD. " not in p for p in prompts
    )
    (root / "anatomy_val.csv").write_text("What?,1,2,3,4,E\n")
    with pytest.raises(DataError, match=r"anatomy_val\.csv row 1: field 'answer'"):
        load_mmlu(tmp_path, "val", subjects=["anatomy"])
    (root / "anatomy_val.csv").write_text("What?,1,2,3\n")
    with pytest.raises(DataError, match="row 1: expected 6 fields"):
        load_mmlu(tmp_path, "val", subjects=["anatomy"])
    with pytest.raises(DataError, match="the release has 1531"):
        (root / "anatomy_val.csv").write_text("What?,1,2,3,4,A\n")
        load_mmlu(tmp_path, "val")
