"""Models: loading a spec, the embedded (wheel-shipped) models, the family registry, the TL adapter.

* :mod:`~fairlens.models.loading` — one spec string to a ``HookedTransformer`` (:func:`load_model`) or
  the plain ``transformers`` model (:func:`load_hf`);
* :mod:`~fairlens.models.embedded` — models shipped inside PyPI wheels (:data:`EMBEDDED_MODELS`);
* :mod:`~fairlens.models.families` — :data:`FAMILIES`, where each architecture keeps its parts;
* :mod:`~fairlens.models.tl_adapter` — the only module that talks to TransformerLens internals;
* :mod:`~fairlens.models.info` — :class:`ModelInfo`, the identity artifacts are matched against.
"""

from __future__ import annotations

from fairlens.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS, EmbeddedModel
from fairlens.models.families import FAMILIES, ModelFamily, family_of
from fairlens.models.info import ModelInfo, attach_model_info, get_model_info, weights_sha
from fairlens.models.loading import hooked_twin, load_hf, load_model, resolve_spec
from fairlens.models.tl_adapter import WeightProcessing

__all__ = [
    "DEFAULT_MODEL",
    "EMBEDDED_MODELS",
    "FAMILIES",
    "EmbeddedModel",
    "ModelFamily",
    "ModelInfo",
    "WeightProcessing",
    "attach_model_info",
    "family_of",
    "get_model_info",
    "hooked_twin",
    "load_hf",
    "load_model",
    "resolve_spec",
    "weights_sha",
]
