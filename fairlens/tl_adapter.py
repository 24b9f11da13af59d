"""The one module that talks to TransformerLens internals.

Everything TL-version-specific lives here: building a ``HookedTransformerConfig`` from a Hugging Face
config, converting weights with TL's own converters, loading official TL model names, and silencing
TL 3.9's "HookedTransformer is deprecated" warning *inside* these calls only (the shim never leaks:
``warnings.catch_warnings`` restores the filter state on exit).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fairlens.errors import ModelLoadError


@dataclass(frozen=True)
class WeightProcessing:
    """TransformerLens weight processing flags. All off = the plain HF coordinates (our default).

    Folding LayerNorm or centring weights changes the residual-stream coordinates, so activations,
    probes and steering vectors fitted under one setting do not transfer to another; the flags are
    recorded in every artifact.
    """

    fold_ln: bool = False
    center_writing_weights: bool = False
    center_unembed: bool = False
    fold_value_biases: bool = False

    @classmethod
    def parse(cls, value: str | WeightProcessing) -> WeightProcessing:
        """``"none"`` (default, unprocessed) or ``"tl_default"`` (TL's from_pretrained processing)."""
        if isinstance(value, WeightProcessing):
            return value
        if value == "none":
            return cls()
        if value == "tl_default":
            return cls(True, True, True, True)
        raise ModelLoadError(
            f"Unknown weight processing {value!r}; expected 'none' or 'tl_default'.",
            "Pass processing='none' (plain HF coordinates) or processing='tl_default'.",
        )

    @property
    def is_identity(self) -> bool:
        return not any(asdict(self).values())

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


@contextmanager
def _quiet_tl() -> Iterator[None]:
    """Hide TL 3.9's deprecation notices for HookedTransformer for the duration of one call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HookedTransformer.*deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="transformer_lens")
        yield


def _rope_theta(hf_config: Any) -> float:
    params = getattr(hf_config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    if theta is None:
        theta = getattr(hf_config, "rope_theta", None)
    if theta is None:
        raise ModelLoadError("The model config has no rope_theta.", "Use a Llama/Qwen2 checkpoint.")
    return float(theta)


def _converter(architecture: str) -> Callable[[Any, Any], dict[str, torch.Tensor]]:
    from transformer_lens.pretrained import weight_conversions as wc

    converters: dict[str, Callable[[Any, Any], dict[str, torch.Tensor]]] = {
        "LlamaForCausalLM": wc.convert_llama_weights,
        "MistralForCausalLM": wc.convert_mistral_weights,
        "Qwen2ForCausalLM": wc.convert_qwen2_weights,
    }
    if architecture not in converters:
        raise ModelLoadError(
            f"Architecture {architecture!r} is not supported for local checkpoints; "
            f"supported: {', '.join(sorted(converters))}.",
            "Use a Llama, Mistral or Qwen2 checkpoint, or a TransformerLens official model name.",
        )
    return converters[architecture]


SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


def hooked_config_from_hf(
    hf_config: Any, *, dtype: torch.dtype = torch.float32, n_ctx: int = 2048, device: str = "cpu"
) -> Any:
    """Build the ``HookedTransformerConfig`` for a Llama-family HF config (GQA and tied embeddings aware)."""
    from transformer_lens import HookedTransformerConfig

    from fairlens.models import _architecture_name

    architecture = _architecture_name(hf_config)
    _converter(architecture)  # validates the architecture early with a clear message
    n_heads = hf_config.num_attention_heads
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
    n_kv = getattr(hf_config, "num_key_value_heads", None) or n_heads
    return HookedTransformerConfig(
        d_model=hf_config.hidden_size,
        d_head=d_head,
        n_heads=n_heads,
        n_key_value_heads=n_kv if n_kv != n_heads else None,
        d_mlp=hf_config.intermediate_size,
        n_layers=hf_config.num_hidden_layers,
        n_ctx=min(n_ctx, getattr(hf_config, "max_position_embeddings", n_ctx)),
        d_vocab=hf_config.vocab_size,
        act_fn=hf_config.hidden_act,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=d_head,
        rotary_base=_rope_theta(hf_config),
        rotary_adjacent_pairs=False,
        gated_mlp=True,
        final_rms=True,
        eps=hf_config.rms_norm_eps,
        original_architecture=architecture,
        default_prepend_bos=False,
        dtype=dtype,
        device=device,
    )


def hooked_from_hf(
    hf_model: Any,
    tokenizer: Any,
    *,
    processing: WeightProcessing,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    n_ctx: int = 2048,
) -> Any:
    """Convert a loaded HF causal LM into a ``HookedTransformer`` with TL's own weight converter.

    The tokenizer's BOS behaviour is kept as the tokenizer defines it (``default_prepend_bos=False``):
    fairlens tokenizes prompts itself, so TL never adds a token the HF model would not see.
    """
    from transformer_lens import HookedTransformer

    cfg = hooked_config_from_hf(hf_model.config, dtype=dtype, n_ctx=n_ctx, device=device)
    convert = _converter(cfg.original_architecture)
    with _quiet_tl(), torch.no_grad():
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        # TL swaps in a copy of the tokenizer that always prepends BOS; keep the model's own
        # tokenizer so TL and HF see identical token ids (SmolLM2's tokenizer adds no BOS).
        model.tokenizer = tokenizer
        state_dict = convert(hf_model, cfg)
        state_dict = {k: v.detach().to(dtype) for k, v in state_dict.items()}
        model.load_and_process_state_dict(
            state_dict,
            fold_ln=processing.fold_ln,
            center_writing_weights=processing.center_writing_weights,
            center_unembed=processing.center_unembed,
            fold_value_biases=processing.fold_value_biases,
            refactor_factored_attn_matrices=False,
        )
    if str(device) != "cpu":
        model.to(device, print_details=False)
    model.eval()
    return model


def official_model_names() -> list[str]:
    """TransformerLens' official model names (a local list; no network)."""
    from transformer_lens.loading_from_pretrained import OFFICIAL_MODEL_NAMES

    return list(OFFICIAL_MODEL_NAMES)


def resolve_official_name(name: str) -> str | None:
    """The official TL name for ``name`` or one of its aliases, else ``None``."""
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    return make_model_alias_map().get(name.lower())


def hooked_from_official(
    name: str, *, processing: WeightProcessing, dtype: torch.dtype, device: str
) -> Any:
    """Load an official TL model (needs the hub or a populated HF cache)."""
    from transformer_lens import HookedTransformer

    with _quiet_tl():
        model = HookedTransformer.from_pretrained_no_processing(
            name,
            fold_ln=processing.fold_ln,
            center_writing_weights=processing.center_writing_weights,
            center_unembed=processing.center_unembed,
            fold_value_biases=processing.fold_value_biases,
            dtype=dtype,
            device=device,
        )
    model.eval()
    return model
