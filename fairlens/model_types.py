"""The types of what fairlens hooks and steers: a model and its tokenizer.

Written as types so that signatures say what they take, the type checker follows which kind of
model a branch holds (:func:`fairlens.backend.is_hooked` narrows), and the runtime type checks of
the test suite (jaxtyping + beartype, ``tests/conftest.py``) refuse anything else. The checker
sees the library classes; at run time the aliases are the common base classes, so importing
fairlens imports neither TransformerLens nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import torch

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    HookedModel: TypeAlias = HookedTransformer
    HFModel: TypeAlias = PreTrainedModel
    Model: TypeAlias = HookedTransformer | PreTrainedModel
    Tokenizer: TypeAlias = PreTrainedTokenizerBase
    HFConfig: TypeAlias = PretrainedConfig
else:

    @runtime_checkable
    class Tokenizer(Protocol):
        """What fairlens calls on a tokenizer (every Hugging Face tokenizer has it)."""

        def __call__(self, text: Any, *args: Any, **kwargs: Any) -> Any: ...

        def encode(self, text: Any, *args: Any, **kwargs: Any) -> Any: ...

        def decode(self, token_ids: Any, *args: Any, **kwargs: Any) -> str: ...

    HookedModel: TypeAlias = torch.nn.Module
    HFModel: TypeAlias = torch.nn.Module
    Model: TypeAlias = torch.nn.Module
    HFConfig: TypeAlias = object  # a transformers PretrainedConfig (not imported at run time)

__all__ = ["HFConfig", "HFModel", "HookedModel", "Model", "Tokenizer"]
