"""Peak memory and time of extracting all layers' last-token activations, measured on a BBQ subset
and projected to the full 58,492-item BBQ set.

Run: .venv/bin/python benchmarks/bench_memory.py [--items 110] [--path tl|hf]
"""

from __future__ import annotations

import resource
import time

import torch
from _common import load_models, parse_args, write

from fairlens.backend import encode
from fairlens.data import format_prompt, load_bbq, subsample

FULL_BBQ = 58_492


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    args = parse_args(
        __doc__,
        items=(int, 110, "items measured (10 per category)"),
        path=(str, "hf", "tl or hf (lean) extraction"),
    )
    hooked, hf, tok, desc = load_models(args.device)
    model = hf if args.path == "hf" else hooked
    items = subsample(load_bbq(), max(1, args.items // 11), seed=0)
    seqs = encode(tok, [format_prompt(it) for it in items])
    n_tokens = sum(len(s) for s in seqs)
    before = rss_mb()
    from fairlens.activations.extraction import extract_activations

    start = time.perf_counter()
    acts = extract_activations(model, seqs, batch_size=16, dtype=torch.float16)
    secs = time.perf_counter() - start
    peak = rss_mb()
    per_item_bytes = acts.acts[0].numel() * acts.acts.element_size()
    projection = {
        "activations_fp16_GB": FULL_BBQ * per_item_bytes / 1e9,
        "activations_fp32_GB": 2 * FULL_BBQ * per_item_bytes / 1e9,
        "extraction_hours": secs / len(items) * FULL_BBQ / 3600,
    }
    print(
        f"{len(items)} BBQ items ({n_tokens} tokens), all {acts.acts.shape[1]} layers, {args.path} path ({desc}):"
    )
    print(
        f"  {secs:.1f} s, {n_tokens / secs:.0f} tok/s; peak RSS {peak:.0f} MB (before extraction {before:.0f} MB)"
    )
    print(
        f"  projected to {FULL_BBQ} items: {projection['activations_fp16_GB']:.2f} GB fp16 "
        f"({projection['activations_fp32_GB']:.2f} GB fp32) of activations, "
        f"{projection['extraction_hours']:.2f} h at this rate"
    )
    path = write(
        f"memory-{args.path}",
        args.device,
        {
            "model": desc,
            "items": len(items),
            "tokens": n_tokens,
            "seconds": secs,
            "peak_rss_MB": peak,
            "rss_before_MB": before,
            "projection_full_bbq": projection,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
