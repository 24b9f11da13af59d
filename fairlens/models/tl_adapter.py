"""The one module that talks to TransformerLens internals.

Everything TL-version-specific lives here: building a ``HookedTransformerConfig`` from a Hugging Face
config and converting weights with TL's own converters (both as the family registry in
:mod:`fairlens.models.families` says), loading official TL model names, and silencing
TL 3.9's "HookedTransformer is deprecated" warning *inside* these calls only (the shim never leaks:
``warnings.catch_warnings`` restores the filter state on exit).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fairlens.errors import ModelLoadError
from fairlens.model_types import HFConfig, HFModel, HookedModel, Tokenizer
from fairlens.models.families import family_of


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


def hooked_config_from_hf(
    hf_config: HFConfig,
    *,
    dtype: torch.dtype = torch.float32,
    n_ctx: int = 2048,
    device: str = "cpu",
) -> Any:
    """The ``HookedTransformerConfig`` for an HF config of any registered family (GQA, tied embeddings aware)."""
    from transformer_lens import HookedTransformerConfig

    family = family_of(hf_config)
    fields = family.build_tl_config(hf_config, n_ctx=n_ctx, dtype=dtype, device=device)
    return HookedTransformerConfig(**fields)


def hooked_from_hf(
    hf_model: HFModel,
    tokenizer: Tokenizer,
    *,
    processing: WeightProcessing,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    n_ctx: int = 2048,
) -> HookedModel:
    """Convert a loaded HF causal LM into a ``HookedTransformer`` with TL's own weight converter.

    The tokenizer's BOS behaviour is kept as the tokenizer defines it (``default_prepend_bos=False``):
    fairlens tokenizes prompts itself, so TL never adds a token the HF model would not see.
    """
    from transformer_lens import HookedTransformer

    cfg = hooked_config_from_hf(hf_model.config, dtype=dtype, n_ctx=n_ctx, device=device)
    family = family_of(hf_model.config)
    with _quiet_tl(), torch.no_grad():
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        # TL swaps in a copy of the tokenizer that always prepends BOS; keep the model's own
        # tokenizer so TL and HF see identical token ids (SmolLM2's tokenizer adds no BOS).
        model.tokenizer = tokenizer
        state_dict = family.convert_weights(hf_model, cfg)
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
