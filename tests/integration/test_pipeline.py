"""`fairlens run` end to end on the embedded SmolLM2 with a tiny subset (report contents, disjointness)."""

from __future__ import annotations

import json

import pytest

from fairlens.apps.cli import main
from fairlens.fairsteer.estimator import FairSteer
from fairlens.steer.interventions import PANEL_METHODS

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_run_writes_report_with_the_panel(smollm2, bbq_items, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "The committee met twice in the spring to discuss how the printed records should be "
        "kept for later readers.\n\nRain fell all day over the harbour, and the ferries kept "
        "to their timetable while the market stalls stayed closed.\n"
    )
    code = main(
        [
            "run",
            "--name",
            "smoke",
            "--out-dir",
            str(tmp_path),
            "--categories",
            "Age",
            "Religion",
            "SES",
            "--probe-per-category",
            "40",
            "--eval-per-category",
            "4",
            "--threads",
            "1",
            "--crows-per-type",
            "2",
            "--open-per-category",
            "1",
            "--open-crows-per-type",
            "1",
            "--max-new-tokens",
            "6",
            "--text-file",
            str(corpus),
            "--search",
            "--search-directions",
            "dsv",
            "probe",
            "--search-layer-stride",
            "6",
            "--search-alphas",
            "0.2",
            "0.8",
        ]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0
    for title in ("### BBQ", "### CrowS-Pairs", "### Open-ended", "### Utility"):
        assert title in out
    report = json.loads((tmp_path / "smoke" / "report.json").read_text())
    assert (tmp_path / "smoke" / "report.md").read_text().strip() in out
    used = report["data"]["used"]
    assert used["eval"]["n"] == 12 and used["probe"]["n"] == 120
    panel = report["panel"]
    methods = [m for m in PANEL_METHODS if m not in panel["skipped_methods"]]
    assert set(methods) >= {"base", "prompt", "static", "fairsteer", "ablation", "calibrated"}
    for suite in ("bbq", "crows", "open_ended", "utility"):
        assert list(panel["results"][suite]) == methods
    # the baselines: a letter prior from the selection split; CrowS reads no letters (= base)
    assert panel["settings"]["calibration_n"]["bbq"] == used["select"]["n"]
    assert panel["results"]["bbq"]["calibrated"]["letter_prior"]["n"] == [used["select"]["n"]] * 3
    assert panel["results"]["crows"]["calibrated"]["identical_to"] == "base"
    if "cast" in methods:
        gate = panel["settings"]["condition_gate"]
        assert gate["hook"] == report["fairsteer"]["hook_name"]
        assert gate["selection"]["n"] <= used["select"]["n"]
    assert panel["n"]["crows"] == 18 and panel["n"]["text_neutral"] == 2
    assert report["data"]["crows_pairs"]["n"] == 18
    sweep = report["fairsteer"]["gates"]["bad"]
    assert len(sweep["scores"]) == 30 and 0 <= report["fairsteer"]["layer"] < 30
    selection = report["fairsteer"]["selection"]
    assert selection["selection"] == "search" and "base - 2 points" in selection["rule"]
    fs = FairSteer.load(tmp_path / "smoke" / "fairsteer", model=smollm2[0])
    eval_templates = set(report["data"]["eval_templates"])
    assert eval_templates and not eval_templates & set(fs.fitted_templates_)
    assert report["config"]["scoring"] == "letter" and report["model"]["d_model"] == 576
    search = report["search"]
    assert search["settings"]["n_select"] == 3 * 10 and search["settings"]["n_eval"] == 12
    fs_key = search["references"]["fairsteer"]["row"]["key"]  # eval results are keyed by variant
    assert {"base", "prompt", fs_key, search["chosen"]} <= set(search["eval"])
    assert (tmp_path / "smoke" / "search" / "search.md").is_file()
    assert "## Steering search" in out and "selection rule (declared before scoring)" in out
    # the panel's prefix-cached BBQ answers equal the search's eval-split answers
    panel_fs = panel["results"]["bbq"]["fairsteer"]["metrics"]["pooled"]
    assert panel_fs["acc_ambig"] == search["eval"][fs_key]["acc_ambig"]

    # a second run with the same settings resumes every stage and reports the same numbers
    assert main(["run", "--name", "smoke", "--out-dir", str(tmp_path), "--categories", "Age",
                 "Religion", "SES", "--probe-per-category", "40", "--eval-per-category", "4",
                 "--threads", "1", "--crows-per-type", "2", "--open-per-category", "1",
                 "--open-crows-per-type", "1", "--max-new-tokens", "6", "--text-file", str(corpus),
                 "--search", "--search-directions", "dsv", "probe", "--search-layer-stride", "6",
                 "--search-alphas", "0.2", "0.8"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "FairSteer: loaded from the run folder (resumed)" in err
    assert "search: loaded from the run folder (resumed)" in err
    if "cast" in methods:
        assert "condition gate: loaded from the run folder (resumed)" in err
    again = json.loads((tmp_path / "smoke" / "report.json").read_text())
    assert again["panel"]["results"] == report["panel"]["results"]


@pytest.mark.slow
def test_fast_path_evaluation_matches_tl_on_smollm2(smollm2, bbq_items):
    """The steerer fitted by the TL pipeline gives the same BBQ predictions on the plain HF model."""
    from fairlens.data import split_by_template, subsample
    from fairlens.evaluate.bbq import evaluate

    hooked, hf, tok = smollm2
    splits = split_by_template(
        [it for it in bbq_items if it.category in ("Age", "Religion", "SES")],
        {"probe": 0.6, "dsv": 0.2, "eval": 0.2},
        seed=0,
    )
    fs = FairSteer(layer=12, alpha=1.0, alpha_unit="absolute", scoring="letter").fit(
        hooked, subsample(splits["probe"].items, 40), list(splits["dsv"].items)
    )
    items = subsample(splits["eval"].items, 4)
    tl = evaluate(hooked, items, fs)
    fast = evaluate(hf, items, fs, tokenizer=tok)
    for a, b in zip(tl.results, fast.results, strict=True):
        assert a.metrics.to_dict() == b.metrics.to_dict() and a.gate_rate == b.gate_rate
