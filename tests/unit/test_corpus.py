"""The neutral prose corpus: cleaning, reading from a file or the archive, verified download."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest

from fairlens.data import corpus
from fairlens.data.corpus import clean_paragraphs, fetch_neutral_corpus, load_neutral_texts
from fairlens.errors import ConfigError, DataError

BODY = " ".join(["The committee discussed how to keep the printed records for later readers."] * 2)
TEXT = f"""Title page
Appendix III:  Directory of Participants

                              INTRODUCTION

{BODY}
It met (1) twice.

* Imaging
* Searchable coded texts

NOTES:
     (1)  A footnote that should go.

SHORT HEADING

{BODY}

                Appendix III:  DIRECTORY OF PARTICIPANTS

Someone Somewhere, phone 555 0100 and a long line of contact details that ends here.
"""


def test_clean_keeps_body_prose_only():
    paragraphs = clean_paragraphs(TEXT)
    assert len(paragraphs) == 2
    assert paragraphs[0].endswith("It met twice.")  # unwrapped, footnote marker removed
    assert all("phone" not in p and "Imaging" not in p for p in paragraphs)


def test_long_paragraphs_are_cut_at_a_sentence_end():
    para = " ".join(["One short sentence here."] * 60)
    (out,) = clean_paragraphs(para, max_words=50)
    assert out.endswith(".") and len(out.split()) <= 50


def _archive(tmp_path, text=TEXT):
    data = text.encode()
    path = tmp_path / corpus.NEUTRAL_CORPUS["archive"]
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(corpus.NEUTRAL_CORPUS["member"])
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def test_load_from_text_file_archive_and_env(tmp_path, monkeypatch):
    txt = tmp_path / "corpus.txt"
    txt.write_text(TEXT)
    assert len(load_neutral_texts(txt)) == 2
    assert len(load_neutral_texts(_archive(tmp_path))) == 2
    monkeypatch.setenv("FAIRLENS_TEXT_CORPUS", str(txt))
    assert load_neutral_texts(n=1, seed=1) == load_neutral_texts(n=1, seed=1)
    assert len(load_neutral_texts(n=1)) == 1
    with pytest.raises(ConfigError):
        load_neutral_texts(txt, n=0)
    with pytest.raises(DataError, match="does not exist"):
        load_neutral_texts(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("too short.\n")
    with pytest.raises(DataError, match="no prose paragraph"):
        load_neutral_texts(empty)
    broken = tmp_path / "x.tar.gz"
    broken.write_bytes(b"not a tar")
    with pytest.raises(DataError, match="not the brotli"):
        load_neutral_texts(broken)


class _Response:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


def test_fetch_verifies_sha_and_reports_network_errors(tmp_path, monkeypatch):
    (tmp_path / "src").mkdir()
    blob = _archive(tmp_path / "src").read_bytes()
    page = f'<a href="../../packages/x/{corpus.NEUTRAL_CORPUS["archive"]}#sha256=0">a</a>'.encode()

    def fake_urlopen(url, timeout=0):
        return _Response(page if url.endswith("/brotli/") else blob)

    monkeypatch.setattr(corpus.urllib.request, "urlopen", fake_urlopen)
    with pytest.raises(DataError, match="does not match its recorded sha256"):
        fetch_neutral_corpus(tmp_path / "cache")
    monkeypatch.setitem(corpus.NEUTRAL_CORPUS, "sha256", hashlib.sha256(blob).hexdigest())
    path = fetch_neutral_corpus(tmp_path / "cache")
    assert path.read_bytes() == blob
    assert fetch_neutral_corpus(tmp_path / "cache") == path  # cached, verified, no download

    def offline(url, timeout=0):
        raise corpus.urllib.error.URLError("no network")

    monkeypatch.setattr(corpus.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match="could not download"):
        fetch_neutral_corpus(tmp_path / "other")
