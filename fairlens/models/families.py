"""The model-family registry: where each decoder architecture keeps its parts, and how TL rebuilds it.

fairlens runs every model two ways: as a TransformerLens ``HookedTransformer`` (analysis, every hook
point) and as the plain ``transformers`` model (the fast path). A :class:`ModelFamily` says, for one
Hugging Face architecture, where the decoder blocks, attention, MLP, final norm and unembedding live
on the HF model, how to build the ``HookedTransformerConfig`` from the HF config, and which of
TransformerLens' weight converters maps the weights. :mod:`fairlens.backend` reads the module paths to
put a hook on the HF module that carries the same tensor as a TL hook point; :mod:`fairlens.models.tl_adapter`
reads the config builder and converter.

Adding a family is one entry in :data:`FAMILIES` (plus its parity test in ``tests/unit/test_families.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from fairlens.errors import ModelLoadError
from fairlens.model_types import HFConfig, Model
from fairlens.models.tl_configs import (
    TLConfigBuilder,
    gemma2_config,
    gemma_logit_cap,
    gpt2_config,
    gpt_neox_config,
    llama_config,
    phi3_config,
)


def _get(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ModelFamily:
    """Where one HF decoder architecture keeps its parts, and how TransformerLens rebuilds it.

    Attributes:
        name: Registry key (``"llama"``).
        architectures: HF ``*ForCausalLM`` class names of the family.
        model_types: HF ``config.model_type`` values (GGUF-loaded configs carry only these).
        base: Attribute of the causal LM that holds the decoder stack (``"model"``).
        layers: Attribute of ``base`` holding the ``ModuleList`` of blocks (``"layers"``).
        embed: Attribute of ``base`` with the token embedding.
        attn_out: Attribute of a block whose output is TL's ``hook_attn_out`` (the attention's
            additive contribution: Gemma-2 normalises after attention, so it is that norm).
        mlp_out: Attribute of a block whose output is TL's ``hook_mlp_out``.
        final_norm: Attribute of ``base`` with the final norm.
        unembed: Attribute of the causal LM with the unembedding.
        tl_config: Builds the ``HookedTransformerConfig`` fields from the HF config.
        converter: Name of TransformerLens' weight converter in
            ``transformer_lens.pretrained.weight_conversions``.
        logit_cap: Final-logit soft cap read from the HF config (Gemma-2), applied after ``unembed``.
        tl_architecture: ``original_architecture`` TL expects (the converter dispatches on it).
        description: One line for docs and ``fairlens models families``.
    """

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    base: str
    layers: str
    embed: str
    attn_out: str
    mlp_out: str
    final_norm: str
    unembed: str
    tl_config: TLConfigBuilder
    converter: str
    tl_architecture: str
    description: str
    logit_cap: Callable[[Any], float | None] | None = None

    def decoder(self, model: Model) -> Any:
        """The module holding embeddings, blocks and final norm (``model.model`` for Llama)."""
        return _get(model, self.base)

    def blocks(self, model: Model) -> Any:
        """The ``ModuleList`` of decoder blocks."""
        return _get(self.decoder(model), self.layers)

    def final_logits(
        self, model: Model, hidden: Float[Tensor, "*batch d_model"]
    ) -> Float[Tensor, "*batch d_vocab"]:
        """Logits from the final (normed) hidden state, soft-capped where the family does."""
        logits = _get(model, self.unembed)(hidden)
        cap = self.logit_cap(model.config) if self.logit_cap is not None else None
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    def hash_tensors(self, model: Model) -> list[Tensor]:
        """A few weight tensors that identify the weights (embedding, first block, final norm)."""
        decoder = self.decoder(model)
        first = next(p for p in self.blocks(model)[0].parameters() if p.dim() == 2)
        found = [_get(decoder, self.embed).weight, first, _get(decoder, self.final_norm).weight]
        return [_stored(model, t) for t in found]

    def build_tl_config(self, hf_config: HFConfig, **overrides: Any) -> dict[str, Any]:
        """The ``HookedTransformerConfig`` keyword arguments for ``hf_config`` (plus ``overrides``)."""
        fields = self.tl_config(hf_config)
        fields["original_architecture"] = self.tl_architecture
        fields["default_prepend_bos"] = False  # fairlens tokenizes prompts itself
        n_ctx = overrides.pop("n_ctx", None)
        if n_ctx is not None:
            fields["n_ctx"] = min(int(n_ctx), int(fields["n_ctx"]))
        fields.update(overrides)
        return fields

    def convert_weights(self, hf_model: Model, cfg: Any) -> dict[str, Tensor]:
        """TransformerLens state dict for ``hf_model`` (TL's own converter)."""
        from transformer_lens.pretrained import weight_conversions

        return getattr(weight_conversions, self.converter)(hf_model, cfg)


def _llama_layout(
    name: str,
    architecture: str,
    model_type: str,
    *,
    converter: str,
    description: str,
    tl_config: TLConfigBuilder = llama_config,
    attn_out: str = "self_attn",
    mlp_out: str = "mlp",
    logit_cap: Callable[[Any], float | None] | None = None,
) -> ModelFamily:
    """A family laid out as HF's Llama (``model.layers[i].self_attn`` / ``.mlp``, ``lm_head``)."""
    return ModelFamily(
        name=name,
        architectures=(architecture,),
        model_types=(model_type,),
        base="model",
        layers="layers",
        embed="embed_tokens",
        attn_out=attn_out,
        mlp_out=mlp_out,
        final_norm="norm",
        unembed="lm_head",
        tl_config=tl_config,
        converter=converter,
        tl_architecture=architecture,
        description=description,
        logit_cap=logit_cap,
    )


FAMILIES: dict[str, ModelFamily] = {
    "llama": _llama_layout(
        "llama",
        "LlamaForCausalLM",
        "llama",
        converter="convert_llama_weights",
        description="Llama 2/3, SmolLM2, TinyLlama and other Llama-architecture decoders",
    ),
    "qwen2": _llama_layout(
        "qwen2",
        "Qwen2ForCausalLM",
        "qwen2",
        converter="convert_qwen2_weights",
        description="Qwen2 and Qwen2.5 (incl. Coder): the Llama recipe with QKV biases",
    ),
    "mistral": _llama_layout(
        "mistral",
        "MistralForCausalLM",
        "mistral",
        converter="convert_mistral_weights",
        description="Mistral 7B and derivatives",
    ),
    "qwen3": _llama_layout(
        "qwen3",
        "Qwen3ForCausalLM",
        "qwen3",
        converter="convert_qwen3_weights",
        description="Qwen3 (dense): the Llama recipe with RMSNorm on queries and keys",
        tl_config=lambda c: {**llama_config(c), "use_qk_norm": True},
    ),
    "gemma2": _llama_layout(
        "gemma2",
        "Gemma2ForCausalLM",
        "gemma2",
        converter="convert_gemma_weights",
        description="Gemma-2 (2B/9B/27B): sandwich norms, soft-capped attention and logits",
        tl_config=gemma2_config,
        attn_out="post_attention_layernorm",  # Gemma-2 normalises each sublayer's output
        mlp_out="post_feedforward_layernorm",
        logit_cap=gemma_logit_cap,
    ),
    "gpt2": ModelFamily(
        name="gpt2",
        architectures=("GPT2LMHeadModel",),
        model_types=("gpt2",),
        base="transformer",
        layers="h",
        embed="wte",
        attn_out="attn",
        mlp_out="mlp",
        final_norm="ln_f",
        unembed="lm_head",
        tl_config=gpt2_config,
        converter="convert_gpt2_weights",
        tl_architecture="GPT2LMHeadModel",
        description="GPT-2 and GPT-2-architecture models (learned positions)",
    ),
    "gpt_neox": ModelFamily(
        name="gpt_neox",
        architectures=("GPTNeoXForCausalLM",),
        model_types=("gpt_neox",),
        base="gpt_neox",
        layers="layers",
        embed="embed_in",
        attn_out="attention",
        mlp_out="mlp",
        final_norm="final_layer_norm",
        unembed="lm_head",  # "embed_out" before transformers 5
        tl_config=gpt_neox_config,
        converter="convert_neox_weights",
        tl_architecture="GPTNeoXForCausalLM",
        description="GPT-NeoX and Pythia: parallel attention/MLP, partial rotary",
    ),
    "phi3": _llama_layout(
        "phi3",
        "Phi3ForCausalLM",
        "phi3",
        converter="convert_phi3_weights",
        description="Phi-3 and Phi-3.5 (fused QKV and gate/up projections)",
        tl_config=phi3_config,
    ),
}


def family_of(model_or_config: Any) -> ModelFamily:
    """The :class:`ModelFamily` of an HF causal LM or config, or a clear :class:`ModelLoadError`."""
    config = getattr(model_or_config, "config", model_or_config)
    archs = list(getattr(config, "architectures", None) or [])
    model_type = getattr(config, "model_type", None)
    for family in FAMILIES.values():
        if (archs and archs[0] in family.architectures) or (
            not archs and model_type in family.model_types
        ):
            return family
    for family in FAMILIES.values():  # architectures names an unknown head class: try the type
        if model_type in family.model_types:
            return family
    supported = ", ".join(f"{f.name} ({'/'.join(f.architectures)})" for f in FAMILIES.values())
    raise ModelLoadError(
        f"Model architecture {archs[0] if archs else model_type!r} is not a family fairlens knows; "
        f"supported: {supported}.",
        "Use a model of a supported family, or add one entry to fairlens.models.FAMILIES "
        "(docs/how-to/models.md).",
    )


def _stored(model: Model, tensor: Tensor) -> Tensor:
    """``tensor``, or, when a device map offloaded it (a ``meta`` placeholder), the stored value
    accelerate loads for each forward call (so a split model has the same identity)."""
    if not tensor.is_meta:
        return tensor
    for module in model.modules():
        stored = getattr(getattr(module, "_hf_hook", None), "weights_map", None)
        if stored is None:
            continue
        for name, param in module.named_parameters(recurse=False):
            if param is tensor:
                return stored[name]
    raise ModelLoadError(
        "a weight of the model sits on the meta device and no device-map hook holds its value.",
        "load the model with every weight on a device, 'cpu' or 'disk'.",
    )
