"""Neutral English prose for utility checks (perplexity, gate firing on bias-free text).

No model hub or web corpus is reachable offline, so fairlens takes a public-domain text that a
PyPI package ships as test data: the Canterbury-corpus file ``lcet10.txt`` (proceedings of a 1992
Library of Congress workshop on electronic texts, a US-government work) inside the ``brotli==1.2.1``
source archive. :func:`fetch_neutral_corpus` downloads that archive from PyPI's simple index
(verifying its sha256), without installing or running anything from it; :func:`load_neutral_texts`
reads the file from the archive and cleans it into paragraphs. Any plain-text file (paragraphs
separated by blank lines) can be used instead.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from fairlens.errors import ConfigError, DataError
from fairlens.runtime import cache_dir

__all__ = [
    "NEUTRAL_CORPUS",
    "clean_paragraphs",
    "fetch_neutral_corpus",
    "load_neutral_texts",
]

NEUTRAL_CORPUS = {
    "name": "lcet10",
    "package": "brotli",
    "version": "1.2.1",
    "archive": "brotli-1.2.1.tar.gz",
    "sha256": "02b2f7b5a83485efe448a44ddf7983def05c3bb1dcf917d4f7154070260e13de",
    "member": "brotli-1.2.1/tests/testdata/lcet10.txt",
    "index": "https://pypi.org/simple/brotli/",
    "description": "Library of Congress Workshop on Electronic Texts (1992), public domain; "
    "Canterbury corpus file shipped in the brotli 1.2.1 sdist",
}
ENV_VAR = "FAIRLENS_TEXT_CORPUS"
_FIX = (
    "run `fairlens data fetch text` (needs PyPI), or set FAIRLENS_TEXT_CORPUS / pass --text-file "
    "to a plain-text file (paragraphs separated by blank lines)."
)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_neutral_corpus(dest: Path | None = None, *, timeout: float = 60.0) -> Path:
    """Path of the verified ``brotli-1.2.1.tar.gz`` in the cache, downloading it if needed."""
    folder = dest or cache_dir() / "corpora"
    target = folder / NEUTRAL_CORPUS["archive"]
    if target.is_file() and _sha256(target) == NEUTRAL_CORPUS["sha256"]:
        return target
    try:
        page = urllib.request.urlopen(NEUTRAL_CORPUS["index"], timeout=timeout).read().decode()
        links = [
            link
            for link in re.findall(r'href="([^"]+)"', page)
            if link.split("#")[0].endswith("/" + NEUTRAL_CORPUS["archive"])
        ]
        if not links:
            raise DataError(f"PyPI lists no {NEUTRAL_CORPUS['archive']}.", _FIX)
        url = urllib.parse.urljoin(NEUTRAL_CORPUS["index"], links[0].split("#")[0])
        data = urllib.request.urlopen(url, timeout=timeout).read()
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"could not download the text corpus from PyPI ({exc}).", _FIX) from exc
    if hashlib.sha256(data).hexdigest() != NEUTRAL_CORPUS["sha256"]:
        raise DataError(
            f"the downloaded {NEUTRAL_CORPUS['archive']} does not match its recorded sha256.", _FIX
        )
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=target.name + ".tmp-")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, target)
    return target


def _read_member(archive: Path) -> str:
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(NEUTRAL_CORPUS["member"])
            if member is None:
                raise KeyError(NEUTRAL_CORPUS["member"])
            return member.read().decode("ascii", errors="replace")
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise DataError(
            f"{str(archive)!r} is not the brotli 1.2.1 archive with {NEUTRAL_CORPUS['member']} ({exc}).",
            _FIX,
        ) from exc


def clean_paragraphs(text: str, *, min_words: int = 15, max_words: int = 120) -> list[str]:
    """Prose paragraphs of ``text``: blank-line separated, unwrapped, headings/lists/notes dropped.

    For the workshop proceedings the body between "INTRODUCTION" and the participants' directory
    is kept. Footnote markers like ``(1)`` are removed; paragraphs must end with ``.``, ``?`` or
    ``!`` and have ``min_words``..``max_words`` words (longer ones are cut at a sentence end).
    """
    start = re.search(r"^\s*INTRODUCTION\s*$", text, re.MULTILINE)
    end = re.search(r"^\s*Appendix III:\s+DIRECTORY OF PARTICIPANTS", text, re.MULTILINE)
    if start and end and start.start() < end.start():
        text = text[start.end() : end.start()]
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if not lines or any(ln.startswith(("*", "-", "NOTES:", "(")) for ln in lines[:1]):
            continue
        para = re.sub(r"\(\d+\)", "", " ".join(lines))
        para = re.sub(r"\s+", " ", para).strip()
        words = para.split()
        if len(words) > max_words:
            cut = " ".join(words[:max_words])
            last = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
            para = cut[: last + 1] if last > 0 else ""
            words = para.split()
        if len(words) < min_words or not para.endswith((".", "?", "!")) or para.isupper():
            continue
        out.append(para)
    return out


def load_neutral_texts(
    path: str | Path | None = None, *, n: int | None = None, seed: int = 0
) -> list[str]:
    """Neutral prose paragraphs: from ``path`` (a ``.txt`` file or the brotli archive),
    ``FAIRLENS_TEXT_CORPUS``, or the cached/downloaded default corpus; ``n`` seeded picks.
    """
    if n is not None and n < 1:
        raise ConfigError(
            f"n must be >= 1 or None, got {n}.", "pass n=1 or more, or n=None for every paragraph."
        )
    source = path or os.environ.get(ENV_VAR)
    if source is None:
        text = _read_member(fetch_neutral_corpus())
    else:
        file = Path(source).expanduser()
        if not file.is_file():
            raise DataError(f"text corpus {str(file)!r} does not exist.", _FIX)
        if file.name.endswith(".tar.gz"):
            text = _read_member(file)
        else:
            try:
                text = file.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError) as exc:
                raise DataError(f"cannot read {str(file)!r} as UTF-8 text ({exc}).", _FIX) from exc
    paragraphs = clean_paragraphs(text)
    if not paragraphs:
        raise DataError("the text corpus holds no prose paragraph (15+ words).", _FIX)
    if n is not None and n < len(paragraphs):
        keep = set(random.Random(seed).sample(range(len(paragraphs)), n))
        paragraphs = [p for i, p in enumerate(paragraphs) if i in keep]
    return paragraphs
