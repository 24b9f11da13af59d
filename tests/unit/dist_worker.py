"""One process of the data-parallel equality test (tests/unit/test_distributed.py).

``python dist_worker.py OUT`` runs the loops that share their batches among processes on a tiny
random model and writes what this process holds afterwards to ``OUT/rank<r>.*``; run alone or under
``torch.distributed.run`` with several processes, every process must hold the same numbers.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import astuple
from pathlib import Path

import torch
from safetensors.torch import save_file


def store_only(out: Path, crash: bool) -> None:
    """Only the streamed extraction; with ``crash`` the last rank fails after its first chunk."""
    torch.set_num_threads(1)
    from fairlens.activations import streaming
    from fairlens.distributed import launched
    from fairlens.scoring.letters import prompt_tokens
    from fairlens.testing import tiny_hooked
    from tests.conftest import synthetic_items

    w = launched()
    _, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=2, per_template=6, categories=("Age",))[:11]
    seqs = prompt_tokens(hf, items, tokenizer=tok)
    if crash and w.rank == w.size - 1:
        real, calls = streaming.extract_activations, []

        def failing(*args, **kwargs):
            calls.append(1)
            if len(calls) > 1:
                raise RuntimeError("injected crash")
            return real(*args, **kwargs)

        streaming.extract_activations = failing  # type: ignore[assignment]
    store = streaming.extract_to_disk(
        hf, seqs, out / "store", layers=[1], chunk_size=2, batch_size=2, progress=False
    )
    acts = torch.from_numpy(streaming.open_streamed(store)[0].copy())
    save_file({"stored": acts}, out / f"store-rank{w.rank}.safetensors")


def main(out: Path) -> None:
    torch.set_num_threads(1)
    from fairlens.activations.extraction import extract_activations
    from fairlens.activations.streaming import extract_to_disk, open_streamed
    from fairlens.backend.generation import generate_greedy
    from fairlens.distributed import launched
    from fairlens.scoring.letters import prompt_tokens, score_items
    from fairlens.scoring.likelihood import text_logprobs
    from fairlens.steer.steerer import Steerer, SteeringConfig
    from fairlens.testing import tiny_hooked
    from tests.conftest import synthetic_items

    rank = launched().rank
    _, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=2, per_template=6, categories=("Age",))[:11]
    g = torch.Generator().manual_seed(1)
    vector, coef = torch.randn(64, generator=g), torch.randn(64, generator=g) * 0.3
    steerer = Steerer("blocks.1.hook_resid_post", vector, coef, 0.0, SteeringConfig(alpha=2.0))
    tensors: dict[str, torch.Tensor] = {}
    facts: dict[str, object] = {}

    tensors["letter"] = score_items(hf, items, tokenizer=tok, batch_size=3, progress=False).scores
    tensors["loglik"] = score_items(hf, items, mode="loglik", tokenizer=tok, batch_size=4).scores
    with steerer.apply(hf) as stats:
        tensors["steered"] = score_items(hf, items, tokenizer=tok, batch_size=3).scores
    facts["steered_gate"] = list(astuple(stats.result()))
    seqs = prompt_tokens(hf, items, tokenizer=tok)
    tensors["acts"] = extract_activations(hf, seqs, layers=[0, 2], batch_size=3).acts
    tensors["one"] = extract_activations(hf, seqs[:1], layers=[1]).acts  # fewer batches than ranks
    store = extract_to_disk(hf, seqs, out / "store", layers=[1], chunk_size=2, batch_size=2,
                            progress=False)  # fmt: skip
    tensors["stored"] = torch.from_numpy(open_streamed(store)[0].copy())
    texts = [it.context for it in items[:7]]
    gen_steerer = steerer.with_config(positions="generated")
    with gen_steerer.apply(hf, record=True) as stats:
        gen = generate_greedy(hf, tok, texts, max_new_tokens=4, batch_size=2, gate=stats)
    facts["generated"] = list(gen.texts)
    facts["gen_fired"] = [list(f) for f in gen.gate_fired or ()]
    facts["gen_gate"] = list(astuple(stats.result()))
    with steerer.with_config(positions="all").apply(hf, record=True) as stats:
        scores = text_logprobs(hf, tok, texts, batch_size=3, gate=stats)
    tensors["text_lp"] = torch.cat(list(scores.logprobs))
    tensors["text_p"] = torch.cat(list(scores.gate_p_unbiased or ()))
    tensors["text_fired"] = torch.cat(list(scores.gate_fired or ())).to(torch.uint8)
    facts["text_gate"] = list(astuple(stats.result()))
    from fairlens.directions.estimators import OptimisedDirection
    from fairlens.scoring.letters import letter_token_ids
    from fairlens.scoring.prefix_cache import PrefixCache

    hooks = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"]
    cache = PrefixCache(hf, seqs, read_ids=letter_token_ids(tok), capture=hooks, tokenizer=tok,
                        batch_size=2)  # fmt: skip
    tensors["prefix_base"] = cache.base_logits
    tensors["prefix_acts"] = cache.base_acts[hooks[1]]
    edits = [{hooks[0]: vector * k} for k in (0.5, 1.0, 2.0)]
    tensors["prefix_edits"] = cache.logits(edits)
    labels = torch.tensor([it.is_ambiguous for it in items], dtype=torch.long)
    answers = torch.tensor([it.unknown_loc for it in items])
    opt = OptimisedDirection(steps=7, seed=3).fit(
        y=labels, cache=cache, answers=answers, hooks=hooks, residual_norms=[1.0, 2.0]
    )
    tensors["optimised"] = opt.directions_
    save_file({k: v.contiguous() for k, v in tensors.items()}, out / f"rank{rank}.safetensors")
    (out / f"rank{rank}.json").write_text(json.dumps(facts))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    mode = sys.argv[2] if len(sys.argv) > 2 else "all"
    if mode == "all":
        main(Path(sys.argv[1]))
    else:
        store_only(Path(sys.argv[1]), crash=mode == "crash")
