"""The GPU benchmark's CPU smoke run (benchmarks/bench_gpu.py --device cpu --quick) and gpu.sh's
modes that need no GPU (--help, --check). The CUDA run itself is not tested here: no GPU."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "bench_gpu.py"
GPU_SH = ROOT / "benchmarks" / "gpu.sh"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("bench") / "gpu-cpu.json"
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--quick", "--threads", "1"]
    proc = subprocess.run(
        [*cmd, "--out", str(out)], capture_output=True, text=True, timeout=180, env=ENV
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_quick_run_writes_every_section(quick_run) -> None:
    proc, data = quick_run
    for key in ("machine", "model", "extraction", "generation", "compile", "bandwidth"):
        assert key in data, key
    for key in ("search", "probes", "targets", "config", "python", "fairlens"):
        assert key in data, key
    assert data["errors"] == {}
    assert data["machine"]["device"] == "cpu"
    assert "| measured (same run, medians) |" in proc.stdout


def test_quick_run_numbers_are_finite_and_positive(quick_run) -> None:
    _, data = quick_run
    for name, row in data["extraction"]["results"].items():
        assert _positive(row["tokens_per_s"]), name
        assert _positive(row["ratio_vs_plain_hf"]), name
    assert set(data["extraction"]["results"]) == {
        "plain_hf_forward",
        "fairlens_lean_hf_all_layers",
        "fairlens_tl_all_layers",
    }
    assert data["extraction"]["tl_vs_lean_rel_diff"] < 1e-4  # same numbers from both paths (fp32)
    for batch in ("batch1", "batch8"):
        gen = data["generation"][batch]
        for name in ("plain_hf", "fast_path_fairsteer", "fast_path_static"):
            assert _positive(gen["results"][name]["tokens_per_s"]), (batch, name)
        assert math.isfinite(gen["gate_overhead"])
        assert 0.0 <= gen["gate_fire_rate"] <= 1.0
    for key in ("speedup", "prefix_pass_s", "variants_s", "rescore_s_extrapolated"):
        assert _positive(data["search"][key]), key
    assert data["search"]["same_prediction_fraction"] == 1.0  # float32: the cache is exact
    for key in ("speedup", "batched_s", "sklearn_s_extrapolated"):
        assert _positive(data["probes"][key]), key
    assert _positive(data["model"]["weight_bytes"])
    for name, row in data["compile"]["variants"].items():
        assert _positive(row["tokens_per_s"]), name
    names = {t["name"] for t in data["targets"]}
    assert any(n.startswith("gate overhead b1") for n in names)
    assert any(n.startswith("batch-1 steered generation / bandwidth") for n in names)


def test_quick_run_generation_shapes_and_steering(quick_run) -> None:
    _, data = quick_run
    gen = data["generation"]
    length = gen["prompt_tokens"] + gen["new_tokens"]
    for batch in (1, 8):
        shapes = gen[f"batch{batch}"]["shapes"]
        variants = ("plain_hf", "fast_path_fairsteer", "fast_path_static")
        assert shapes == {name: [batch, length] for name in variants}
    assert gen["batch8"]["steering_changed_output"]
    comp = data["compile"]
    assert not comp["compiled"]  # CPU: the static-cache path runs eagerly
    for row in comp["variants"].values():
        assert row["shape"] == [1, length]
    assert comp["steering_changed_output"]
    # the dynamic gate that always fires steers exactly like eager static steering
    assert comp["fairsteer_static_same_tokens_as_eager_fast_path_static"] == 1.0
    assert comp["minimal_gate_static_same_tokens_as_eager_fast_path_static"] == 1.0
    assert comp["plain_static_same_tokens_as_eager_plain_hf"] == 1.0
    assert data["extraction"]["lean_hf_acts_shape"] == [
        data["extraction"]["rows"],
        data["model"]["n_layers"],
        data["model"]["d_model"],
    ]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_sh_help_and_check_without_gpu(tmp_path: Path) -> None:
    help_run = subprocess.run(
        ["bash", str(GPU_SH), "--help"], capture_output=True, text=True, timeout=30
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "--build-wheels" in help_run.stdout
    assert 'carry=["benchmarks/wheels"]' in help_run.stdout
    check = subprocess.run(
        ["bash", str(GPU_SH), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "FAIRLENS_WHEELS": str(tmp_path)},
    )
    assert check.returncode == 2
    assert "missing wheels" in check.stderr
    assert "fairlens" in check.stderr and "transformer-lens" in check.stderr
