"""Extraction throughput (tokens/s): fairlens last-token activations of every layer (TL path and
lean HF path) vs a plain HF forward on the same tokens. One process, same batches.

Run: .venv/bin/python benchmarks/bench_extraction.py [--device cuda] [--quick]
"""

from __future__ import annotations

import torch
from _common import load_models, parse_args, timed_interleaved, write

from fairlens.activations.extraction import extract_activations


def main() -> None:
    args = parse_args(__doc__, batch=(int, 16, "rows per batch"), seq=(int, 96, "tokens per row"))
    hooked, hf, _tok, desc = load_models(args.device)
    n_rows = args.batch * (1 if args.quick else 4)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(100, 1000, (n_rows, args.seq), generator=gen)
    seqs = tokens.tolist()
    on_device = tokens.to(args.device)
    n_tokens = tokens.numel()

    def plain_hf():
        with torch.no_grad():
            for i in range(0, n_rows, args.batch):
                hf(input_ids=on_device[i : i + args.batch], use_cache=False)

    def plain_hf_hidden_states():
        with torch.no_grad():
            for i in range(0, n_rows, args.batch):
                hf(
                    input_ids=on_device[i : i + args.batch],
                    use_cache=False,
                    output_hidden_states=True,
                )

    def fairlens_tl():
        extract_activations(hooked, seqs, batch_size=args.batch)

    def fairlens_lean_hf():
        extract_activations(hf, seqs, batch_size=args.batch)

    variants = {
        "plain_hf_forward": plain_hf,
        "plain_hf_output_hidden_states": plain_hf_hidden_states,
        "fairlens_tl_all_layers": fairlens_tl,
        "fairlens_lean_hf_all_layers": fairlens_lean_hf,
    }
    rows = {}
    for name, secs in timed_interleaved(variants, args.device, args.repeats).items():
        rows[name] = {"seconds": secs, "tokens_per_s": n_tokens / secs}
    base = rows["plain_hf_forward"]["tokens_per_s"]
    print(f"{n_rows} rows x {args.seq} tokens ({desc}):")
    for name, v in rows.items():
        v["ratio_vs_plain_hf"] = v["tokens_per_s"] / base
        print(
            f"  {name:<32} {v['tokens_per_s']:9.0f} tok/s  {v['ratio_vs_plain_hf']:.2f}x plain HF"
        )
    path = write(
        "extraction", args.device, {"model": desc, "rows": n_rows, "seq": args.seq, "results": rows}
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
