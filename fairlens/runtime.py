"""Process-level settings: CPU thread count and the user cache directory.

Torch's default of one thread per core is a bad default on small shared machines: when another
process holds a core, two threads ran 4-9x slower than one (ARCHITECTURE.md §3). fairlens therefore
makes the thread count explicit (``--threads`` / ``FAIRLENS_THREADS``) instead of guessing.
"""

from __future__ import annotations

import os
from pathlib import Path

from fairlens.errors import ConfigError

MODEL_DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
"""The dtypes a model can be loaded in (``load_hf`` / ``load_model`` / ``fairlens run --dtype``)."""


def cache_dir() -> Path:
    """The fairlens cache root: ``$FAIRLENS_CACHE``, else ``$XDG_CACHE_HOME/fairlens``, else ``~/.cache/fairlens``."""
    explicit = os.environ.get("FAIRLENS_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fairlens"


def default_threads() -> int:
    """Thread count from ``FAIRLENS_THREADS``, else 1 (predictable on shared machines)."""
    raw = os.environ.get("FAIRLENS_THREADS")
    if raw is None or raw == "":
        return 1
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"FAIRLENS_THREADS must be a positive integer, got {raw!r}.",
            "Set e.g. FAIRLENS_THREADS=2 or unset it.",
        ) from None
    if value < 1:
        raise ConfigError(f"FAIRLENS_THREADS must be >= 1, got {value}.", "Set FAIRLENS_THREADS=1.")
    return value


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op CPU thread count (``None`` = :func:`default_threads`); returns it."""
    import torch

    n = default_threads() if n is None else n
    if n < 1:
        raise ConfigError(f"threads must be >= 1, got {n}.", "Pass --threads 1 or more.")
    torch.set_num_threads(n)
    return n


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through a temporary file renamed into
    place, so an interruption (Ctrl-C, a full disk, a killed job) leaves the old file or the new
    one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
