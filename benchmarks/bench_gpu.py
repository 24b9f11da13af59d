"""The GPU benchmark: every fairlens speed target measured in one process on one model, side by side.

On CUDA the model is a random-init Llama-3-8B shape in bfloat16 built directly on the device (no
download, same compute and weight bytes as the real model); ``--device cpu --quick`` runs the same
code on a tiny random-init Llama of the same family in well under a minute (a unit test runs it).

Sections (each one's variants run on the same inputs, interleaved round-robin after a warm-up,
medians of ``--repeats``; a section that raises is recorded under ``errors`` and the rest still runs):

* extraction: last-token activations of every layer, tokens/s of fairlens' lean HF path and TL path
  vs a plain HF forward (target: lean HF path >= 0.9x plain HF);
* generation, batch 1 and 8: plain HF ``generate`` vs the same under a FairSteer hook (fast path,
  dynamic gate) and under the same hook with the gate forced on (static) (target >= 0.9x);
* gate overhead: (dynamic - static) / static of those steered generations (target <= 3 %);
* search: the prefix-cached steering search vs re-scoring whole prompts (random token prompts,
  static edits at several layers; re-scoring timed on a few variants and extrapolated);
* probes: the batched probe sweep (all layers at once on the device) vs scikit-learn's per-layer
  loop (timed on ``--sklearn-layers`` layers and extrapolated);
* bandwidth: batch-1 steered generation against the memory-bandwidth bound, weight bytes / HBM
  bandwidth (H100 SXM 3.35 TB/s, H100 PCIe 2.0, H100 NVL 3.9, H200 4.8, from the device name;
  ``--hbm-tbps`` overrides) (target >= 0.5x);
* compile: batch-1 generation with a static KV cache, which transformers' ``generate`` compiles
  (``torch.compile``, mode ``reduce-overhead``: CUDA graphs) on CUDA: plain, FairSteer, and a
  minimal gate hook (same arithmetic, no statistics) for comparison. Each variant is compiled
  once and timed on its own (a hook change means a recompilation, so these are not interleaved).
  A failure prints ``compile: not supported (<reason>)``. On CPU the static-cache path runs
  eagerly (no compilation) unless ``--compile`` is given.

Prints a table of the targets (PASS/FAIL) and writes JSON (``--out``, default
``benchmarks/results/gpu-<device>.json``), rewritten after every section so that a run cut short
still leaves its numbers. Exits 1 when a section raised. ``benchmarks/gpu.sh`` runs it on a lent GPU.

Run: .venv/bin/python benchmarks/bench_gpu.py --device cpu --quick --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, machine, random_llama, sync

HBM_TBPS: tuple[tuple[str, float], ...] = (
    ("H200", 4.8),
    ("H100 NVL", 3.9),
    ("H100 PCIE", 2.0),
    ("H100", 3.35),
)
"""Nominal HBM bandwidth (TB/s) by a substring of ``torch.cuda.get_device_name()``, first match."""

BUDGET = "skipped: time budget"
ALWAYS_FIRES = -30.0
"""A gate intercept with which P(unbiased) = sigmoid(a @ coef - 30) < 0.5 at every position."""

TINY = {  # the CPU model: the Llama-3 layout (GQA, untied head) at toy size
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


@dataclass(frozen=True)
class Sizes:
    extract_batch: int
    extract_seq: int
    extract_rows: int
    prompt: int
    new_tokens: int
    search_items: int
    search_len: int
    search_variants: int
    rescore_variants: int
    probe_n: int
    sklearn_layers: int


QUICK = Sizes(  # CI: the tiny model on one CPU thread, a few seconds
    extract_batch=4, extract_seq=32, extract_rows=8, prompt=16, new_tokens=8, search_items=12,
    search_len=24, search_variants=8, rescore_variants=2, probe_n=400, sklearn_layers=4,
)  # fmt: skip
FULL_CUDA = Sizes(  # the 8B shape on one H100/H200 within the lease
    extract_batch=16, extract_seq=128, extract_rows=64, prompt=32, new_tokens=64, search_items=128,
    search_len=80, search_variants=64, rescore_variants=2, probe_n=10_000, sklearn_layers=1,
)  # fmt: skip
FULL_CPU = Sizes(
    extract_batch=8, extract_seq=64, extract_rows=32, prompt=32, new_tokens=32, search_items=48,
    search_len=64, search_variants=32, rescore_variants=4, probe_n=4000, sklearn_layers=4,
)  # fmt: skip


def sizes_for(args: argparse.Namespace, cuda: bool) -> Sizes:
    base = QUICK if args.quick else FULL_CUDA if cuda else FULL_CPU
    changes = {}
    if args.new_tokens:
        changes["new_tokens"] = args.new_tokens
    if args.sklearn_layers:
        changes["sklearn_layers"] = args.sklearn_layers
    return Sizes(**{**base.__dict__, **changes})


@dataclass
class Run:
    args: argparse.Namespace
    device: str
    dtype: torch.dtype
    sizes: Sizes
    hf: Any = None
    hooked: Any = None
    tok: Any = None
    lo: int = 10
    hi: int = 500
    started: float = field(default_factory=time.perf_counter)
    out: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # data passed between sections

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def tokens(self, shape: tuple[int, ...], seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.randint(self.lo, self.hi, shape, generator=gen)

    def steering(self) -> tuple[int, torch.Tensor, torch.Tensor]:
        """``(layer, vector, coef)``: a random gate and vector at the middle layer (as
        bench_generation.py: the gate fires on about half the positions)."""
        d = self.hf.config.hidden_size
        gen = torch.Generator().manual_seed(0)
        coef = torch.randn(d, generator=gen) / d**0.5
        vector = torch.randn(d, generator=gen)
        return self.hf.config.num_hidden_layers // 2, vector, coef


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per variant (medians)")
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    p.add_argument("--layers", type=int, default=None, help="override the number of layers")
    p.add_argument("--new-tokens", type=int, default=None, help="new tokens per generation")
    p.add_argument("--sklearn-layers", type=int, default=None, help="layers timed with sklearn")
    p.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16"),
        default="auto",
        help="model dtype (auto: bfloat16 on CUDA, float32 on CPU)",
    )
    p.add_argument("--hbm-tbps", type=float, default=None, help="HBM bandwidth, TB/s")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the static-cache generations (default: on CUDA only)",
    )
    p.add_argument(
        "--budget-s",
        type=float,
        default=360.0,
        help="CUDA: skip a compile variant that would end past this many seconds, and the "
        "search and probe sections when started past it (gpu.sh allows 450 s in all)",
    )
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------- helpers


def timed(
    fns: dict[str, Callable[[], Any]], device: str, repeats: int, warmup: int = 1
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, Any]]:
    """``(medians, all times, last outputs)``: variants run round-robin after ``warmup`` calls
    each (as ``_common.timed_interleaved``, keeping what each variant returned)."""
    outputs: dict[str, Any] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            outputs[name] = fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            outputs[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {n: statistics.median(t) for n, t in times.items()}, times, outputs


def free(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def hbm_tbps(device: str, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, "--hbm-tbps"
    if not device.startswith("cuda"):
        return None, "no HBM figure for this device (pass --hbm-tbps)"
    name = torch.cuda.get_device_name().upper()
    for key, tbps in HBM_TBPS:
        if key in name:
            return tbps, f"nominal for {key} ({torch.cuda.get_device_name()})"
    return None, f"unknown device {torch.cuda.get_device_name()!r} (pass --hbm-tbps)"


def copy_tbps(device: str) -> float | None:
    """Measured device-to-device copy bandwidth (bytes read + written), TB/s."""
    if not device.startswith("cuda"):
        return None
    n = 1 << 29  # 1 GiB of bf16
    src = torch.empty(n, dtype=torch.bfloat16, device=device).normal_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del src, dst
    free(device)
    return 2 * 10 * n * 2 / seconds / 1e12


def make_generate(run: Run, prompt: torch.Tensor, new: int, **extra: Any) -> Callable[[], Any]:
    """Greedy ``generate`` of exactly ``new`` tokens for ``prompt`` (no padding)."""
    hf, mask, pad = run.hf, torch.ones_like(prompt), run.tok.pad_token_id

    def generate() -> Any:
        with torch.no_grad():
            return hf.generate(
                input_ids=prompt,
                attention_mask=mask,
                max_new_tokens=new,
                min_new_tokens=new,
                do_sample=False,
                pad_token_id=pad,
                **extra,
            )

    return generate


def minimal_gate_hook(
    run: Run, layer: int, vector: torch.Tensor, coef: torch.Tensor, intercept: float
) -> Any:
    """The FairSteer arithmetic of the last position as a bare forward hook (no statistics, no
    bookkeeping): what a compile-friendly gate costs, for comparison with fairlens' hook."""
    module = run.hf.model.layers[layer]
    dtype = next(run.hf.parameters()).dtype
    vec = vector.to(run.device, dtype)
    w = coef.to(run.device)

    def hook(_module: Any, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        last = hidden[:, -1:]
        fire = (torch.sigmoid(last.float() @ w + intercept) < 0.5).to(hidden.dtype)
        hidden[:, -1:] = last + vec * fire[..., None]
        return output

    return module.register_forward_hook(hook)


# ---------------------------------------------------------------------------------- sections


def build(run: Run) -> dict[str, Any]:
    cuda = run.device.startswith("cuda")
    shape: dict[str, Any] = {} if cuda else dict(TINY)
    if run.args.layers:
        shape["num_hidden_layers"] = run.args.layers
    t = time.perf_counter()
    try:
        run.hooked, run.hf, run.tok = random_llama(run.device, run.dtype, **shape)
    except Exception as exc:  # the TL twin serves one extraction variant: go on without it
        traceback.print_exc()
        run.errors["model.hooked_twin"] = f"{type(exc).__name__}: {exc}"
        run.hooked = run.hf = None
        free(run.device)
        _, run.hf, run.tok = random_llama(run.device, run.dtype, hooked=False, **shape)
    sync(run.device)
    build_s = time.perf_counter() - t
    cfg = run.hf.config
    params = list(run.hf.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    embed = run.hf.get_input_embeddings().weight
    run.hi = min(1000, cfg.vocab_size - 8)
    name = "Llama-3-8B shape" if cuda else "tiny Llama"
    if run.args.layers:
        name += f", {cfg.num_hidden_layers} layers"
    info = {
        "description": f"random-init {name} ({str(run.dtype).removeprefix('torch.')})",
        "n_params": sum(p.numel() for p in params),
        "weight_bytes": weight_bytes,
        "input_embedding_bytes": embed.numel() * embed.element_size(),
        "n_layers": cfg.num_hidden_layers,
        "d_model": cfg.hidden_size,
        "vocab_size": cfg.vocab_size,
        "dtype": str(run.dtype),
        "build_s": build_s,
        "hooked_twin": run.hooked is not None,
    }
    if cuda:
        info["gpu_memory_allocated_gb"] = torch.cuda.memory_allocated() / 1e9
    print(
        f"model: {info['description']}, {info['n_params'] / 1e9:.3g}B params, "
        f"{weight_bytes / 1e9:.3g} GB of weights, built in {build_s:.1f} s"
    )
    return info


def extraction(run: Run) -> dict[str, Any]:
    from fairlens.activations.extraction import extract_activations

    s = run.sizes
    hf, batch = run.hf, s.extract_batch
    tokens = run.tokens((s.extract_rows, s.extract_seq), seed=1)
    seqs = tokens.tolist()
    on_device = tokens.to(run.device)

    def plain_hf() -> None:
        with torch.no_grad():
            for i in range(0, s.extract_rows, batch):
                hf(input_ids=on_device[i : i + batch], use_cache=False)

    variants: dict[str, Callable[[], Any]] = {
        "plain_hf_forward": plain_hf,
        "fairlens_lean_hf_all_layers": lambda: extract_activations(hf, seqs, batch_size=batch),
    }
    if run.hooked is not None:
        hooked = run.hooked
        variants["fairlens_tl_all_layers"] = lambda: extract_activations(
            hooked, seqs, batch_size=batch
        )
    medians, times, outputs = timed(variants, run.device, run.args.repeats)
    n_tokens = tokens.numel()
    base = n_tokens / medians["plain_hf_forward"]
    rows = {
        name: {
            "seconds": secs,
            "tokens_per_s": n_tokens / secs,
            "ratio_vs_plain_hf": n_tokens / secs / base,
            "times": times[name],
        }
        for name, secs in medians.items()
    }
    lean = outputs["fairlens_lean_hf_all_layers"].acts
    result: dict[str, Any] = {
        "rows": s.extract_rows,
        "seq": s.extract_seq,
        "batch": batch,
        "results": rows,
        "lean_hf_acts_shape": list(lean.shape),
    }
    if "fairlens_tl_all_layers" in outputs:  # same numbers from both paths (up to the dtype)
        tl = outputs["fairlens_tl_all_layers"].acts
        result["tl_vs_lean_rel_diff"] = float((tl - lean).norm() / lean.norm())
    print(f"extraction, {s.extract_rows} rows x {s.extract_seq} tokens, every layer's last token:")
    for name, v in rows.items():
        print(
            f"  {name:<30} {v['tokens_per_s']:10.0f} tok/s  {v['ratio_vs_plain_hf']:.2f}x plain HF"
        )
    return result


def generation(run: Run) -> dict[str, Any]:
    from fairlens.steer.steerer import Steerer, SteeringConfig

    s, hf = run.sizes, run.hf
    layer, vector, coef = run.steering()
    dynamic = Steerer(f"blocks.{layer}.hook_resid_post", vector, coef, 0.0, SteeringConfig())
    static = dynamic.with_config(mode="static")
    result: dict[str, Any] = {"new_tokens": s.new_tokens, "prompt_tokens": s.prompt, "layer": layer}
    for batch in (1, 8):
        prompt = run.tokens((batch, s.prompt), seed=10 + batch).to(run.device)
        generate = make_generate(run, prompt, s.new_tokens)
        gates: dict[str, Any] = {}

        def steered(steerer: Steerer, key: str, generate=generate, gates=gates) -> Callable:
            def fn() -> Any:
                with steerer.apply(hf) as stats:
                    out = generate()
                gates[key] = stats
                return out

            return fn

        variants = {
            "plain_hf": generate,
            "fast_path_fairsteer": steered(dynamic, "dynamic"),
            "fast_path_static": steered(static, "static"),
        }
        medians, times, outputs = timed(variants, run.device, run.args.repeats)
        rows = {
            name: {
                "seconds": secs,
                "tokens_per_s": batch * s.new_tokens / secs,
                "ratio_vs_plain_hf": medians["plain_hf"] / secs,
                "times": times[name],
            }
            for name, secs in medians.items()
        }
        gate = gates["dynamic"].result()
        row = {
            "results": rows,
            "shapes": {name: list(out.shape) for name, out in outputs.items()},
            "gate_overhead": (medians["fast_path_fairsteer"] - medians["fast_path_static"])
            / medians["fast_path_static"],
            "hook_overhead_static_vs_plain": (medians["fast_path_static"] - medians["plain_hf"])
            / medians["plain_hf"],
            "gate_fire_rate": gate.rate,
            "gate_calls": gate.calls,
            "steering_changed_output": not torch.equal(
                outputs["plain_hf"], outputs["fast_path_fairsteer"]
            ),
        }
        result[f"batch{batch}"] = row
        run.cache[f"eager_tokens_batch{batch}"] = {n: o.cpu() for n, o in outputs.items()}
        print(f"generation, batch {batch}, {s.new_tokens} new tokens:")
        for name, v in rows.items():
            print(
                f"  {name:<22} {v['tokens_per_s']:9.1f} tok/s  {v['ratio_vs_plain_hf']:.3f}x plain HF"
            )
        print(
            f"  gate overhead (dynamic - static) / static: {100 * row['gate_overhead']:+.2f} %; "
            f"gate fired on {100 * gate.rate:.0f} % of {gate.probed} positions"
        )
    return result


def search(run: Run) -> dict[str, Any]:
    from fairlens.scoring.prefix_cache import PrefixCache
    from fairlens.scoring.variant_scorer import FullPromptScorer

    s, hf, tok = run.sizes, run.hf, run.tok
    n_layers, d = hf.config.num_hidden_layers, hf.config.hidden_size
    gen = torch.Generator().manual_seed(2)
    lengths = torch.randint(s.search_len - 8, s.search_len + 9, (s.search_items,), generator=gen)
    seqs = [run.tokens((int(n),), seed=100 + i).tolist() for i, n in enumerate(lengths)]
    read_ids = [run.lo, run.lo + 1, run.lo + 2]
    n_hook_layers = min(n_layers, max(1, s.search_variants // 4))
    layers = sorted({round(x) for x in torch.linspace(0, n_layers - 1, n_hook_layers).tolist()})
    hooks = [f"blocks.{layer}.hook_resid_post" for layer in layers]

    t = time.perf_counter()
    cache = PrefixCache(hf, seqs, read_ids=read_ids, capture=hooks, tokenizer=tok, batch_size=16)
    sync(run.device)
    prefix_s = time.perf_counter() - t
    edits = []  # a direction per layer at 0.1-0.8 of the layer's mean residual norm (as bench_search)
    for k in range(s.search_variants):
        hook = hooks[(k // 4) % len(hooks)]
        norm = float(cache.base_acts[hook].norm(dim=-1).mean())
        v = torch.randn(d, generator=gen)
        edits.append({hook: (0.1 * 2 ** (k % 4)) * norm * v / v.norm()})
    t = time.perf_counter()
    cached = cache.logits(edits)
    sync(run.device)
    variants_s = time.perf_counter() - t
    cache_bytes = cache.cache_bytes
    del cache
    free(run.device)

    full = FullPromptScorer(hf, seqs, read_ids=read_ids, tokenizer=tok, batch_size=16)
    k = min(s.rescore_variants, s.search_variants)
    t = time.perf_counter()
    rescored = full.logits(edits[:k])
    sync(run.device)
    rescore_s = (time.perf_counter() - t) / k * s.search_variants
    cached_s = prefix_s + variants_s
    result = {
        "n_items": len(seqs),
        "mean_prompt_tokens": float(lengths.float().mean()),
        "n_variants": s.search_variants,
        "hook_layers": layers,
        "prefix_pass_s": prefix_s,
        "variants_s": variants_s,
        "cached_s": cached_s,
        "variant_s_per_item": variants_s / (s.search_variants * len(seqs)),
        "rescored_variants": k,
        "rescore_s_extrapolated": rescore_s,
        "speedup": rescore_s / cached_s,
        "same_prediction_fraction": float(
            (rescored.argmax(-1) == cached[:k].argmax(-1)).float().mean()
        ),
        "max_abs_logit_diff": float((rescored - cached[:k]).abs().max()),
        "cache_bytes": cache_bytes,
        "logits_shape": list(cached.shape),
    }
    print(
        f"search, {s.search_variants} variants x {len(seqs)} prompts "
        f"({result['mean_prompt_tokens']:.0f} tokens): prefix-cached {cached_s:.2f} s "
        f"(prefix pass {prefix_s:.2f} s) vs re-scoring {rescore_s:.2f} s "
        f"({k} variants timed, extrapolated): {result['speedup']:.1f}x; same predictions "
        f"{100 * result['same_prediction_fraction']:.0f} %, max |logit diff| "
        f"{result['max_abs_logit_diff']:.1e}"
    )
    return result


def synthetic(
    n: int, layers: int, d: int, device: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """bench_probes.synthetic, generated on ``device`` one layer at a time (no full-size
    temporaries: 32 layers x 10k x 4096 is 5 GB): anisotropic activations, a label signal growing
    with depth, a few outlier dimensions."""
    gen = torch.Generator(device=device).manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=gen, device=device)
    direction = torch.randn(d, generator=gen, device=device)
    direction /= direction.norm()
    scale = 1 + torch.rand(d, generator=gen, device=device) * 3
    sign = (2 * y.float() - 1)[:, None]
    acts = torch.empty(n, layers, d, device=device)
    for layer, strength in enumerate(torch.linspace(0.0, 1.5, layers).tolist()):
        acts[:, layer].normal_(generator=gen).mul_(scale).add_(strength * sign * direction)
    acts[:, :, :5] += 20.0
    return acts, y.cpu()


def probes(run: Run) -> dict[str, Any]:
    from fairlens.detect.layer_sweep import probe_sweep

    s = run.sizes
    layers, d = run.hf.config.num_hidden_layers, run.hf.config.hidden_size
    acts, y = synthetic(s.probe_n, layers, d, run.device)
    sync(run.device)
    t = time.perf_counter()
    batched = probe_sweep(acts, y, cv_folds=0, solver="batched", device=run.device)
    sync(run.device)
    batched_s = time.perf_counter() - t
    k = min(s.sklearn_layers, layers)
    part = acts[:, :k].cpu()
    del acts
    free(run.device)
    t = time.perf_counter()
    ref = probe_sweep(part, y, cv_folds=0, solver="sklearn", device="cpu", layers=list(range(k)))
    sklearn_s = (time.perf_counter() - t) / k * layers
    diffs = [
        abs(a.accuracy - b.accuracy) for a, b in zip(batched.scores[:k], ref.scores, strict=True)
    ]
    result = {
        "n": s.probe_n,
        "layers": layers,
        "d": d,
        "batched_s": batched_s,
        "sklearn_layers_timed": k,
        "sklearn_s_extrapolated": sklearn_s,
        "speedup": sklearn_s / batched_s,
        "max_accuracy_diff_pt": 100 * max(diffs),
        "accuracy_batched": [sc.accuracy for sc in batched.scores],
    }
    print(
        f"probes, {layers} layers x {s.probe_n} examples x d={d}, no CV: batched ({run.device}) "
        f"{batched_s:.2f} s vs sklearn loop {sklearn_s:.2f} s ({k} layers timed, extrapolated): "
        f"{result['speedup']:.1f}x; max |accuracy difference| {result['max_accuracy_diff_pt']:.2f} pt"
    )
    return result


def _dynamo_counts() -> dict[str, int]:
    try:
        from torch._dynamo.utils import counters
    except Exception:
        return {}
    return {
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "cudagraph_skips": int(counters["inductor"]["cudagraph_skips"]),
    }


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:240] if text else ''}"


def compile_section(run: Run) -> dict[str, Any]:
    """Batch-1 generation with a static KV cache, compiled (CUDA default) or eager."""
    from contextlib import ExitStack

    import torch._dynamo

    from fairlens.steer.steerer import Steerer, SteeringConfig

    cuda = run.device.startswith("cuda")
    want = run.args.compile if run.args.compile is not None else cuda
    s, hf = run.sizes, run.hf
    layer, vector, coef = run.steering()
    # A dynamic gate whose intercept makes it fire everywhere: it costs what any dynamic gate
    # costs, and its tokens must then equal the eager static steering's (a check that the hook
    # runs inside the compiled graph, which it would not if dynamo ignored hooks).
    steerer = Steerer(
        f"blocks.{layer}.hook_resid_post", vector, coef, ALWAYS_FIRES, SteeringConfig()
    )
    prompt = run.tokens((1, s.prompt), seed=11).to(run.device)  # generation's batch-1 prompt
    extra: dict[str, Any] = {"cache_implementation": "static"}
    if want:
        from transformers import CompileConfig

        config = CompileConfig(fullgraph=False, mode="reduce-overhead")
        if not cuda:
            config._compile_all_devices = True  # transformers compiles on CUDA only by default
        extra["compile_config"] = config
    else:
        extra["disable_compile"] = True
    generate = make_generate(run, prompt, s.new_tokens, **extra)
    mode = (
        "compiled (torch.compile reduce-overhead, static cache)" if want else "eager, static cache"
    )
    result: dict[str, Any] = {"compiled": want, "mode": mode, "variants": {}, "status": "ok"}
    if not want:
        print(f"compile: skipped on {run.device} (pass --compile to try); static cache run eagerly")
        result["status"] = f"skipped on {run.device} (--compile to try)"

    variants = ("plain_static", "fairsteer_static", "minimal_gate_static")
    estimate = 90.0  # seconds to compile and time one variant of the 8B shape: a guess at first,
    # then what the previous variant took
    hook_guards = torch._dynamo.config.skip_nnmodule_hook_guards
    torch._dynamo.config.skip_nnmodule_hook_guards = False  # a hook change must recompile
    outputs: dict[str, Any] = {}
    failures: dict[str, str] = {}
    try:
        for name in variants:
            if want and cuda and run.elapsed + estimate > run.args.budget_s:
                failures[name] = f"{BUDGET} (--budget-s {run.args.budget_s:.0f})"
                print(f"compile: {name} {failures[name]}")
                continue
            if want:
                torch._dynamo.reset()  # each variant compiled afresh with its own hooks
            try:
                with ExitStack() as stack:
                    stats = None
                    if name == "fairsteer_static":
                        stats = stack.enter_context(steerer.apply(hf))
                    elif name == "minimal_gate_static":
                        hook = minimal_gate_hook(run, layer, vector, coef, ALWAYS_FIRES)
                        stack.callback(hook.remove)
                    before = _dynamo_counts()
                    t = start = time.perf_counter()
                    generate()
                    sync(run.device)
                    first_s = time.perf_counter() - t
                    generate()  # CUDA graphs record on a later call than the first
                    times = []
                    for _ in range(run.args.repeats):
                        t = time.perf_counter()
                        outputs[name] = generate()
                        sync(run.device)
                        times.append(time.perf_counter() - t)
                    after = _dynamo_counts()
                    secs = statistics.median(times)
                    row: dict[str, Any] = {
                        "seconds": secs,
                        "tokens_per_s": s.new_tokens / secs,
                        "first_call_s": first_s,
                        "times": times,
                        "shape": list(outputs[name].shape),
                        **{k: after[k] - before.get(k, 0) for k in after},
                    }
                    if stats is not None:
                        row["gate_calls"] = stats.calls
                        row["gate_fire_rate"] = stats.result().rate
                    result["variants"][name] = row
                    estimate = time.perf_counter() - start
                    print(
                        f"  {name:<22} {row['tokens_per_s']:9.1f} tok/s (first call "
                        f"{first_s:.1f} s{', graph breaks ' + str(row.get('graph_breaks')) if want else ''})"
                    )
            except Exception as exc:
                traceback.print_exc()
                failures[name] = _reason(exc)
                print(
                    f"compile: not supported ({failures[name]})"
                    if want
                    else f"{name}: {failures[name]}"
                )
                if not want:
                    raise
    finally:
        torch._dynamo.config.skip_nnmodule_hook_guards = hook_guards
        if want:
            torch._dynamo.reset()
        free(run.device)
    if failures:
        result["failures"] = failures
        ran = [n for n in variants if n in result["variants"]]
        errors = [why for why in failures.values() if not why.startswith(BUDGET)]
        if ran:
            result["status"] = "partial"
        elif errors:
            result["status"] = f"not supported ({errors[0]})"
        else:
            result["status"] = BUDGET
    rows = result["variants"]
    eager = run.cache.get("eager_tokens_batch1", {})
    if "plain_static" in rows and "fairsteer_static" in rows:
        result["steering_changed_output"] = not torch.equal(
            outputs["plain_static"], outputs["fairsteer_static"]
        )
        result["fairsteer_vs_plain"] = (
            rows["fairsteer_static"]["tokens_per_s"] / rows["plain_static"]["tokens_per_s"]
        )
    pairs = (  # (variant, eager reference): fractions of equal tokens (bf16 may flip near-ties)
        ("plain_static", "plain_hf"),
        ("fairsteer_static", "fast_path_static"),
        ("minimal_gate_static", "fast_path_static"),
    )
    for name, ref in pairs:
        if name in outputs and ref in eager:
            same = outputs[name].cpu() == eager[ref]
            result[f"{name}_same_tokens_as_eager_{ref}"] = float(same.float().mean())
    return result


def bandwidth(run: Run) -> dict[str, Any]:
    tbps, source = hbm_tbps(run.device, run.args.hbm_tbps)
    weight_bytes = run.out["model"]["weight_bytes"]
    streamed = weight_bytes - run.out["model"]["input_embedding_bytes"]
    result: dict[str, Any] = {
        "hbm_tbps": tbps,
        "hbm_source": source,
        "weight_bytes": weight_bytes,
        "bound_tokens_per_s": tbps * 1e12 / weight_bytes if tbps else None,
        "bound_tokens_per_s_without_embedding": tbps * 1e12 / streamed if tbps else None,
        "measured_copy_tbps": copy_tbps(run.device),
    }
    candidates = {}
    gen = run.out.get("generation", {}).get("batch1", {}).get("results", {})
    if "fast_path_fairsteer" in gen:
        candidates["eager_fast_path_fairsteer"] = gen["fast_path_fairsteer"]["tokens_per_s"]
    comp = run.out.get("compile", {})
    if "fairsteer_static" in comp.get("variants", {}):
        key = "compiled" if comp.get("compiled") else "eager"
        candidates[f"{key}_static_cache_fairsteer"] = comp["variants"]["fairsteer_static"][
            "tokens_per_s"
        ]
    result["steered_batch1_tokens_per_s"] = candidates
    if candidates:
        best = max(candidates, key=lambda k: candidates[k])
        result["best"] = best
        if result["bound_tokens_per_s"]:
            result["fraction_of_bound"] = candidates[best] / result["bound_tokens_per_s"]
    bound = result["bound_tokens_per_s"]
    print(
        f"bandwidth: {weight_bytes / 1e9:.3g} GB of weights, HBM {tbps or '?'} TB/s ({source}); "
        + (f"bound {bound:.0f} tok/s at batch 1" if bound else "no bound")
        + (
            f"; measured copy {result['measured_copy_tbps']:.2f} TB/s"
            if result["measured_copy_tbps"]
            else ""
        )
    )
    for name, v in candidates.items():
        frac = f" = {v / bound:.2f}x the bound" if bound else ""
        print(f"  {name:<34} {v:9.1f} tok/s{frac}")
    return result


# ----------------------------------------------------------------------------------- targets


def targets(run: Run) -> list[dict[str, Any]]:
    out = run.out

    def get(*path: str) -> float | None:
        node: Any = out
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) and math.isfinite(node) else None

    rows = []

    def add(name: str, value: float | None, op: str, target: float | None) -> None:
        passed = None
        if value is not None and target is not None:
            passed = value >= target if op == ">=" else value <= target
        rows.append({"name": name, "value": value, "op": op, "target": target, "passed": passed})

    ext = ("extraction", "results")
    add(
        "extraction: lean HF path / plain HF forward",
        get(*ext, "fairlens_lean_hf_all_layers", "ratio_vs_plain_hf"),
        ">=",
        0.9,
    )
    add(
        "extraction: TL path / plain HF forward",
        get(*ext, "fairlens_tl_all_layers", "ratio_vs_plain_hf"),
        "info",
        None,
    )
    for b in (1, 8):
        gen = ("generation", f"batch{b}")
        add(
            f"steered generation b{b} / plain HF generate",
            get(*gen, "results", "fast_path_fairsteer", "ratio_vs_plain_hf"),
            ">=",
            0.9,
        )
    for b in (1, 8):
        add(
            f"gate overhead b{b} (dynamic - static) / static",
            get("generation", f"batch{b}", "gate_overhead"),
            "<=",
            0.03,
        )
    add(
        "batch-1 steered generation / bandwidth bound",
        get("bandwidth", "fraction_of_bound"),
        ">=",
        0.5,
    )
    add("search: prefix-cached vs re-scoring (x)", get("search", "speedup"), "info", None)
    add("probes: batched vs sklearn (x)", get("probes", "speedup"), "info", None)
    add(
        "compile: FairSteer / plain, static cache b1",
        get("compile", "fairsteer_vs_plain"),
        "info",
        None,
    )
    return rows


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("\n| measured (same run, medians) | value | target | |")
    print("|---|---|---|---|")
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:.4f}"
        target = "" if r["target"] is None else f"{r['op']} {r['target']}"
        verdict = {True: "PASS", False: "FAIL", None: "n/a" if r["op"] != "info" else ""}[
            r["passed"]
        ]
        print(f"| {r['name']} | {value} | {target} | {verdict} |")


def write_json(run: Run, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": machine(run.device),
        "python": sys.version.split()[0],
        "fairlens": _fairlens_origin(),
        "config": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(run.args).items()},
            "sizes": run.sizes.__dict__,
        },
        **run.out,
        "errors": run.errors,
        "elapsed_s": run.elapsed,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str, allow_nan=False))
    tmp.replace(path)


def _fairlens_origin() -> dict[str, str]:
    import fairlens

    return {
        "version": getattr(fairlens, "__version__", "?"),
        "path": str(Path(fairlens.__file__).parent),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cuda = args.device.startswith("cuda")
    if args.threads:
        torch.set_num_threads(args.threads)
    elif not cuda:
        torch.set_num_threads(1)
    dtype = torch.bfloat16 if cuda else torch.float32
    if args.dtype != "auto":
        dtype = getattr(torch, args.dtype)
    run = Run(args, args.device, dtype, sizes_for(args, cuda))
    path = args.out or RESULTS / f"gpu-{args.device.split(':')[0]}.json"
    origin = _fairlens_origin()
    print(
        f"python {sys.version.split()[0]}, torch {torch.__version__}, fairlens {origin['version']} "
        f"from {origin['path']}, device {args.device}"
        + (
            f" ({torch.cuda.get_device_name()})"
            if cuda
            else f", {torch.get_num_threads()} thread(s)"
        )
    )
    sections: list[tuple[str, Callable[[Run], dict[str, Any]]]] = [
        ("model", build),
        ("extraction", extraction),
        ("generation", generation),
        ("compile", compile_section),
        ("bandwidth", bandwidth),
        ("search", search),  # no target: after the targets' sections, within the budget
        ("probes", probes),
    ]
    for name, fn in sections:
        if name != "model" and run.hf is None:
            run.errors[name] = "skipped: no model"
            continue
        if name in ("search", "probes") and cuda and run.elapsed > args.budget_s:
            print(f"\n== {name}: {BUDGET} (--budget-s {args.budget_s:.0f})")
            run.out[name] = {"status": BUDGET}
            continue
        print(f"\n== {name} (at {run.elapsed:.0f} s)", flush=True)
        t = time.perf_counter()
        try:
            result = fn(run)
            result["section_s"] = time.perf_counter() - t
            run.out[name] = result
        except Exception as exc:
            traceback.print_exc()
            run.errors[name] = _reason(exc)
        if name == "extraction":  # the TL twin is not needed any more
            run.hooked = None
            free(run.device)
        run.out["targets"] = targets(run)
        write_json(run, path)
        sys.stdout.flush()
    run.out["targets"] = targets(run)
    print_targets(run.out["targets"])
    write_json(run, path)
    print(f"\nwrote {path} ({run.elapsed:.0f} s)")
    if run.errors:
        print(f"errors: {json.dumps(run.errors, indent=2)}")
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
