"""TransformerLens config builders, one per family: HF config -> ``HookedTransformerConfig`` fields.

Each mirrors what TransformerLens' own ``convert_hf_model_config`` does for the architecture, but
reads a config object already in hand (TL's version looks the model up by its hub name, which needs
the network and does not know local checkpoints of Gemma-2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fairlens.errors import ModelLoadError
from fairlens.model_types import HFConfig

TLConfigBuilder = Callable[[Any], dict[str, Any]]


def rope_theta(hf_config: HFConfig, default: float | None = None) -> float:
    """``rope_theta`` from a transformers 5 ``rope_parameters`` dict or the older attribute."""
    params = getattr(hf_config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    if theta is None:
        theta = getattr(hf_config, "rope_theta", None)
    if theta is None:
        if default is not None:
            return default
        raise ModelLoadError(
            "The model config has no rope_theta.", "Check the config.json of the checkpoint."
        )
    return float(theta)


def _partial_rotary(hf_config: HFConfig, attr: str) -> float:
    params = getattr(hf_config, "rope_parameters", None) or {}
    value = params.get("partial_rotary_factor") if isinstance(params, dict) else None
    if value is None:
        value = getattr(hf_config, attr, None)
    return 1.0 if value is None else float(value)


def _n_kv(hf_config: HFConfig) -> int | None:
    n_kv = getattr(hf_config, "num_key_value_heads", None) or hf_config.num_attention_heads
    return n_kv if n_kv != hf_config.num_attention_heads else None


def _head_dim(hf_config: HFConfig) -> int:
    return int(
        getattr(hf_config, "head_dim", None)
        or hf_config.hidden_size // hf_config.num_attention_heads
    )


def llama_config(hf_config: HFConfig) -> dict[str, Any]:
    """Llama, Mistral and Qwen2: pre-RMSNorm, rotary on the whole head, gated SiLU MLP, GQA."""
    d_head = _head_dim(hf_config)
    return {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": hf_config.num_attention_heads,
        "n_key_value_heads": _n_kv(hf_config),
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "rotary_base": rope_theta(hf_config),
        "rotary_adjacent_pairs": False,
        "gated_mlp": True,
        "final_rms": True,
        "eps": hf_config.rms_norm_eps,
    }


def gemma2_config(hf_config: HFConfig) -> dict[str, Any]:
    """Gemma-2: RMSNorm before *and* after attention and MLP, soft-capped scores and logits."""
    d_head = _head_dim(hf_config)
    n_layers = hf_config.num_hidden_layers
    layer_types = getattr(hf_config, "layer_types", None)
    if layer_types:
        attn_types = ["local" if t == "sliding_attention" else "global" for t in layer_types]
    else:  # HF's default: even layers slide
        attn_types = ["local" if i % 2 == 0 else "global" for i in range(n_layers)]
    attn_cap = getattr(hf_config, "attn_logit_softcapping", None)
    final_cap = getattr(hf_config, "final_logit_softcapping", None)
    return {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": hf_config.num_attention_heads,
        "n_key_value_heads": _n_kv(hf_config),
        "d_mlp": hf_config.intermediate_size,
        "n_layers": n_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "d_vocab": hf_config.vocab_size,
        "act_fn": getattr(hf_config, "hidden_activation", None) or hf_config.hidden_act,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_dim": d_head,
        "rotary_base": rope_theta(hf_config),
        "rotary_adjacent_pairs": False,
        "use_attn_scale": True,
        "attn_scale": math.sqrt(hf_config.query_pre_attn_scalar),
        "window_size": hf_config.sliding_window,
        "use_local_attn": True,
        "attn_types": attn_types,
        "attn_scores_soft_cap": float(attn_cap) if attn_cap else -1.0,
        "output_logits_soft_cap": float(final_cap) if final_cap else -1.0,
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
        "eps": hf_config.rms_norm_eps,
    }


def gpt2_config(hf_config: HFConfig) -> dict[str, Any]:
    """GPT-2: pre-LayerNorm, learned absolute positions, GELU MLP, MHA with fused QKV."""
    return {
        "d_model": hf_config.n_embd,
        "d_head": hf_config.n_embd // hf_config.n_head,
        "n_heads": hf_config.n_head,
        "d_mlp": hf_config.n_inner or 4 * hf_config.n_embd,
        "n_layers": hf_config.n_layer,
        "n_ctx": hf_config.n_positions,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.activation_function,
        "use_attn_scale": getattr(hf_config, "scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": hf_config.scale_attn_by_inverse_layer_idx,
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
        "eps": hf_config.layer_norm_epsilon,
    }


def gpt_neox_config(hf_config: HFConfig) -> dict[str, Any]:
    """GPT-NeoX (Pythia): LayerNorm, partial rotary, attention and MLP in parallel by default."""
    d_head = hf_config.hidden_size // hf_config.num_attention_heads
    return {
        "d_model": hf_config.hidden_size,
        "d_head": d_head,
        "n_heads": hf_config.num_attention_heads,
        "d_mlp": hf_config.intermediate_size,
        "n_layers": hf_config.num_hidden_layers,
        "n_ctx": hf_config.max_position_embeddings,
        "d_vocab": hf_config.vocab_size,
        "act_fn": hf_config.hidden_act,
        "use_attn_scale": True,
        "parallel_attn_mlp": getattr(hf_config, "use_parallel_residual", True),
        "normalization_type": "LN",
        "positional_embedding_type": "rotary",
        "rotary_dim": round(_partial_rotary(hf_config, "rotary_pct") * d_head),
        "rotary_base": rope_theta(hf_config, default=10000.0),
        "rotary_adjacent_pairs": False,
        "eps": hf_config.layer_norm_eps,
    }


def phi3_config(hf_config: HFConfig) -> dict[str, Any]:
    """Phi-3: the Llama recipe with fused QKV and gate/up projections (the converter splits them)."""
    d_head = _head_dim(hf_config)
    window = getattr(hf_config, "sliding_window", None)
    cfg = {
        **llama_config(hf_config),
        "rotary_dim": round(_partial_rotary(hf_config, "partial_rotary_factor") * d_head),
    }
    if window:
        cfg.update(
            window_size=window,
            use_local_attn=True,
            attn_types=["local"] * hf_config.num_hidden_layers,
        )
    return cfg


def gemma_logit_cap(hf_config: HFConfig) -> float | None:
    cap = getattr(hf_config, "final_logit_softcapping", None)
    return float(cap) if cap else None
