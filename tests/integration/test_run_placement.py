"""``fairlens run --dtype`` and ``--device-map`` on a tiny random model (CPU): bfloat16 runs end to
end and is recorded as a fit setting (a float32 rerun of the folder is refused, naming it);
``--device-map auto`` (accelerate's placement; everything on the CPU here) gives the report of the
unplaced run. On a GPU machine the same flag puts the model on the GPUs: not run here (no GPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fairlens.apps.cli import main
from fairlens.testing import without_keys

pytestmark = pytest.mark.integration


def _args(model: Path, out: Path, data_root: Path, *extra: str) -> list[str]:
    return [
        "run", "--name", "p", "--model", str(model), "--out-dir", str(out),
        "--data-dir", str(data_root), "--categories", "Age", "SES",
        "--probe-per-category", "40", "--select-per-category", "6", "--eval-per-category", "6",
        "--alphas", "0.4", "0.8", "--margin", "1", "--suites", "bbq", "crows",
        "--crows-per-type", "1", "--methods", "base", "static", "fairsteer",
        "--threads", "1", "--batch-size", "4", *extra,
    ]  # fmt: skip


def _report(out: Path) -> dict:
    report = json.loads((out / "p" / "report.json").read_text())
    report["config"].pop("device_map")
    return without_keys(report)


def test_device_map_auto_gives_the_unplaced_report(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path
) -> None:
    assert main(_args(tiny_model_dir, tmp_path / "plain", data_root)) == 0
    assert main(_args(tiny_model_dir, tmp_path / "auto", data_root, "--device-map", "auto")) == 0
    placed = json.loads((tmp_path / "auto" / "p" / "report.json").read_text())
    assert placed["config"]["device_map"] == "auto"
    assert _report(tmp_path / "auto") == _report(tmp_path / "plain")


def test_bfloat16_run_is_a_fit_setting(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(tiny_model_dir, tmp_path, data_root, "--dtype", "bfloat16")
    assert main(args) == 0
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["config"]["dtype"] == "bfloat16" and report["model"]["dtype"] == "bfloat16"
    pooled = report["panel"]["results"]["bbq"]["fairsteer"]["metrics"]["pooled"]
    assert 0.0 <= pooled["acc_ambig"] <= 1.0
    capsys.readouterr()
    assert main(args[:-2]) == 2  # the same folder in float32: other fit settings
    err = capsys.readouterr().err
    assert "dtype: 'bfloat16' -> 'float32'" in err and "Traceback" not in err
