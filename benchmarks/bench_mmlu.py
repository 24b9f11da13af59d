"""MMLU 5-shot speed for the panel's methods: tokens/s and seconds per 1,000 questions, whole
prompts re-run under each method vs the prefix cache (shots + question computed once for every
method that steers only the answer position), side by side in one process on the same questions.

Methods timed: base (no intervention) and a static steering edit at one layer. Whole prompts: one
full pass per method. Prefix-cached: one pass over the prompts minus their last token (shared),
then a one-token forward per method. The answers of both paths are compared.

Run: .venv/bin/python benchmarks/bench_mmlu.py [--questions 57] [--quick]
"""

from __future__ import annotations

import time

import torch
from _common import parse_args, write

from fairlens.backend import add_hooks, encode
from fairlens.data import resolve_data_dir
from fairlens.data.mcqa import mmlu_items, sample_mc
from fairlens.data.mmlu import load_mmlu
from fairlens.models import load_hf
from fairlens.scoring.multiple_choice import mc_letter_ids, mc_prompts, score_mc
from fairlens.scoring.prefix_cache import PrefixCache


def main() -> None:
    args = parse_args(
        __doc__,
        model=(str, "smollm2-135m", "embedded model name or local spec"),
        questions=(int, 57, "MMLU test questions (one per subject first)"),
        layer=(int, 15, "layer of the static edit"),
    )
    root = resolve_data_dir(None)
    test = mmlu_items(load_mmlu(root, "test"))
    shots = mmlu_items(load_mmlu(root, "dev"))
    n = 12 if args.quick else args.questions
    items = sample_mc(test, -(-n // 57), seed=0)[:n]
    hf, tok, info = load_hf(args.model, device=args.device)
    prompts = mc_prompts(items, tok, shots)
    seqs = encode(tok, prompts)
    n_tokens = sum(map(len, seqs))
    hook = f"blocks.{args.layer}.hook_resid_post"
    vector = torch.randn(info.d_model, generator=torch.Generator().manual_seed(0))
    vector = 4.0 * vector / vector.norm()

    def add_last(act: torch.Tensor) -> torch.Tensor:
        act[:, -1] += vector.to(act.dtype)  # left padded: the last column is the answer position
        return act

    t = time.perf_counter()
    base_full = score_mc(hf, tok, items, prompts, batch_size=4)
    base_full_s = time.perf_counter() - t
    t = time.perf_counter()
    with add_hooks(hf, [(hook, add_last)]):
        steered_full = score_mc(hf, tok, items, prompts, batch_size=4)
    steered_full_s = time.perf_counter() - t

    letters = mc_letter_ids(tok, 4)
    t = time.perf_counter()
    cache = PrefixCache(hf, seqs, read_ids=letters, tokenizer=tok, batch_size=4)
    prefix_s = time.perf_counter() - t
    t = time.perf_counter()
    steered_cached = cache.logits([{hook: vector}])[0].argmax(-1)
    edit_s = time.perf_counter() - t
    base_cached = cache.base_logits.argmax(-1)
    full_s = base_full_s + steered_full_s
    cached_s = prefix_s + edit_s
    per_k = 1000 / len(items)
    result = {
        "model": info.name,
        "n_questions": len(items),
        "mean_prompt_tokens": n_tokens / len(items),
        "full": {"base_s": base_full_s, "static_s": steered_full_s,
                 "tokens_per_s": 2 * n_tokens / full_s, "s_per_1000_per_method": full_s / 2 * per_k},
        "cached": {"prefix_pass_s": prefix_s, "static_s": edit_s,
                   "s_per_1000_per_method": cached_s / 2 * per_k},
        "speedup_two_methods": full_s / cached_s,
        "same_answers": bool(torch.equal(base_full, base_cached)
                             and torch.equal(steered_full, steered_cached)),
    }  # fmt: skip
    print(
        f"{info.name}: MMLU 5-shot, {len(items)} questions, {result['mean_prompt_tokens']:.0f} "
        f"tokens/prompt, {torch.get_num_threads()} threads\n"
        f"  whole prompts: base {base_full_s:.1f} s + static {steered_full_s:.1f} s "
        f"({result['full']['tokens_per_s']:.0f} tok/s; "
        f"{result['full']['s_per_1000_per_method']:.0f} s per 1,000 questions per method)\n"
        f"  prefix-cached: shared pass {prefix_s:.1f} s + static {edit_s:.2f} s "
        f"({result['cached']['s_per_1000_per_method']:.0f} s per 1,000 questions per method)\n"
        f"  speed-up for two methods {result['speedup_two_methods']:.2f}x (grows with every "
        f"steered method); same answers: {result['same_answers']}"
    )
    print(f"results: {write(f'mmlu-{info.name}', args.device, result)}")


if __name__ == "__main__":
    main()
