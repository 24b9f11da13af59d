"""Data-parallel runs (fairlens.distributed): two processes hold what one process computes.

The equality test launches ``tests/unit/dist_worker.py`` once alone and once under
``torch.distributed.run`` with 2 CPU processes (gloo) and compares every process's results with the
one-process run, bit for bit: BBQ letter and likelihood scores (plain and steered, with the gate's
counts summed over processes), activations in memory (also with fewer batches than processes) and
streamed to disk, greedy generation with the gate's per-token decisions, and text log-probs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fairlens.distributed import World, launched, my_share, world
from fairlens.errors import ArtifactError, ConfigError

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("dist_worker.py")


def _run(out: Path, mode: str = "all", processes: int = 1) -> subprocess.CompletedProcess[str]:
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return subprocess.run(
        [*launcher, str(WORKER), str(out), mode],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def _check(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_processes_equal_one(tmp_path: Path) -> None:
    _check(_run(tmp_path / "one"))
    _check(_run(tmp_path / "two", processes=2))
    ref = load_file(tmp_path / "one" / "rank0.safetensors")
    ref_facts = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert ref_facts["steered_gate"][1] == 11  # the gate probed each item's last position once
    for rank in (0, 1):
        got = load_file(tmp_path / "two" / f"rank{rank}.safetensors")
        assert got.keys() == ref.keys()
        for key, value in ref.items():
            assert torch.equal(got[key], value), f"rank {rank}: {key} differs"
        assert json.loads((tmp_path / "two" / f"rank{rank}.json").read_text()) == ref_facts
    assert not (tmp_path / "two" / "store" / "shards").exists()  # merged, then removed


def test_crashed_process_keeps_shards_and_rerun_resumes(tmp_path: Path) -> None:
    _check(_run(tmp_path / "one", "store"))
    crashed = _run(tmp_path / "two", "crash", processes=2)
    assert crashed.returncode != 0 and "injected crash" in crashed.stdout + crashed.stderr
    shards = tmp_path / "two" / "store" / "shards"
    done = {p.name: json.loads((p / "progress.json").read_text())["done"] for p in shards.iterdir()}
    assert done["rank1-of-2"] == [1]  # its first chunk (chunk 1) is kept; chunk 3 was lost
    _check(_run(tmp_path / "two", "store", processes=2))
    for rank in (0, 1):
        got = load_file(tmp_path / "two" / f"store-rank{rank}.safetensors")["stored"]
        ref = load_file(tmp_path / "one" / "store-rank0.safetensors")["stored"]
        assert torch.equal(got, ref)


def test_shards_of_another_process_count_are_refused(tiny, tmp_path: Path) -> None:
    from fairlens.activations.streaming import extract_to_disk

    _, hf, _ = tiny
    (tmp_path / "store" / "shards" / "rank0-of-2").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="rank0-of-2"):
        extract_to_disk(hf, [[1, 2, 3]], tmp_path / "store", layers=[0], progress=False)


def test_another_model_in_the_store_is_named(tiny, tmp_path: Path) -> None:
    from fairlens.activations.streaming import extract_to_disk
    from fairlens.testing import tiny_hooked

    hooked, _, _ = tiny
    other, _, _ = tiny_hooked(seed=1)
    extract_to_disk(hooked, [[1, 2, 3]] * 3, tmp_path / "s", layers=[0], progress=False)
    with pytest.raises(ArtifactError, match="model differ: model='tiny-llama-seed0@"):
        extract_to_disk(other, [[1, 2, 3]] * 3, tmp_path / "s", layers=[0], progress=False)


def test_world_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert world() == World(0, 1) and not world().active
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert launched() == World(2, 3) and not launched().is_main
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ConfigError, match="RANK=3 does not fit WORLD_SIZE=3"):
        launched()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="not an integer"):
        launched()


def test_one_process_runs_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert my_share([[0, 1], [2], [3]]) == [[0, 1], [2], [3]]
