"""Tiny random-init models and a byte-level tokenizer for tests, examples and benchmarks.

Nothing here touches files or the network: a grouped-query-attention Llama with random weights and
a byte-level BPE tokenizer whose only merges make " A", " B", " C" single tokens (so letter scoring
works exactly as on a real model).
"""

from __future__ import annotations

from typing import Any

import torch

from fairlens.models.tl_adapter import WeightProcessing, hooked_from_hf

_SPECIALS = ("<pad>", "<eos>")


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer (256 byte tokens + " A"/" B"/" C" + <pad>/<eos>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    merges = []
    for letter in "ABC":
        vocab["Ġ" + letter] = len(vocab)
        merges.append(("Ġ", letter))
    for special in _SPECIALS:
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")


def tiny_llama(
    *,
    n_layers: int = 3,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    d_mlp: int = 128,
    vocab_size: int | None = None,
    seed: int = 0,
    tie_word_embeddings: bool = True,
) -> Any:
    """A random-init HF ``LlamaForCausalLM`` (float32, eval mode) with grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if vocab_size is None:
        vocab_size = len(tiny_tokenizer())
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        bos_token_id=None,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # larger than HF's init so that random logits are not all ~equal
        for param in model.parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
    return model.eval()


def tiny_hooked(
    *, seed: int = 0, processing: str = "none", **llama_kwargs: Any
) -> tuple[Any, Any, Any]:
    """``(hooked_transformer, hf_model, tokenizer)`` sharing the same random weights."""
    from fairlens.models import attach_model_info
    from fairlens.models.info import set_model_info

    tokenizer = tiny_tokenizer()
    hf_model = tiny_llama(seed=seed, **llama_kwargs)
    weight_processing = WeightProcessing.parse(processing)
    hooked = hooked_from_hf(hf_model, tokenizer, processing=weight_processing, n_ctx=4096)
    info = attach_model_info(hooked, name=f"tiny-llama-seed{seed}", processing=weight_processing)
    if info.processing.is_identity:  # same weights, same coordinates: one identity for both
        set_model_info(hf_model, info)
    return hooked, hf_model, tokenizer


HOW_NOT_WHAT = frozenset({"timings_s", "seconds", "out_dir", "processes"})
"""Report keys that say how long, where or on how many processes a run ran, not what it found."""


def without_keys(value: Any, keys: frozenset[str] | set[str] = HOW_NOT_WHAT) -> Any:
    """``value`` (a report, or any JSON-like nesting) with every dict entry named in ``keys``
    dropped at every depth: two runs that found the same thing compare equal."""
    if isinstance(value, dict):
        return {k: without_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without_keys(v, keys) for v in value]
    return value
