"""Shared helpers for the benchmarks: model choice per device, timing, JSON results.

Benchmarks are not tests. Each script measures the compared variants side by side in one process,
on the same inputs, and prints ratios (this machine is shared and noisy, so absolute numbers drift;
ratios measured in one run are what we compare).

CPU: the embedded SmolLM2-135M with its real weights. CUDA (when present): a random-init model of
the Llama-3-8B shape in bfloat16 (same compute as the real model; no weights needed).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def parse_args(description: str, **extra: Any) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    for name, (kind, default, help_text) in extra.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=help_text)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    return args


def load_models(device: str) -> tuple[Any, Any, Any, str]:
    """``(hooked, hf, tokenizer, description)`` for the device (see the module docstring)."""
    if device == "cpu":
        from fairlens.models import load_hf, load_model

        hooked = load_model("smollm2-135m")
        hf, tok, _ = load_hf("smollm2-135m")
        return hooked, hf, tok, "SmolLM2-135M-Instruct (real weights, float32)"
    hooked, hf, tok = random_llama(device, torch.bfloat16)
    return hooked, hf, tok, "random-init Llama-3-8B shape (bfloat16)"


LLAMA3_8B: dict[str, Any] = {
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
"""The Llama-3-8B shape (``LlamaConfig`` fields): same compute and weight bytes as the real model."""


def random_llama(
    device: str, dtype: torch.dtype, *, hooked: bool = True, seed: int = 0, **overrides: Any
) -> tuple[Any, Any, Any]:
    """``(hooked or None, hf, tokenizer)``: a random-init Llama of the Llama-3-8B shape (fields of
    ``overrides`` replace the shape's, e.g. ``num_hidden_layers=4``), built directly on ``device``
    in ``dtype`` (no float32 copy, no host round trip), with its HookedTransformer twin (same
    weights, unprocessed) and fairlens' byte-level test tokenizer (ids are what the benchmarks use;
    the tokenizer gives the pad id)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from fairlens.models.tl_adapter import WeightProcessing, hooked_from_hf
    from fairlens.testing import tiny_tokenizer

    cfg = LlamaConfig(**{**LLAMA3_8B, **overrides})
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)  # the same random weights every run (CPU and CUDA generators)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype (RoPE buffers stay float32)
    try:
        with torch.device(device):
            hf = LlamaForCausalLM(cfg).eval()
    finally:
        torch.set_default_dtype(previous)
    tok = tiny_tokenizer()
    twin = None
    if hooked:
        with torch.device(device):  # TL allocates and initialises its parameters on the device
            twin = hooked_from_hf(
                hf, tok, processing=WeightProcessing(), dtype=dtype, device=device
            )
    return twin, hf, tok


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_interleaved(
    fns: dict[str, Callable[[], Any]], device: str, repeats: int
) -> dict[str, float]:
    """Median seconds per variant, running the variants round-robin so that load drifts on a shared
    machine hit all of them alike (one warm-up each first)."""
    for fn in fns.values():
        fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def machine(device: str) -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "torch": torch.__version__,
        "device": device,
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write(name: str, device: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{device.split(':')[0]}.json"
    path.write_text(json.dumps({"machine": machine(device), **payload}, indent=2))
    return path
