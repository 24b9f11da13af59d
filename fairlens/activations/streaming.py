"""Large extraction runs streamed to disk: fp16, memory-mapped, resumable.

:func:`extract_to_disk` extracts last-token (or chosen-position) activations chunk by chunk into a
preallocated ``float16`` memory-mapped array ``acts.f16`` of shape ``[n, hooks, d]`` and records the
finished chunks in ``progress.json`` (written atomically after each chunk's data is flushed). An
interrupted run restarts where it stopped; a chunk is only marked done after its rows are on disk, so
a crash can cost at most one chunk of work and never leaves a row marked done but unwritten.
:func:`open_streamed` maps the result back without reading it into memory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fairlens.activations.extraction import extract_activations
from fairlens.backend import resolve_hooks
from fairlens.errors import ArtifactError, ConfigError
from fairlens.model_types import Model

DATA = "acts.f16"
PROGRESS = "progress.json"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def extract_to_disk(
    model: Model,
    sequences: Sequence[Sequence[int]],
    out_dir: str | Path,
    *,
    hooks: str | Sequence[str] | None = None,
    layers: Sequence[int] | None = None,
    read_index: Sequence[int] | None = None,
    chunk_size: int = 512,
    batch_size: int = 16,
    progress: bool = True,
) -> Path:
    """Extract activations of ``sequences`` into ``out_dir`` (resumable); returns ``out_dir``.

    Args:
        model: ``HookedTransformer`` or plain HF model (see :func:`extract_activations`).
        sequences: Token ids per row.
        out_dir: Folder for ``acts.f16`` and ``progress.json``; an unfinished run there is resumed
            if its settings match, and refused (:class:`ArtifactError`) if they do not.
        chunk_size: Rows per checkpoint.
    """
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}.")
    names = resolve_hooks(model, hooks, layers)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(sequences)
    n_chunks = (n + chunk_size - 1) // chunk_size
    settings = {"n": n, "hook_names": names, "chunk_size": chunk_size,
                "read_index": None if read_index is None else list(read_index)}  # fmt: skip
    progress_path = folder / PROGRESS
    done: set[int] = set()
    d: int | None = None
    if progress_path.exists():
        state = json.loads(progress_path.read_text())
        if state["settings"] != settings:
            raise ArtifactError(
                f"{str(folder)!r} holds an extraction with other settings.",
                "Use another out_dir, or delete it to start over.",
            )
        done, d = set(state["done"]), state["d"]
    todo = [c for c in range(n_chunks) if c not in done]
    data: np.memmap | None = None
    if d is not None:
        data = np.memmap(folder / DATA, dtype=np.float16, mode="r+", shape=(n, len(names), d))
    for chunk in tqdm(todo, desc="extracting to disk", disable=not progress, unit="chunk"):
        lo, hi = chunk * chunk_size, min(n, (chunk + 1) * chunk_size)
        acts = extract_activations(
            model, sequences[lo:hi], hooks=names,
            read_index=None if read_index is None else read_index[lo:hi], batch_size=batch_size,
        ).acts  # fmt: skip
        if data is None:
            d = int(acts.shape[-1])
            data = np.memmap(folder / DATA, dtype=np.float16, mode="w+", shape=(n, len(names), d))
        data[lo:hi] = acts.to(torch.float16).numpy()
        data.flush()
        done.add(chunk)
        _write_json(progress_path, {"settings": settings, "d": d, "done": sorted(done),
                                    "complete": len(done) == n_chunks})  # fmt: skip
    return folder


def open_streamed(out_dir: str | Path) -> tuple[np.memmap, list[str]]:
    """Map a finished :func:`extract_to_disk` result read-only: ``(acts [n, hooks, d], hook_names)``."""
    folder = Path(out_dir)
    try:
        state = json.loads((folder / PROGRESS).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"No streamed extraction in {str(folder)!r}: {exc}") from exc
    if not state.get("complete"):
        raise ArtifactError(
            f"The extraction in {str(folder)!r} is unfinished ({len(state['done'])} chunks done).",
            "Run extract_to_disk again with the same arguments to resume it.",
        )
    s = state["settings"]
    shape = (s["n"], len(s["hook_names"]), state["d"])
    return np.memmap(folder / DATA, dtype=np.float16, mode="r", shape=shape), list(s["hook_names"])
