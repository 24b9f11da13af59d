"""Generation tokens/s: plain HF / fairlens fast path with FairSteer / TL generate with FairSteer /
a reference-style gate (copy to CPU + sklearn each step). One process, same prompts, greedy.

Run: .venv/bin/python benchmarks/bench_generation.py [--device cuda] [--quick]
"""

from __future__ import annotations

import numpy as np
import torch
from _common import load_models, parse_args, timed_interleaved, write
from sklearn.linear_model import LogisticRegression

from fairlens.steer.steerer import Steerer, SteeringConfig


def reference_gate_hook(hf, layer: int, vector: torch.Tensor, clf: LogisticRegression):
    """The reference code's style: every step, copy the last token to the CPU and ask sklearn."""

    def hook(module, args, output):
        last = output[:, -1].float().cpu().numpy()
        biased = clf.predict_proba(last)[:, 1] < 0.5
        mask = torch.as_tensor(biased, device=output.device, dtype=output.dtype)
        output[:, -1] += mask[:, None] * vector.to(output.dtype)
        return output

    return hf.model.layers[layer].register_forward_hook(hook)


def run_batch(hooked, hf, steerer, clf, layer, vector, prompt, new, args) -> dict:
    """Time the four variants on one batch of prompts."""
    mask = torch.ones_like(prompt)
    batch = prompt.shape[0]

    def hf_generate():
        with torch.no_grad():
            return hf.generate(
                input_ids=prompt,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=0,
            )

    def fast():
        with steerer.apply(hf):
            return hf_generate()

    def tl():
        with steerer.apply(hooked):
            return hooked.generate(
                prompt,
                max_new_tokens=new,
                do_sample=False,
                verbose=False,
                stop_at_eos=False,
                use_past_kv_cache=True,
            )

    def reference():
        handle = reference_gate_hook(hf, layer, vector.to(args.device), clf)
        try:
            return hf_generate()
        finally:
            handle.remove()

    variants = {
        "plain_hf": hf_generate,
        "fast_path_fairsteer": fast,
        "tl_generate_fairsteer": tl,
        "reference_cpu_sklearn_gate": reference,
    }
    row = {}
    for name, secs in timed_interleaved(variants, args.device, args.repeats).items():
        row[name] = {"seconds": secs, "tokens_per_s": batch * new / secs}
    base = row["plain_hf"]["tokens_per_s"]
    for v in row.values():
        v["ratio_vs_plain_hf"] = v["tokens_per_s"] / base
    return row


def main() -> None:
    args = parse_args(__doc__, new_tokens=(int, 64, "new tokens per row"))
    hooked, hf, _tok, desc = load_models(args.device)
    d = hooked.cfg.d_model
    layer = hooked.cfg.n_layers // 2
    gen = torch.Generator().manual_seed(0)
    coef = torch.randn(d, generator=gen) / d**0.5
    vector = torch.randn(d, generator=gen)
    steerer = Steerer(f"blocks.{layer}.hook_resid_post", vector, coef, 0.0, SteeringConfig())
    clf = LogisticRegression().fit(np.random.default_rng(0).normal(size=(64, d)), np.arange(64) % 2)
    clf.coef_[0] = coef.numpy()
    clf.intercept_[0] = 0.0
    new = 8 if args.quick else args.new_tokens
    results = {}
    for batch in (1, 8):
        prompt = torch.randint(100, 1000, (batch, 32), generator=gen).to(args.device)
        row = run_batch(hooked, hf, steerer, clf, layer, vector, prompt, new, args)
        results[f"batch{batch}"] = row
        print(f"batch {batch}, {new} new tokens ({desc}):")
        for name, v in row.items():
            print(
                f"  {name:<28} {v['tokens_per_s']:9.1f} tok/s  {v['ratio_vs_plain_hf']:.2f}x plain HF"
            )
    path = write("generation", args.device, {"model": desc, "new_tokens": new, "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
