"""What a loaded model is: :class:`ModelInfo`, recorded on the model and in every artifact fitted on it.

Artifacts compare fingerprints (shapes, weight processing and a hash of a few weight tensors) so a
steering vector fitted on one model is never applied to another.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from fairlens.errors import ArtifactError, ModelLoadError
from fairlens.model_types import HookedModel, Model
from fairlens.models.tl_adapter import WeightProcessing

Source = Literal["embedded", "gguf", "hf_dir", "tl_official"]


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is: recorded on the model and in every artifact fitted on it."""

    spec: str
    source: Source
    name: str
    architecture: str
    d_model: int
    n_layers: int
    n_heads: int
    d_vocab: int
    processing: WeightProcessing
    dtype: str
    weights_sha: str

    def fingerprint(self) -> dict[str, Any]:
        """JSON-safe identity used to match artifacts to models."""
        out = asdict(self)
        out["processing"] = self.processing.to_dict()
        return out

    def check_matches(self, fingerprint: dict[str, Any], *, what: str = "artifact") -> None:
        """Raise :class:`ArtifactError` unless ``fingerprint`` describes the same weights and coordinates."""
        for key in ("d_model", "n_layers", "weights_sha", "processing"):
            mine = self.fingerprint()[key]
            theirs = fingerprint.get(key)
            if mine != theirs:
                raise ArtifactError(
                    f"This {what} was fitted on model {fingerprint.get('name')!r} "
                    f"({key}={theirs}) but is being applied to {self.name!r} ({key}={mine}).",
                    f"Load the model it was fitted on (spec {fingerprint.get('spec')!r}) or refit it "
                    "on this model.",
                )


def weights_sha(tensors: list[torch.Tensor]) -> str:
    """Short sha256 over a few weight tensors (as float32 bytes): identifies the weights cheaply."""
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().to("cpu", torch.float32).reshape(-1)
        digest.update(flat[: 1 << 16].numpy().tobytes())
    return digest.hexdigest()[:16]


def get_model_info(model: Model) -> ModelInfo:
    """The :class:`ModelInfo` of a model returned by :func:`load_model` (or attached by hand)."""
    info = getattr(model, "fairlens_info", None)
    if not isinstance(info, ModelInfo):
        raise ModelLoadError(
            "This model carries no fairlens ModelInfo (it was not loaded with fairlens.load_model).",
            "Load it with fairlens.load_model(...) or call fairlens.models.attach_model_info(model, ...).",
        )
    return info


def set_model_info(model: Model, info: ModelInfo) -> None:
    """Record ``info`` on ``model`` (a plain attribute: a fitted artifact checks it is applied to
    the same weights)."""
    object.__setattr__(model, "fairlens_info", info)


def attach_model_info(
    model: HookedModel, name: str = "custom", processing: WeightProcessing | None = None
) -> ModelInfo:
    """Attach a :class:`ModelInfo` to a ``HookedTransformer`` built by hand (e.g. random-init tests)."""
    cfg = model.cfg
    info = ModelInfo(
        spec=name,
        source="hf_dir",
        name=name,
        architecture=str(cfg.original_architecture or "custom"),
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_vocab=cfg.d_vocab,
        processing=processing or WeightProcessing(),
        dtype=str(cfg.dtype).removeprefix("torch."),
        weights_sha=weights_sha([model.W_E, model.W_Q[0]]),
    )
    set_model_info(model, info)
    return info
