"""The dequantised-model cache: a GGUF turned once into a Hugging Face folder (safetensors), found
again by the GGUF's content, checked on every load and rebuilt when damaged.

Dequantising takes ~20 s for SmolLM2 and minutes for larger models, so :func:`cached_folder` keeps the
result under ``cache_dir()/models/``. The folder is named by a fingerprint of the GGUF's *content*
(its size and sampled blocks), not by its path, so reinstalling the same wheel into a new virtual
environment reuses it instead of writing another copy. Each folder records the size of every file it
wrote and the sha256 of its small ones (``fairlens-cache.json``); a folder whose files are missing,
cut, changed or unreadable is rebuilt from the GGUF with a warning, never loaded half-broken and
never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from fairlens.errors import ModelLoadError
from fairlens.runtime import cache_dir

MANIFEST = "fairlens-cache.json"
_BLOCK = 1 << 16  # bytes read per sampled block of the fingerprint
_SAMPLES = 16  # blocks spread evenly over the file, plus its first and last MiB
_HASHED_BELOW = 64 << 20  # files smaller than this (config, tokenizer) are hashed whole


def fingerprint(gguf_path: Path) -> str:
    """A content key of ``gguf_path``: sha256 over its size, first and last MiB and 16 blocks
    spread over the file (~3 MiB read, whatever the model's size)."""
    size = gguf_path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with gguf_path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        for i in range(_SAMPLES):
            fh.seek(size * i // _SAMPLES)
            digest.update(fh.read(_BLOCK))
        fh.seek(max(0, size - (1 << 20)))
        digest.update(fh.read())
    return digest.hexdigest()


def cache_folder(gguf_path: Path) -> Path:
    """Where the dequantised model of ``gguf_path`` lives (named by its content fingerprint)."""
    return cache_dir() / "models" / f"{gguf_path.stem}-{fingerprint(gguf_path)[:12]}"


def damage(folder: Path) -> str | None:
    """Why the cache ``folder`` cannot be trusted, or ``None``: every file it recorded must be there
    at its recorded size, the small files (config, tokenizer) must have their recorded sha256, and
    each safetensors file's header must parse (what loading reads first)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        sizes, hashes = manifest["sizes"], manifest.get("sha256", {})  # no hashes: sizes only
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"its manifest {MANIFEST} is missing or unreadable ({type(exc).__name__})"
    if not (isinstance(sizes, dict) and isinstance(hashes, dict)):
        return f"its manifest {MANIFEST} is malformed"
    for name, size in sorted(sizes.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
        if name in hashes and _sha256(path) != hashes[name]:
            return f"{name} differs from what was written (sha256)"
        if name.endswith(".safetensors") and not _header_parses(path):
            return f"the header of {name} is unreadable"
    return None


def write_manifest(folder: Path, gguf_path: Path) -> None:
    """Record the size of every file in ``folder`` and the sha256 of its small ones."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST]
    manifest = {
        "gguf": str(gguf_path),
        "sizes": {p.name: p.stat().st_size for p in files},
        "sha256": {p.name: _sha256(p) for p in files if p.stat().st_size < _HASHED_BELOW},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _header_parses(path: Path) -> bool:
    """Whether a safetensors file starts with a readable header (8-byte length, then JSON)."""
    with path.open("rb") as fh:
        length = int.from_bytes(fh.read(8), "little")
        if not 0 < length <= path.stat().st_size - 8:
            return False
        try:
            return isinstance(json.loads(fh.read(length)), dict)
        except ValueError:
            return False


def dequantise(gguf_path: Path, dest: Path) -> None:
    """Dequantise a GGUF into an HF folder at ``dest`` (safetensors + manifest), written into a
    temporary folder that is renamed into place only once complete."""
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
            "Use a GGUF of a supported family (fairlens.models.FAMILIES), or a Hugging Face "
            "model directory.",
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
        write_manifest(tmp, gguf_path)
        if not dest.exists():  # another process may have finished first; `finally` cleans tmp
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def cached_folder(gguf_path: Path, *, use_cache: bool = True) -> Path:
    """The sound cache folder of ``gguf_path``'s dequantised model: built when it is absent (or
    ``use_cache`` is off), rebuilt when :func:`damage` finds it damaged. Loading it is the
    caller's: an error there (a bad ``device_map``, too little memory) is not blamed on the cache."""
    folder = cache_folder(gguf_path)
    if not use_cache:
        _remove(folder)
    if not folder.exists():
        dequantise(gguf_path, folder)
    else:
        problem = damage(folder)
        if problem is not None:
            _rebuild(gguf_path, folder, problem)
    return folder


def _rebuild(gguf_path: Path, folder: Path, problem: str) -> None:
    warnings.warn(
        f"model cache {str(folder)!r} is damaged ({problem}); rebuilding it from {gguf_path.name}",
        stacklevel=3,
    )
    _remove(folder)
    dequantise(gguf_path, folder)


def _remove(folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
