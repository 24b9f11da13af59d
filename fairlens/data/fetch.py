"""The official BBQ release: its categories, finding a local copy, and downloading it.

fairlens never ships benchmark data. :func:`resolve_data_dir` finds a directory holding ``bbq/``
(explicit argument, ``FAIRLENS_DATA_DIR``, ``./data``, ``../shared/data``, the user cache), and
:func:`fetch_bbq` fills the cache from the BBQ repository for users with internet access, checking
each file's line count against the official release so a truncated download is never used.
"""

from __future__ import annotations

import difflib
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from fairlens.errors import ConfigError, DataError
from fairlens.runtime import write_atomic

__all__ = [
    "BBQ_CATEGORIES",
    "BBQ_OFFICIAL_COUNTS",
    "BBQ_URL",
    "check_categories",
    "default_cache_dir",
    "download",
    "fetch_bbq",
    "resolve_data_dir",
]

BBQ_OFFICIAL_COUNTS: dict[str, int] = {
    "Age": 3680,
    "Disability_status": 1556,
    "Gender_identity": 5672,
    "Nationality": 3080,
    "Physical_appearance": 1576,
    "Race_ethnicity": 6880,
    "Race_x_SES": 11160,
    "Race_x_gender": 15960,
    "Religion": 1200,
    "SES": 6864,
    "Sexual_orientation": 864,
}
"""Number of items (= lines) in each official BBQ file; 58,492 in all."""

BBQ_CATEGORIES: tuple[str, ...] = tuple(BBQ_OFFICIAL_COUNTS)
"""The 11 BBQ category names, spelled as in the files' ``category`` field and file names."""


BBQ_URL = "https://raw.githubusercontent.com/nyu-mll/BBQ/main/data/{category}.jsonl"
"""Where the official BBQ files are downloaded from (``{category}`` is e.g. ``Age``)."""

ENV_VAR = "FAIRLENS_DATA_DIR"
_FIX = (
    "run `fairlens data fetch bbq` (needs internet), or pass --data-dir / set "
    f"{ENV_VAR} to a directory that contains bbq/*.jsonl."
)

ProgressCallback = Callable[[str, int, int], None]
"""Called as ``progress(category, index, total)`` before each file is fetched."""


def check_categories(categories: Iterable[str] | None) -> tuple[str, ...]:
    """Validate category names, returning them in canonical BBQ order (all 11 for ``None``).

    Raises:
        ConfigError: An unknown name; the message lists the valid names and the closest match.
    """
    if categories is None:
        return BBQ_CATEGORIES
    if isinstance(categories, str):
        categories = [categories]
    wanted = list(categories)
    for name in wanted:
        if name not in BBQ_OFFICIAL_COUNTS:
            close = difflib.get_close_matches(str(name), BBQ_CATEGORIES, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown BBQ category {name!r}.{hint}",
                f"use one of: {', '.join(BBQ_CATEGORIES)}.",
            )
    if not wanted:
        raise ConfigError("no BBQ category selected.", "pass None for all categories.")
    return tuple(c for c in BBQ_CATEGORIES if c in wanted)


def default_cache_dir() -> Path:
    """The download location: ``$XDG_CACHE_HOME/fairlens/data`` or ``~/.cache/fairlens/data``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "fairlens" / "data"


def _data_dir_of(candidate: Path) -> Path | None:
    """``candidate`` if it holds ``bbq/``; its parent if it *is* a ``bbq`` folder; else None."""
    if (candidate / "bbq").is_dir():
        return candidate
    if candidate.name == "bbq" and candidate.is_dir() and any(candidate.glob("*.jsonl")):
        return candidate.parent
    return None


def read_utf8(path: Path, fix: str) -> str:
    """The text of a data file, or a :class:`DataError` naming it when it is not UTF-8 (the
    loaders' one way to read a whole file)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name} is not valid UTF-8 ({exc.reason}).", fix) from exc


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """Find the data directory, i.e. the one that contains ``bbq/``.

    Looks, in order, at: ``data_dir``; ``$FAIRLENS_DATA_DIR``; ``./data``; ``../shared/data``
    (both relative to the working directory); :func:`default_cache_dir`. An explicit argument or
    environment variable that does not hold ``bbq/`` is an error rather than skipped, so a typo is
    never silently replaced by another copy of the data.

    Raises:
        DataError: Nothing found; the message gives the exact fix.
    """
    for explicit, source in ((data_dir, "--data-dir"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if explicit is None or str(explicit) == "":
            continue
        path = Path(explicit).expanduser()
        found = _data_dir_of(path)
        if found is None:
            what = "does not exist" if not path.exists() else "contains no bbq/ folder"
            raise DataError(f"data directory {str(path)!r} (from {source}) {what}.", _FIX)
        return found.resolve()
    cwd = Path.cwd()
    candidates = [cwd / "data", cwd.parent / "shared" / "data", default_cache_dir()]
    for candidate in candidates:
        found = _data_dir_of(candidate)
        if found is not None:
            return found.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise DataError(f"no BBQ data found (looked in {looked}; {ENV_VAR} is not set).", _FIX)


def download(url: str, folder: str, timeout: float) -> bytes:
    """The bytes at ``url``; a failure is a one-line :class:`DataError` that says how to provide
    ``folder/`` without the network."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(
            f"downloading {url} failed: {exc}.",
            f"check the network connection, or fetch the files elsewhere and pass --data-dir / "
            f"set {ENV_VAR} to the directory holding {folder}/.",
        ) from exc


def _line_count(data: bytes) -> int:
    """Number of lines, counting a last line without a newline."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def fetch_bbq(
    dest: Path | None = None,
    *,
    categories: Iterable[str] | None = None,
    force: bool = False,
    progress: ProgressCallback | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download the official BBQ jsonl files into ``dest/bbq``.

    Files already present with the official line count are kept unless ``force``. Each file is
    written to a temporary name and renamed, so an interrupted download never leaves a partial
    file under the final name.

    Args:
        dest: Data directory; defaults to :func:`default_cache_dir` (found by
            :func:`resolve_data_dir` without further configuration).
        categories: Category names; ``None`` fetches all 11.
        force: Download even when a complete file is already present.
        progress: Optional ``progress(category, index, total)`` callback.
        timeout: Seconds to wait for each HTTP response.

    Returns:
        The data directory (``dest``), ready for ``--data-dir`` / :func:`load_bbq`'s parent.

    Raises:
        DataError: A download failed or a file has the wrong number of lines.
        ConfigError: Unknown category name.
    """
    names = check_categories(categories)
    root = Path(dest).expanduser() if dest is not None else default_cache_dir()
    folder = root / "bbq"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"cannot create {str(folder)!r}: {exc}.", "choose a writable directory."
        ) from exc
    for index, category in enumerate(names):
        target = folder / f"{category}.jsonl"
        expected = BBQ_OFFICIAL_COUNTS[category]
        if not force and target.is_file() and _line_count(target.read_bytes()) == expected:
            continue
        if progress is not None:
            progress(category, index, len(names))
        url = BBQ_URL.format(category=category)
        data = download(url, "bbq", timeout)
        got = _line_count(data)
        if got != expected:
            raise DataError(
                f"{url} has {got} lines, the official {category}.jsonl has {expected}.",
                "retry `fairlens data fetch bbq --force`; if it persists, the upstream file "
                f"changed: download it manually and use --data-dir / {ENV_VAR}.",
            )
        write_atomic(target, data)
    return root
