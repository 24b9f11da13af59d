"""Steering search speed: a 100-variant grid on 200 BBQ items, prefix-cached vs re-scoring whole
prompts, side by side in one process on the same items and the same edits. Checks that both give
the same predictions, and records seconds per item for the prefix pass and per variant.

The grid is 100 static variants at ':' (25 layers x 4 strengths along the layer's DSV-like
direction; dynamic variants cost nothing more on the cached path, they are composed). Re-scoring
runs every variant over every whole prompt (what fairlens did before the prefix cache); to keep the
run short it times ``--rescore-variants`` of them and extrapolates linearly (each variant costs the
same: one full pass), which the output says.

Run: .venv/bin/python benchmarks/bench_search.py [--model qwen2.5-coder-1.5b] [--quick]
"""

from __future__ import annotations

import time

import torch
from _common import parse_args, write

from fairlens.data import load_bbq, resolve_data_dir, subsample
from fairlens.models import load_hf
from fairlens.scoring.letters import letter_token_ids, prompt_tokens
from fairlens.scoring.prefix_cache import PrefixCache
from fairlens.scoring.variant_scorer import FullPromptScorer


def main() -> None:
    args = parse_args(
        __doc__,
        model=(str, "smollm2-135m", "embedded model name or local spec"),
        items=(int, 200, "BBQ items"),
        variants=(int, 100, "static variants in the grid"),
        rescore_variants=(int, 5, "variants actually re-scored (the rest extrapolated)"),
    )
    n_items = 40 if args.quick else args.items
    n_variants = 20 if args.quick else args.variants
    hf, tok, info = load_hf(args.model, device=args.device)
    items = subsample(load_bbq(resolve_data_dir(None) / "bbq"), -(-n_items // 11), seed=0)[:n_items]
    seqs = prompt_tokens(hf, items, tokenizer=tok)
    ids = letter_token_ids(tok)
    layers = list(range(info.n_layers))
    hooks = [f"blocks.{v}.hook_resid_post" for v in layers]

    t = time.perf_counter()
    cache = PrefixCache(hf, seqs, read_ids=ids, capture=hooks, tokenizer=tok, batch_size=16)
    prefix_s = time.perf_counter() - t
    # edits: a direction per layer scaled to 0.1-0.8 of the layer's mean residual norm
    gen = torch.Generator().manual_seed(0)
    edits = []
    for k in range(n_variants):
        hook = hooks[(k // 4) % len(hooks)]
        norm = float(cache.base_acts[hook].norm(dim=-1).mean())
        v = torch.randn(info.d_model, generator=gen)
        edits.append({hook: (0.1 * 2 ** (k % 4)) * norm * v / v.norm()})
    t = time.perf_counter()
    cached = cache.logits(edits)
    variants_s = time.perf_counter() - t

    full = FullPromptScorer(hf, seqs, read_ids=ids, tokenizer=tok, batch_size=16)
    k = min(args.rescore_variants, n_variants)
    t = time.perf_counter()
    rescored = full.logits(edits[:k])
    rescore_s = (time.perf_counter() - t) / k * n_variants
    same = bool((rescored.argmax(-1) == cached[:k].argmax(-1)).all())
    max_diff = float((rescored - cached[:k]).abs().max())
    cached_total = prefix_s + variants_s
    result = {
        "model": info.name,
        "n_items": len(items),
        "n_variants": n_variants,
        "mean_prompt_tokens": sum(map(len, seqs)) / len(seqs),
        "cached_s": cached_total,
        "prefix_pass_s": prefix_s,
        "variants_s": variants_s,
        "prefix_s_per_item": prefix_s / len(items),
        "variant_s_per_item": variants_s / (n_variants * len(items)),
        "rescore_s_extrapolated": rescore_s,
        "rescored_variants": k,
        "speedup": rescore_s / cached_total,
        "same_predictions": same,
        "max_abs_logit_diff": max_diff,
    }
    print(
        f"{info.name}: {n_variants} variants x {len(items)} BBQ items "
        f"({result['mean_prompt_tokens']:.0f} tokens/prompt, {torch.get_num_threads()} threads)\n"
        f"  prefix-cached: {cached_total:.1f} s (prefix pass {prefix_s:.1f} s = "
        f"{result['prefix_s_per_item'] * 1000:.1f} ms/item; variants {variants_s:.1f} s = "
        f"{result['variant_s_per_item'] * 1000:.2f} ms per variant-item)\n"
        f"  re-scoring whole prompts: {rescore_s:.1f} s ({k} variants timed, extrapolated to "
        f"{n_variants})\n"
        f"  speed-up {result['speedup']:.1f}x; same predictions: {same} "
        f"(max |logit diff| {max_diff:.1e})"
    )
    print(f"results: {write(f'search-{info.name}', args.device, result)}")


if __name__ == "__main__":
    main()
