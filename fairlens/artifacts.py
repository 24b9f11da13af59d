"""Saving and loading artifacts as safetensors + JSON metadata (never pickle).

An artifact is a directory with ``tensors.safetensors`` and ``meta.json``. The JSON always records
the fairlens version and the artifact kind; callers add the model fingerprint, hook, layer, position,
hyper-parameters and data hashes, and check them on load.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from fairlens._version import __version__
from fairlens.errors import ArtifactError

TENSORS = "tensors.safetensors"
META = "meta.json"


def save_artifact(
    path: str | Path, kind: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]
) -> Path:
    """Write ``tensors`` and ``meta`` under directory ``path`` (created; files replaced atomically)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    full_meta = {"kind": kind, "fairlens_version": __version__, **meta}
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    for name, writer in (
        (TENSORS, lambda p: save_file(contiguous, p)),
        (META, lambda p: Path(p).write_text(json.dumps(full_meta, indent=2, sort_keys=True))),
    ):
        fd, tmp = tempfile.mkstemp(prefix=name + ".", dir=folder)
        os.close(fd)
        try:
            writer(tmp)
            os.replace(tmp, folder / name)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return folder


def load_artifact(path: str | Path, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read an artifact directory, checking it is of the expected ``kind``."""
    folder = Path(path)
    if not (folder / META).is_file() or not (folder / TENSORS).is_file():
        raise ArtifactError(
            f"{str(folder)!r} is not a fairlens artifact (expected {META} and {TENSORS} in it).",
            "Pass the directory written by .save(...).",
        )
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(
            f"{str(folder / META)!r} is not readable JSON ({exc}).",
            "Re-create the artifact (save it again, or refit it).",
        ) from exc
    if not isinstance(meta, dict):
        raise ArtifactError(f"{str(folder / META)!r} holds no JSON object.", "Re-create it.")
    try:
        tensors = load_file(str(folder / TENSORS))
    except (OSError, ValueError, SafetensorError) as exc:  # truncated / corrupted file
        raise ArtifactError(
            f"{str(folder / TENSORS)!r} is truncated or corrupted ({exc}).",
            "Re-create the artifact (save it again, or refit it).",
        ) from exc
    if meta.get("kind") != kind:
        raise ArtifactError(
            f"{str(folder)!r} holds a {meta.get('kind')!r} artifact, not a {kind!r}.",
            f"Load it with the loader for {meta.get('kind')!r}.",
        )
    return tensors, meta
