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
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fairlens.activations.extraction import extract_activations
from fairlens.backend import resolve_hooks
from fairlens.distributed import barrier, local, show, world
from fairlens.errors import ArtifactError, ConfigError
from fairlens.model_types import Model

DATA = "acts.f16"
PROGRESS = "progress.json"
SHARDS = "shards"


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
        raise ConfigError(
            f"chunk_size must be >= 1, got {chunk_size}.", "pass chunk_size=1 or more."
        )
    names = resolve_hooks(model, hooks, layers)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    n = len(sequences)
    n_chunks = (n + chunk_size - 1) // chunk_size
    settings = {"n": n, "hook_names": names, "chunk_size": chunk_size,
                "read_index": None if read_index is None else list(read_index),
                "model": _identity(model)}  # fmt: skip
    w, state = world(), _state(folder, settings)
    if state is not None and state["complete"]:
        return folder
    if state is not None and w.active:
        raise ArtifactError(
            f"{str(folder)!r} holds an unfinished extraction of a one-process run.",
            "Resume it with one process, or delete the folder to start over.",
        )
    if not w.active:
        _refuse_other_layouts(folder / SHARDS, 1)
        _extract_chunks(
            model, sequences, folder, settings, range(n_chunks), read_index, batch_size, progress
        )
        return folder
    # several processes: each extracts every size-th chunk into its own shard folder (resumable
    # on its own), then the main process copies the shards' rows into acts.f16 in item order
    shards = folder / SHARDS
    mine = shards / f"rank{w.rank}-of-{w.size}"
    if w.is_main:
        _refuse_other_layouts(shards, w.size)
    barrier()
    with local():
        _extract_chunks(
            model, sequences, mine, settings, range(w.rank, n_chunks, w.size),
            read_index, batch_size, show(progress),
        )  # fmt: skip
    barrier()
    if w.is_main:
        _merge_shards(folder, settings, n_chunks, w.size)
    barrier()
    return folder


def _identity(model: Model) -> str | None:
    """``name@weights_sha`` of a model loaded by fairlens (``None`` for a bare model)."""
    info = getattr(model, "fairlens_info", None)
    return None if info is None else f"{info.name}@{info.weights_sha}"


def _state(folder: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The progress record of ``folder`` if it holds this extraction (None if it holds none);
    refuses one with other settings, naming the settings that differ."""
    path = folder / PROGRESS
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    theirs = state["settings"]
    differ = sorted(k for k in settings.keys() | theirs.keys() if settings.get(k) != theirs.get(k))
    if differ:
        raise ArtifactError(
            f"{str(folder)!r} holds an extraction with other settings ({', '.join(differ)} "
            f"differ: {', '.join(f'{k}={theirs.get(k)!r}' for k in differ if k != 'read_index')}).",
            "Use another out_dir, or delete it to start over.",
        )
    return state


def _refuse_other_layouts(shards: Path, size: int) -> None:
    if not shards.is_dir():
        return
    other = sorted(p.name for p in shards.iterdir() if not p.name.endswith(f"-of-{size}"))
    if other:
        raise ArtifactError(
            f"{str(shards)!r} holds shards of a run with another number of processes "
            f"({', '.join(other)}), not {size}.",
            "Resume with the same number of processes, or delete the shards folder to start over.",
        )


def _extract_chunks(
    model: Model,
    sequences: Sequence[Sequence[int]],
    folder: Path,
    settings: dict[str, Any],
    chunks: Sequence[int],
    read_index: Sequence[int] | None,
    batch_size: int,
    progress: bool,
) -> None:
    """Extract ``chunks`` of ``sequences`` into ``folder`` (its acts.f16 has every row's slot;
    the rows of other chunks stay unwritten), resuming after the chunks already done."""
    folder.mkdir(parents=True, exist_ok=True)
    names, n, size = settings["hook_names"], settings["n"], settings["chunk_size"]
    state = _state(folder, settings)
    done: set[int] = set(state["done"]) if state else set()
    d: int | None = state["d"] if state else None
    todo = [c for c in chunks if c not in done]
    data: np.memmap | None = None
    if d is not None:
        data = np.memmap(folder / DATA, dtype=np.float16, mode="r+", shape=(n, len(names), d))
    for chunk in tqdm(todo, desc="extracting to disk", disable=not progress, unit="chunk"):
        lo, hi = chunk * size, min(n, (chunk + 1) * size)
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
        _write_json(folder / PROGRESS, {"settings": settings, "d": d, "done": sorted(done),
                                        "complete": done >= set(chunks)})  # fmt: skip
    if not todo and state is None:  # nothing to extract here: still record that it is finished
        _write_json(folder / PROGRESS, {"settings": settings, "d": None, "done": [],
                                        "complete": True})  # fmt: skip


def _merge_shards(folder: Path, settings: dict[str, Any], n_chunks: int, size: int) -> None:
    """Copy each chunk's rows from the shard that extracted it into ``folder``'s acts.f16."""
    states = [_state(folder / SHARDS / f"rank{r}-of-{size}", settings) for r in range(size)]
    widths = [s["d"] for s in states if s is not None and s["d"] is not None]
    if not widths:
        raise ArtifactError(
            f"no shard in {str(folder / SHARDS)!r} holds any activations.",
            "pass at least one sequence; otherwise delete out_dir and run extract_to_disk again.",
        )
    n, names, d = settings["n"], settings["hook_names"], widths[0]
    out = np.memmap(folder / DATA, dtype=np.float16, mode="w+", shape=(n, len(names), d))
    parts = [
        np.memmap(folder / SHARDS / f"rank{r}-of-{size}" / DATA, dtype=np.float16, mode="r",
                  shape=(n, len(names), d)) if s is not None and s["d"] is not None else None
        for r, s in enumerate(states)
    ]  # fmt: skip
    for c in range(n_chunks):
        part = parts[c % size]
        assert part is not None  # the shard of a non-empty chunk has activations
        lo, hi = c * settings["chunk_size"], min(n, (c + 1) * settings["chunk_size"])
        out[lo:hi] = part[lo:hi]
    out.flush()
    _write_json(folder / PROGRESS, {"settings": settings, "d": d,
                                    "done": list(range(n_chunks)), "complete": True})  # fmt: skip
    shutil.rmtree(folder / SHARDS)


def open_streamed(out_dir: str | Path) -> tuple[np.memmap, list[str]]:
    """Map a finished :func:`extract_to_disk` result read-only: ``(acts [n, hooks, d], hook_names)``."""
    folder = Path(out_dir)
    try:
        state = json.loads((folder / PROGRESS).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(
            f"No streamed extraction in {str(folder)!r}: {exc}",
            "pass the out_dir of a finished extract_to_disk run.",
        ) from exc
    if not state.get("complete"):
        raise ArtifactError(
            f"The extraction in {str(folder)!r} is unfinished ({len(state['done'])} chunks done).",
            "Run extract_to_disk again with the same arguments to resume it.",
        )
    s = state["settings"]
    shape = (s["n"], len(s["hook_names"]), state["d"])
    return np.memmap(folder / DATA, dtype=np.float16, mode="r", shape=shape), list(s["hook_names"])
