"""Update times of the Jupyter explorers on BBQ items, side by side with the whole-pass reference.

Ablation explorer: one update = the effect of one ablation on the items (LayerCache: the residual
stream entering the ablated layer cached, blocks l..n-1 rerun) vs ``ablation_effect`` (whole
prompts rerun, unablated and ablated). Measured at a shallow, a middle and a deep layer, the first
update at a layer (which fills its residual cache) and a later one (another method, same layer).

Steering explorer: one cell = one static edit at the last prompt position on the prefix cache of
the plain transformers model (dynamic at any tau composed without a forward) vs a whole-prompt
rerun under the same edit.

Run: .venv/bin/python benchmarks/bench_explorers.py [--items 100] [--threads 2] [--quick]
"""

from __future__ import annotations

import time

import torch
from _common import load_models, parse_args, write

from fairlens.analysis import LayerCache, ablation_effect, zero_ablation
from fairlens.analysis.ablation import directional_ablation
from fairlens.data import load_bbq, resolve_data_dir, subsample
from fairlens.scoring.letters import letter_token_ids, prompt_tokens
from fairlens.scoring.prefix_cache import PrefixCache
from fairlens.scoring.variant_scorer import FullPromptScorer


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    args = parse_args(__doc__, items=(int, 100, "BBQ items (balanced over categories)"))
    hooked, hf, tok, desc = load_models(args.device)
    every = load_bbq(resolve_data_dir(None) / "bbq")
    n = 20 if args.quick else args.items
    n_cats = len({it.category for it in every})
    items = subsample(every, -(-n // n_cats), seed=0)[:n]  # balanced over categories and contexts
    n_layers = int(hooked.cfg.n_layers)
    u = torch.randn(hooked.cfg.d_model, generator=torch.Generator().manual_seed(0))

    cache, init_s = _timed(lambda: LayerCache(hooked, items, batch_size=16))
    _, base_s = _timed(cache.letter_logits)
    rows = {}
    for layer in (1, n_layers // 2, n_layers - 4):
        hook = f"blocks.{layer}.hook_resid_post"
        zero = {"zero": lambda h=hook: zero_ablation(hooked, h)}
        direc = {"dir": lambda h=hook: directional_ablation(hooked, h, u)}
        first, first_s = _timed(lambda z=zero: cache.effect(z))
        _, later_s = _timed(lambda d=direc: cache.effect(d))
        whole, whole_s = _timed(lambda z=zero: ablation_effect(hooked, items, z, batch_size=16))
        rows[layer] = {
            "first_update_s": first_s, "later_update_s": later_s, "whole_pass_s": whole_s,
            "speedup_later": whole_s / later_s, "same_table": first.table() == whole.table(),
        }  # fmt: skip

    layer = n_layers // 2
    hook = f"blocks.{layer}.hook_resid_post"
    seqs = prompt_tokens(hf, items, tokenizer=tok)
    letters = letter_token_ids(tok)
    prefix, prefix_s = _timed(
        lambda: PrefixCache(hf, seqs, read_ids=letters, tokenizer=tok, capture=[hook])
    )
    cell, cell_s = _timed(lambda: prefix.logits([{hook: 4.0 * u}])[0].argmax(-1))
    full = FullPromptScorer(hf, seqs, read_ids=letters, tokenizer=tok)
    ref, full_cell_s = _timed(lambda: full.logits([{hook: 4.0 * u}])[0].argmax(-1))
    result = {
        "model": desc, "n_items": len(items), "threads": torch.get_num_threads(),
        "ablation": {"cache_init_s": init_s, "unablated_s": base_s, "per_layer": rows},
        "steering": {"prefix_pass_s": prefix_s, "cell_s": cell_s, "whole_prompt_cell_s": full_cell_s,
                     "speedup_cell": full_cell_s / cell_s, "same_answers": bool(torch.equal(cell, ref))},
    }  # fmt: skip
    print(f"{desc}: {len(items)} BBQ items, {torch.get_num_threads()} threads")
    print(f"  ablation explorer: cache + unablated logits {init_s + base_s:.1f} s once")
    for layer, r in rows.items():
        print(
            f"    layer {layer:>2}: first update {r['first_update_s']:.2f} s, later "
            f"{r['later_update_s']:.2f} s; whole passes {r['whole_pass_s']:.2f} s "
            f"({r['speedup_later']:.1f}x); same table: {r['same_table']}"
        )
    s = result["steering"]
    print(
        f"  steering explorer: prefix pass {prefix_s:.1f} s once, then a cell {cell_s:.2f} s vs "
        f"{full_cell_s:.2f} s whole prompts ({s['speedup_cell']:.0f}x); same answers: "
        f"{s['same_answers']}"
    )
    print(f"results: {write(f'explorers-{len(items)}', args.device, result)}")


if __name__ == "__main__":
    main()
