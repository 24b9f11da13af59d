"""fairlens data fetch mmlu|arc|openbookqa: the release archive's files land in the loaders'
layout, checked (sha256, counts) before they replace anything; bad downloads fail in one line."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile

import pytest

import fairlens.data.fetch as fetch_module
import fairlens.data.fetch_benchmarks as fb
from fairlens.apps.cli import main
from fairlens.data.mcqa import OPENBOOKQA_OFFICIAL_COUNTS, load_openbookqa
from fairlens.data.mmlu import MMLU_OFFICIAL_COUNTS, load_mmlu
from fairlens.errors import DataError


def _obqa_lines(n: int) -> bytes:
    rows = [{"id": f"q{i}", "question": {"stem": f"Why {i}?", "choices": [
        {"text": t, "label": lab} for t, lab in zip(("a", "b", "c", "d"), "ABCD", strict=True)]},
        "answerKey": "B"} for i in range(n)]  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


class _Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _serve(monkeypatch, payload: bytes) -> None:
    monkeypatch.setattr(
        fetch_module.urllib.request, "urlopen", lambda url, timeout: _Response(payload)
    )


def test_openbookqa_lands_checked(tmp_path, monkeypatch, capsys):
    test, dev = _obqa_lines(3), _obqa_lines(2)
    monkeypatch.setitem(OPENBOOKQA_OFFICIAL_COUNTS, "test", 3)
    monkeypatch.setitem(OPENBOOKQA_OFFICIAL_COUNTS, "dev", 2)
    monkeypatch.setitem(
        fb.OFFICIAL_SHA256, "openbookqa/Main/test.jsonl", hashlib.sha256(test).hexdigest()
    )
    monkeypatch.setitem(
        fb.OFFICIAL_SHA256, "openbookqa/Main/dev.jsonl", hashlib.sha256(dev).hexdigest()
    )
    _serve(monkeypatch, _zip({
        "OpenBookQA-V1-Sep2018/Data/Main/test.jsonl": test,
        "OpenBookQA-V1-Sep2018/Data/Main/dev.jsonl": dev,
        "OpenBookQA-V1-Sep2018/Data/Main/train.jsonl": b"not needed",
    }))  # fmt: skip
    assert main(["data", "fetch", "openbookqa", "--dest", str(tmp_path)]) == 0
    assert "--data-dir" in capsys.readouterr().out
    assert len(load_openbookqa(tmp_path, "test")) == 3
    assert not (tmp_path / "openbookqa" / "Main" / "train.jsonl").exists()
    # a changed file is refused and leaves the good copy in place
    _serve(monkeypatch, _zip({"OpenBookQA-V1-Sep2018/Data/Main/test.jsonl": test[:-5],
                              "OpenBookQA-V1-Sep2018/Data/Main/dev.jsonl": dev}))  # fmt: skip
    assert main(["data", "fetch", "openbookqa", "--dest", str(tmp_path), "--force"]) == 2
    err = capsys.readouterr().err
    assert "test.jsonl from" in err and "differs from the official file" in err
    assert len(load_openbookqa(tmp_path, "test")) == 3


def test_mmlu_from_the_tar_is_loaded_before_it_is_kept(tmp_path, monkeypatch):
    rows = {"test": 2, "dev": 1, "val": 1}
    for split, n in rows.items():
        monkeypatch.setitem(MMLU_OFFICIAL_COUNTS, split, n)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for split, n in rows.items():
            data = "".join(f'"Q{i}, with a comma?",1,2,None,4,C\r\n' for i in range(n)).encode()
            info = tarfile.TarInfo(f"data/{split}/anatomy_{split}.csv")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _serve(monkeypatch, buf.getvalue())
    root = fb.fetch_benchmark("mmlu", tmp_path)
    items = load_mmlu(root, "test")
    assert len(items) == 2 and items[0].choices[2] == "None" and items[0].answer == 2
    monkeypatch.setitem(MMLU_OFFICIAL_COUNTS, "test", 5)  # a release with other counts: refused
    with pytest.raises(DataError, match="the release has 5"):
        fb.fetch_benchmark("mmlu", tmp_path, force=True)
    _serve(monkeypatch, b"<html>not a tar</html>")
    with pytest.raises(DataError, match="not a readable tar file"):
        fb.fetch_benchmark("mmlu", tmp_path, force=True)
