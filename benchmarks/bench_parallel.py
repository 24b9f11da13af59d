"""Data-parallel scaling: ``fairlens run`` in 1 process vs ``--num-processes N`` on this machine,
the same command otherwise (embedded SmolLM2-135M, real BBQ; 1 torch thread per process), with the
reports compared (they must be equal but for timings). Runs alternate (1, N, 1, N, ...) so that
load drifts on a shared machine hit both; medians of ``--repeats``.

Run: .venv/bin/python benchmarks/bench_parallel.py [--processes 2] [--repeats 1] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import write

from fairlens.testing import without_keys


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="2 categories, small splits")
    args = p.parse_args()
    cats = ["Age", "SES"] if args.quick else ["Age", "SES", "Religion", "Nationality"]
    per = "10" if args.quick else "20"
    base = [
        "run", "--name", "bench", "--restart", "--categories", *cats,
        "--probe-per-category", "40", "--select-per-category", per, "--eval-per-category", per,
        "--alphas", "0.4", "0.8", "--suites", "bbq", "crows", "open_ended", "--crows-per-type", "2",
        "--open-per-category", "1", "--open-crows-per-type", "1", "--max-new-tokens", "8",
        "--methods", "base", "static", "fairsteer", "--threads", "1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    walls: dict[int, list[float]] = {1: [], args.processes: []}
    reports: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for n in (1, args.processes):
                out = Path(tmp) / f"p{n}"
                cmd = [sys.executable, "-m", "fairlens", *base, "--out-dir", str(out)]
                cmd += ["--num-processes", str(n)] if n > 1 else []
                start = time.perf_counter()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                walls[n].append(time.perf_counter() - start)
                if proc.returncode != 0:
                    sys.exit(f"run with {n} process(es) failed:\n{proc.stderr[-3000:]}")
                reports[n] = json.loads((out / "bench" / "report.json").read_text())
    equal = without_keys(reports[1]) == without_keys(reports[args.processes])
    med = {n: statistics.median(w) for n, w in walls.items()}
    stages = {n: reports[n]["timings_s"] for n in reports}
    print(f"fairlens run ({', '.join(cats)}), 1 vs {args.processes} processes, 1 thread each:")
    for n in walls:
        print(f"  {n} process(es): {med[n]:7.1f} s wall   stages: {stages[n]}")
    print(f"  speed-up {med[1] / med[args.processes]:.2f}x; reports equal: {equal}")
    result = {
        "processes": args.processes,
        "wall_s": med,
        "stages_s": stages,
        "speedup": med[1] / med[args.processes],
        "reports_equal": equal,
    }
    print(f"results: {write(f'parallel-{args.processes}', 'cpu', result)}")


if __name__ == "__main__":
    main()
