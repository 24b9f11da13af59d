"""The dequantised-model cache: a GGUF turned once into a Hugging Face folder (safetensors), found
again by the GGUF's content, checked on every load and rebuilt when damaged.

Dequantising takes ~20 s for SmolLM2 and minutes for larger models, so :func:`load_cached` keeps the
result under ``cache_dir()/models/``. The folder is named by a fingerprint of the GGUF's *content*
(its size and sampled blocks), not by its path, so reinstalling the same wheel into a new virtual
environment reuses it instead of writing another copy. Each folder records the size of every file it
wrote (``fairlens-cache.json``); a folder whose files are missing, cut or unreadable is rebuilt from
the GGUF with a warning, never loaded half-broken and never a traceback.
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
    """Why the cache ``folder`` cannot be trusted (a missing or resized file, an unreadable
    manifest), or ``None`` when every file it recorded is there at its recorded size."""
    try:
        sizes = json.loads((folder / MANIFEST).read_text())["sizes"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its manifest {MANIFEST} is missing or unreadable ({type(exc).__name__})"
    if not isinstance(sizes, dict):
        return f"its manifest {MANIFEST} is malformed"
    for name, size in sorted(sizes.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


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
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / MANIFEST).write_text(json.dumps({"gguf": str(gguf_path), "sizes": sizes}, indent=1))
        if not dest.exists():  # another process may have finished first; `finally` cleans tmp
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_cached(gguf_path: Path, load: Any, *, use_cache: bool = True) -> Any:
    """``load(folder)`` on the dequantised model of ``gguf_path``, building the cache folder when
    it is absent (or ``use_cache`` is off) and rebuilding it once when it is damaged or fails to
    load. A second failure is the GGUF's or the loader's, raised as :class:`ModelLoadError`."""
    folder = cache_folder(gguf_path)
    if not use_cache:
        _remove(folder)
    if not folder.exists():
        dequantise(gguf_path, folder)
    else:
        problem = damage(folder)
        if problem is not None:
            _rebuild(gguf_path, folder, problem)
    try:
        return load(folder)
    except Exception as exc:  # a garbled file the sizes did not reveal: our copy, so rebuild it
        _rebuild(gguf_path, folder, f"loading it failed ({type(exc).__name__}: {exc})")
    try:
        return load(folder)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"the model dequantised from {str(gguf_path)!r} cannot be loaded even after "
            f"rebuilding {str(folder)!r}: {type(exc).__name__}: {exc}",
            "check that the GGUF is complete (reinstall its wheel) and that the disk is not full.",
        ) from exc


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
