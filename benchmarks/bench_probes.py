"""Probe sweep time: fairlens' batched torch solver (all layers at once) vs a scikit-learn
per-layer loop, on the same synthetic activations, with the per-layer accuracies of both.

Default size is the issue's target: 30 layers x 10,000 examples (d = 576, SmolLM2's width;
--d 4096 for an 8B model's). Run: .venv/bin/python benchmarks/bench_probes.py [--quick]
"""

from __future__ import annotations

import time

import torch
from _common import parse_args, write

from fairlens.detect.layer_sweep import probe_sweep


def synthetic(n: int, layers: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Anisotropic activations with a label signal that grows with depth and a few outlier dims."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen)
    direction = torch.randn(d, generator=gen)
    direction /= direction.norm()
    acts = torch.randn(n, layers, d, generator=gen) * (1 + torch.rand(d, generator=gen) * 3)
    strength = torch.linspace(0.0, 1.5, layers)
    acts += strength[None, :, None] * (2 * y[:, None, None].float() - 1) * direction
    acts[:, :, :5] += 20.0
    return acts, y


def main() -> None:
    args = parse_args(
        __doc__, n=(int, 10_000, "examples"), layers=(int, 30, "layers"), d=(int, 576, "width")
    )
    n = 2000 if args.quick else args.n
    acts, y = synthetic(n, args.layers, args.d)
    out = {}
    for solver in ("batched", "sklearn"):
        start = time.perf_counter()
        res = probe_sweep(acts, y, cv_folds=0, solver=solver, device=args.device)
        out[solver] = (time.perf_counter() - start, res)
    (tb, rb), (ts, rs) = out["batched"], out["sklearn"]
    diffs = [abs(a.accuracy - b.accuracy) for a, b in zip(rb.scores, rs.scores, strict=True)]
    print(
        f"probe sweep, {args.layers} layers x {n} examples x d={args.d} (one fit per layer, no CV):"
    )
    print(f"  batched torch ({args.device}): {tb:8.2f} s")
    print(f"  sklearn loop  (cpu):  {ts:8.2f} s")
    print(
        f"  speed-up: {ts / tb:.1f}x; max |accuracy difference| per layer: {100 * max(diffs):.2f} pt"
    )
    path = write(
        "probes",
        args.device,
        {
            "n": n,
            "layers": args.layers,
            "d": args.d,
            "batched_seconds": tb,
            "sklearn_seconds": ts,
            "speedup": ts / tb,
            "max_accuracy_diff_pt": 100 * max(diffs),
            "accuracy_batched": [s.accuracy for s in rb.scores],
            "accuracy_sklearn": [s.accuracy for s in rs.scores],
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
