"""The bad-input catalogue: the command line on every class of bad input the project knows ends
with exit code 2 and ONE line on stderr that names the cause and the fix (never a traceback), and
leaves no output behind. Cases are cheap: each fails before a model is scored (most before one is
loaded), which is itself checked (a bad data directory must not cost a model load)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from fairlens.apps.cli import main

pytestmark = pytest.mark.integration

Case = Callable[[Path, Path], list[str]]  # (tmp folder, real data root) -> argv


def _bbq_copy(tmp: Path, data_root: Path, edit: Callable[[Path], None] | None = None) -> Path:
    """A data root whose bbq/ holds the real Age file (edited), and nothing else."""
    root = tmp / "data"
    (root / "bbq").mkdir(parents=True)
    shutil.copy(data_root / "bbq" / "Age.jsonl", root / "bbq" / "Age.jsonl")
    if edit is not None:
        edit(root / "bbq" / "Age.jsonl")
    return root


def _malformed(path: Path) -> None:
    lines = path.read_text().splitlines()
    lines[5] = lines[5][: len(lines[5]) // 2]  # a line cut in the middle
    path.write_text("\n".join(lines) + "\n")


def _missing_field(path: Path) -> None:
    lines = path.read_text().splitlines()
    record = json.loads(lines[3])
    record.pop("context")
    lines[3] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _run(*extra: str) -> Case:
    def argv(tmp: Path, data_root: Path) -> list[str]:
        return ["run", "--out-dir", str(tmp / "runs"), "--data-dir", str(data_root), *extra]

    return argv


def _run_on(edit: Callable[[Path], None] | None, *extra: str) -> Case:
    def argv(tmp: Path, data_root: Path) -> list[str]:
        root = _bbq_copy(tmp, data_root, edit)
        return ["run", "--out-dir", str(tmp / "runs"), "--data-dir", str(root),
                "--categories", "Age", *extra]  # fmt: skip

    return argv


def _garbage_gguf(tmp: Path, data_root: Path) -> list[str]:
    (tmp / "model.gguf").write_bytes(b"not a gguf file at all" * 10)
    return ["run", "--out-dir", str(tmp / "runs"), "--data-dir", str(data_root),
            "--model", str(tmp / "model.gguf")]  # fmt: skip


def _config_file(content: str) -> Case:
    def argv(tmp: Path, data_root: Path) -> list[str]:
        (tmp / "cfg.json").write_text(content)
        return ["run", "--out-dir", str(tmp / "runs"), "--data-dir", str(data_root),
                "--config", str(tmp / "cfg.json")]  # fmt: skip

    return argv


CASES: dict[str, tuple[Case, str]] = {
    # data
    "data dir missing": (
        lambda t, d: ["score", "--data-dir", str(t / "nowhere")],
        "nowhere",
    ),
    "data dir empty": (lambda t, d: ["score", "--data-dir", str(t)], "bbq"),
    "run on a missing data dir": (_run(), "")
    if False
    else (
        lambda t, d: ["run", "--out-dir", str(t / "runs"), "--data-dir", str(t / "nowhere")],
        "nowhere",
    ),
    "malformed BBQ line": (_run_on(_malformed), "Age.jsonl"),
    "BBQ record missing a field": (_run_on(_missing_field), "context"),
    "truncated BBQ file": (_run_on(_truncated), "Age.jsonl"),
    "unknown category": (_run("--categories", "Nope"), "Nope"),
    # models
    "unknown model spec": (_run("--model", "no-such-model-xyz"), "no-such-model-xyz"),
    "not a GGUF file": (_garbage_gguf, "model.gguf"),
    # configs
    "unknown config key": (_config_file('{"no_such_key": 1}'), "no_such_key"),
    "config not JSON": (_config_file("{broken"), "cfg.json"),
    "negative item count": (_run("--eval-per-category", "-3"), "eval"),
    "zero items": (_run_on(None, "--probe-per-category", "0"), "probe"),
    "layer out of range": (_run_on(None, "--layer", "999"), "999"),
    "threads zero": (_run("--threads", "0"), "threads"),
    "alpha not finite": (_run("--alphas", "inf"), "alpha"),
    "tau outside [0, 1]": (_run("--tau", "1.5"), "tau"),
    "unknown suite": (_run("--suites", "nope"), "nope"),
    "processes below one": (_run("--num-processes", "0"), "num-processes"),
}


# these need the model's shape (or are the model): they fail right after it loads, before any pass
AFTER_MODEL = {"unknown model spec", "not a GGUF file", "layer out of range"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_in_one_line(
    case: str, tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, needle = CASES[case]
    argv = build(tmp_path, data_root)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [
        line
        for line in err.splitlines()
        if line.strip() and not line.startswith("[fairlens]") and "it/s]" not in line  # bars
    ]
    assert code == 2, (case, err[-2000:])
    assert len(lines) == 1, (case, err[-2000:])
    assert "Traceback" not in err and "fairlens: error" in lines[0]
    assert "Fix:" in lines[0] or "see `" in lines[0], lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]
    if case not in AFTER_MODEL:  # data and config mistakes cost no model load
        assert "loading model" not in err, case
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.rglob("report.json"))
