"""Downloading the utility benchmarks (MMLU, ARC, OpenBookQA) from their official releases, for
users with internet access (``fairlens data fetch mmlu|arc|openbookqa``).

Each release archive is downloaded once, the files fairlens reads are extracted into
``dest/<benchmark>/`` in the layout the loaders expect, ARC and OpenBookQA are checked against the
sha256 of the official files, and every split is then loaded (so its row count and format are
checked) before the files are moved into place: a truncated or changed download is never used.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

from fairlens.data.fetch import default_cache_dir, download
from fairlens.errors import DataError

__all__ = ["BENCHMARK_URLS", "fetch_benchmark"]

BENCHMARK_URLS: dict[str, str] = {
    "mmlu": "https://people.eecs.berkeley.edu/~hendrycks/data.tar",
    "arc": "https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip",
    "openbookqa": "https://ai2-public-datasets.s3.amazonaws.com/open-book-qa/OpenBookQA-V1-Sep2018.zip",
}
"""The official release archive of each benchmark."""

OFFICIAL_SHA256: dict[str, str] = {
    "arc/ARC-Challenge/ARC-Challenge-Test.jsonl": "9fa8ffb3e3a1f88cb302d53dd95aae81e39209ad9bcf974376b319d8fd35717c",
    "arc/ARC-Challenge/ARC-Challenge-Dev.jsonl": "55224364abd2477f66a9a57c5cbef109fb71d83019aa5e37aec0e7ab757746ca",
    "arc/ARC-Easy/ARC-Easy-Test.jsonl": "ce32a0774b4beb1977d2c6b16dda5dd2b24fdc9c7f506882c452678676bd09be",
    "arc/ARC-Easy/ARC-Easy-Dev.jsonl": "f4364b808a68df6bf500ce1070fb0105d40cacd2391c210deb00ff83ba75d1f4",
    "openbookqa/Main/test.jsonl": "feb2bd9bfa6161dca4c44ce90e51e8cdada83eb5061407fcdc5005e44aaf2313",
    "openbookqa/Main/dev.jsonl": "a08f720be757a0f0b6aaf8e1e1162c2b05a882c9c031d2559ba3d5467d023466",
}
"""sha256 of the official files (the data folders' READMEs)."""


def _wanted(benchmark: str, member: str) -> str | None:
    """Where an archive member goes under the data directory (None: not needed)."""
    parts = member.split("/")
    name = parts[-1]
    if benchmark == "mmlu" and len(parts) >= 3 and parts[-2] in ("test", "dev", "val"):
        return f"mmlu/{parts[-2]}/{name}" if name.endswith(f"_{parts[-2]}.csv") else None
    if benchmark == "arc" and len(parts) >= 2 and parts[-2] in ("ARC-Challenge", "ARC-Easy"):
        keep = name.endswith(("-Test.jsonl", "-Dev.jsonl"))
        return f"arc/{parts[-2]}/{name}" if keep else None
    if benchmark == "openbookqa" and len(parts) >= 2 and parts[-2] == "Main":
        return f"openbookqa/Main/{name}" if name in ("test.jsonl", "dev.jsonl") else None
    return None


def _members(benchmark: str, data: bytes) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    try:
        if benchmark == "mmlu":
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for m in tar.getmembers():
                    target = _wanted(benchmark, m.name)
                    fh = tar.extractfile(m) if m.isfile() and target else None
                    if target and fh is not None:
                        out[target] = fh.read()
        else:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                for name in zf.namelist():
                    target = _wanted(benchmark, name)
                    if target:
                        out[target] = zf.read(name)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(
            f"the {benchmark} archive is not a readable {'tar' if benchmark == 'mmlu' else 'zip'} "
            f"file ({exc}); the download may be cut.",
            f"retry `fairlens data fetch {benchmark} --force`.",
        ) from exc
    return out


def fetch_benchmark(
    benchmark: str, dest: Path | None = None, *, force: bool = False, timeout: float = 120.0
) -> Path:
    """Download ``benchmark`` (``mmlu``, ``arc`` or ``openbookqa``) into ``dest/<benchmark>``.

    Returns:
        The data directory (``dest``), for ``--data-dir``.

    Raises:
        DataError: A failed download, an unreadable archive, a missing file, a sha256 or count
            that differs from the official release.
    """
    from fairlens.data.mcqa import load_arc, load_openbookqa
    from fairlens.data.mmlu import load_mmlu

    if benchmark not in BENCHMARK_URLS:
        raise DataError(
            f"unknown benchmark {benchmark!r}.", f"use one of: {', '.join(BENCHMARK_URLS)}."
        )
    root = Path(dest).expanduser() if dest is not None else default_cache_dir()
    final = root / benchmark
    if final.is_dir() and not force:
        return root
    url = BENCHMARK_URLS[benchmark]
    data = download(url, benchmark, timeout)
    files = _members(benchmark, data)
    if not files:
        raise DataError(
            f"{url} holds none of the {benchmark} files fairlens reads.", "check the URL."
        )
    for path, expected in OFFICIAL_SHA256.items():
        if path.startswith(f"{benchmark}/"):
            got = hashlib.sha256(files.get(path, b"")).hexdigest()
            if got != expected:
                raise DataError(
                    f"{path} from {url} is missing or differs from the official file "
                    f"(sha256 {got[:12]}…, expected {expected[:12]}…).",
                    f"retry `fairlens data fetch {benchmark} --force`.",
                )
    staging = root / f".{benchmark}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for path, content in files.items():
            target = staging / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        if benchmark == "mmlu":  # every split loads with the release's counts
            for split in ("test", "dev", "val"):
                load_mmlu(staging, split)
        elif benchmark == "arc":
            for subset in ("easy", "challenge"):
                for split in ("test", "dev"):
                    load_arc(staging, subset, split)  # type: ignore[arg-type]
        else:
            for split in ("test", "dev"):
                load_openbookqa(staging, split)  # type: ignore[arg-type]
        shutil.rmtree(final, ignore_errors=True)
        (staging / benchmark).rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root
