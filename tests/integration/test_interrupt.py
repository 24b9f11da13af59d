"""Ctrl-C in the middle of ``fairlens run``, then the same command again: the interrupted run ends
with exit code 130 and one line saying how to resume (no traceback), leaves no half-written file
in the run folder, and the rerun resumes the finished stages and ends with the same report as a run
that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fairlens.apps.cli import main
from fairlens.testing import without_keys

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _args(model: Path, out: Path, data_root: Path) -> list[str]:
    return [
        "run", "--name", "ci", "--model", str(model), "--out-dir", str(out),
        "--data-dir", str(data_root), "--categories", "Age", "SES",
        "--probe-per-category", "40", "--select-per-category", "6", "--eval-per-category", "6",
        "--alphas", "0.4", "0.8", "--suites", "bbq", "crows", "--crows-per-type", "1",
        "--methods", "base", "static", "fairsteer", "--threads", "1", "--batch-size", "4",
    ]  # fmt: skip


def _interrupt_when(args: list[str], marker: str) -> tuple[int, str]:
    """Start ``python -m fairlens <args>``, send SIGINT once ``marker`` appears on its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    with subprocess.Popen(
        [sys.executable, "-m", "fairlens", *args],
        env=env | {"OMP_NUM_THREADS": "1"}, cwd=ROOT, stderr=subprocess.PIPE, text=True,
    ) as proc:  # fmt: skip
        assert proc.stderr is not None
        seen: list[str] = []
        deadline = time.monotonic() + 600
        for line in proc.stderr:
            seen.append(line)
            if marker in line:
                proc.send_signal(signal.SIGINT)
                break
            assert time.monotonic() < deadline, "".join(seen[-20:])
        else:
            proc.wait()
            pytest.fail(f"{marker!r} never printed:\n{''.join(seen[-20:])}")
        seen.append(proc.stderr.read())
        return proc.wait(timeout=120), "".join(seen)


@pytest.mark.slow
def test_ctrl_c_mid_run_then_rerun_resumes(
    tiny_model_dir: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args(tiny_model_dir, tmp_path / "runs", data_root)
    code, err = _interrupt_when(args, "panel: ")  # the fit is saved; the panel has begun
    assert code == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("fairlens: interrupted.") and "rerun the same command" in last

    folder = tmp_path / "runs" / "ci"
    leftovers = [p.name for p in folder.rglob("*") if ".tmp" in p.name]
    assert leftovers == []  # every write is atomic: no temporary file left behind
    for path in folder.rglob("*.json"):
        json.loads(path.read_text())  # none is cut in the middle
    assert not (folder / "report.json").exists()

    assert main(args) == 0
    resumed = capsys.readouterr().err
    assert "FairSteer: loaded from the run folder (resumed)" in resumed
    assert "fit data: loaded from the run folder (resumed)" in resumed

    assert main([*args[:2], "fresh", *args[3:]]) == 0  # the same run, never interrupted
    capsys.readouterr()
    got, want = (
        json.loads((tmp_path / "runs" / name / "report.json").read_text())
        for name in ("ci", "fresh")
    )
    got["config"].pop("name"), want["config"].pop("name")
    assert without_keys(got) == without_keys(want)
