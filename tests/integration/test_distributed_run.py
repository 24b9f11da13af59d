"""``fairlens run --num-processes 2`` on real BBQ with a tiny random model: the report and every
saved stage equal a one-process run's, a rerun resumes every stage, and bad layouts are refused
before any process starts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fairlens.apps.cli import main
from fairlens.testing import without_keys

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _args(model: Path, out: Path, data_root: Path, *, search: bool = True) -> list[str]:
    searching = ["--search", "--search-directions", "dsv", "probe", "--search-alphas", "0.4", "1.0"]
    return [
        "run", *(searching if search else []), "--name", "dp", "--model", str(model), "--out-dir", str(out),
        "--data-dir", str(data_root), "--categories", "Age", "SES",
        "--probe-per-category", "40", "--select-per-category", "6", "--eval-per-category", "6",
        "--alphas", "0.4", "0.8", "--suites", "bbq", "crows", "open_ended",
        "--crows-per-type", "1", "--open-per-category", "1", "--open-crows-per-type", "1",
        "--max-new-tokens", "4", "--methods", "base", "static", "fairsteer", "cast",
        "--threads", "1", "--batch-size", "4",
    ]  # fmt: skip


def _two(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    return subprocess.run(
        [sys.executable, "-m", "fairlens", *args, "--num-processes", "2"],
        env=env | {"OMP_NUM_THREADS": "1"}, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.mark.slow
def test_two_processes_equal_one(tiny_model_dir: Path, data_root: Path, tmp_path: Path) -> None:
    assert main(_args(tiny_model_dir, tmp_path / "one", data_root)) == 0
    first = _two(_args(tiny_model_dir, tmp_path / "two", data_root))
    assert first.returncode == 0, first.stderr[-4000:]
    assert first.stderr.count("[fairlens] loading model") == 1  # one process speaks
    one, two = (tmp_path / d / "dp" for d in ("one", "two"))
    report = json.loads((two / "report.json").read_text())
    assert report["processes"] == 2
    assert without_keys(report) == without_keys(json.loads((one / "report.json").read_text()))
    panel = sorted(p.name for p in (one / "panel").glob("*.json"))
    assert panel == sorted(p.name for p in (two / "panel").glob("*.json")) and len(panel) > 10
    for name in panel:
        a, b = (json.loads((d / "panel" / name).read_text()) for d in (one, two))
        assert without_keys(a) == without_keys(b), name
    edits = [(d / "search" / "grid" / "edits.jsonl").read_text() for d in (one, two)]
    assert edits[0] == edits[1] and edits[0]  # the search's saved predictions, in order
    again = _two(_args(tiny_model_dir, tmp_path / "two", data_root))
    assert again.returncode == 0, again.stderr[-4000:]
    for stage in ("fit data", "FairSteer", "search"):
        assert f"{stage}: loaded from the run folder (resumed)" in again.stderr
    assert without_keys(json.loads((two / "report.json").read_text())) == without_keys(report)


def test_more_processes_than_items_refused_before_starting(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*_args(tiny_model_dir, tmp_path, data_root), "--num-processes", "50"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "50 processes for the 12 items of the select split" in err and "process 0" not in err
    assert not (tmp_path / "dp").exists()  # refused before any process or folder


def test_num_processes_inside_a_launcher_refused(
    tiny_model_dir: Path,
    data_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main([*_args(tiny_model_dir, tmp_path, data_root), "--num-processes", "2"]) == 2
    assert "drop --num-processes under accelerate launch" in capsys.readouterr().err


def test_num_processes_below_one_refused(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*_args(tiny_model_dir, tmp_path, data_root), "--num-processes", "0"]) == 2
    assert "--num-processes must be >= 1" in capsys.readouterr().err


def _other_models_fairsteer(folder: Path, data_root: Path) -> Path:
    """The fairsteer/ artifact of the same run on a tiny model with other weights."""
    from fairlens.testing import tiny_llama, tiny_tokenizer

    model = folder / "other-model"
    tiny_llama(seed=1).save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    other = [*_args(model, folder / "runs", data_root, search=False), "--margin", "1"]
    assert main(other) == 0  # a random model: any variant may do (the artifact is what counts)
    return folder / "runs" / "dp" / "fairsteer"


def _edit_meta(fs: Path) -> None:
    meta = json.loads((fs / "meta.json").read_text())
    meta["layer"] = 999
    (fs / "meta.json").write_text(json.dumps(meta))


def test_damaged_or_foreign_fairsteer_in_the_run_folder_is_refitted(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A saved FairSteer that is cut, edited, or another model's is never used: the rerun says
    why in one line, fits it again and ends with the report of the undamaged run."""
    args = _args(tiny_model_dir, tmp_path, data_root, search=False)
    assert main(args) == 0
    report = without_keys(json.loads((tmp_path / "dp" / "report.json").read_text()))
    fs = tmp_path / "dp" / "fairsteer"
    foreign = _other_models_fairsteer(tmp_path / "other", data_root)
    damages = {
        "cut": lambda: (fs / "tensors.safetensors").write_bytes(
            (fs / "tensors.safetensors").read_bytes()[:100]
        ),
        "edited": lambda: _edit_meta(fs),
        "another model's": lambda: (shutil.rmtree(fs), shutil.copytree(foreign, fs)),
    }
    for name, damage in damages.items():
        damage()
        capsys.readouterr()
        assert main(args) == 0, name
        said = [ln for ln in capsys.readouterr().err.splitlines() if "not usable" in ln]
        assert len(said) == 1 and "FairSteer in the run folder" in said[0], (name, said)
        if name == "another model's":
            assert "other-model" in said[0], said[0]  # names the model it belongs to
        got = without_keys(json.loads((tmp_path / "dp" / "report.json").read_text()))
        assert got == report, name
