"""Property tests of the data parsers on random mutations of real files (hypothesis): a BBQ jsonl
file, a CrowS-Pairs csv, an MMLU csv, an ARC or OpenBookQA jsonl or an UNQOVER word list with a mutated record or mutated
raw bytes either loads or raises the documented :class:`~fairlens.errors.DataError` (whose message
names the file), never anything else."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from pathlib import Path
from typing import Any, AnyStr

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fairlens.data import load_bbq
from fairlens.data.crows_pairs import load_crows_pairs
from fairlens.data.mcqa import load_arc, load_openbookqa
from fairlens.data.mmlu import load_mmlu
from fairlens.data.unqover import generate_unqover
from fairlens.errors import DataError
from tests.integration.conftest import need_folder

pytestmark = pytest.mark.integration

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def bbq_lines(data_root: Path) -> list[str]:
    with (data_root / "bbq" / "Age.jsonl").open(encoding="utf-8") as fh:
        return [next(fh).rstrip("\n") for _ in range(6)]


def _text_mutation() -> st.SearchStrategy[tuple[str, int, int, str]]:
    """``(kind, start, stop, text)``: cut, insert or overwrite a slice of the raw line."""
    return st.tuples(
        st.sampled_from(["cut", "insert", "overwrite"]),
        st.integers(0, 2000),
        st.integers(0, 2000),
        st.text(max_size=12),
    )


def _mutate(data: AnyStr, mutation: tuple[str, int, int, AnyStr]) -> AnyStr:
    """Cut, insert or overwrite a slice of ``data`` (text, or raw bytes so that invalid UTF-8
    and stray NULs come up too)."""
    kind, a, b, piece = mutation
    a, b = sorted((a % (len(data) + 1), b % (len(data) + 1)))
    if kind == "cut":
        return data[:a] + data[b:]
    if kind == "insert":
        return data[:a] + piece + data[a:]
    return data[:a] + piece + data[a + len(piece) :]


def _load_bbq_with(lines: list[str], index: int, mutated: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        body = [mutated if i == index else line for i, line in enumerate(lines)]
        (folder / "Age.jsonl").write_text("\n".join(body) + "\n", encoding="utf-8")
        try:
            items = load_bbq(folder)
        except DataError as exc:
            assert "Age.jsonl" in str(exc) or "Age" in str(exc), str(exc)
            return
        assert 1 <= len(items) <= len(lines)


@SETTINGS
@given(index=st.integers(0, 5), mutation=_text_mutation())
def test_bbq_text_mutations_load_or_raise_data_error(bbq_lines, index, mutation) -> None:
    _load_bbq_with(bbq_lines, index, _mutate(bbq_lines[index], mutation))


@SETTINGS
@given(index=st.integers(0, 5), key=st.integers(0, 40), value=JSON_VALUES, drop=st.booleans())
def test_bbq_field_mutations_load_or_raise_data_error(bbq_lines, index, key, value, drop) -> None:
    record = json.loads(bbq_lines[index])
    paths = [(k,) for k in record] + [
        (k, j) for k, v in record.items() if isinstance(v, dict) for j in v
    ]
    path = paths[key % len(paths)]
    target = record if len(path) == 1 else record[path[0]]
    if drop:
        target.pop(path[-1])
    else:
        target[path[-1]] = value
    _load_bbq_with(bbq_lines, index, json.dumps(record))


@pytest.fixture(scope="module")
def crows_rows(data_root: Path) -> tuple[list[str], list[dict[str, str]]]:
    path = data_root / "crows_pairs" / "crows_pairs_anonymized.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = [next(reader) for _ in range(5)]
        return list(reader.fieldnames or []), rows


def _csv(fields: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@SETTINGS
@given(row=st.integers(0, 4), column=st.integers(0, 10), value=st.text(max_size=30))
def test_crows_field_mutations_load_or_raise_data_error(crows_rows, row, column, value) -> None:
    fields, rows = crows_rows
    rows = [dict(r) for r in rows]
    rows[row][fields[column % len(fields)]] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crows_pairs_anonymized.csv"
        path.write_text(_csv(fields, rows), encoding="utf-8")
        try:
            pairs = load_crows_pairs(path)
        except DataError as exc:
            assert "crows_pairs_anonymized.csv" in str(exc), str(exc)
            return
        assert len(pairs) == 5


@SETTINGS
@given(mutation=_text_mutation())
def test_crows_raw_text_mutations_load_or_raise_data_error(crows_rows, mutation) -> None:
    fields, rows = crows_rows
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "crows_pairs_anonymized.csv"
        path.write_text(_mutate(_csv(fields, rows), mutation), encoding="utf-8")
        try:
            load_crows_pairs(path)
        except DataError as exc:
            assert "crows_pairs_anonymized.csv" in str(exc), str(exc)


def _byte_mutation(span: int) -> st.SearchStrategy[tuple[str, int, int, bytes]]:
    return st.tuples(
        st.sampled_from(["cut", "insert", "overwrite"]),
        st.integers(0, span),
        st.integers(0, span),
        st.binary(max_size=12) | st.text(max_size=12).map(str.encode),
    )


class _Blob(bytes):
    """File contents with a short repr (hypothesis prints the arguments of a failing example)."""

    def __repr__(self) -> str:
        return f"<{len(self)} bytes>"


@pytest.fixture(scope="module")
def mmlu_file(data_root: Path) -> bytes:
    path = need_folder(data_root, "mmlu") / "mmlu" / "test" / "anatomy_test.csv"
    return _Blob(path.read_bytes())


@SETTINGS
@given(mutation=_byte_mutation(40_000))
def test_mmlu_mutations_load_or_raise_data_error(mmlu_file, mutation) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "mmlu" / "test"
        folder.mkdir(parents=True)
        (folder / "anatomy_test.csv").write_bytes(_mutate(mmlu_file, mutation))
        try:
            items = load_mmlu(tmp, "test", subjects=["anatomy"])
        except DataError as exc:
            assert "anatomy_test.csv" in str(exc) or "MMLU" in str(exc), str(exc)
            return
        assert items and all(it.answer in range(4) for it in items)


AI2_FILES = {
    "arc_challenge": ("arc", "ARC-Challenge/ARC-Challenge-Test.jsonl"),
    "arc_easy": ("arc", "ARC-Easy/ARC-Easy-Test.jsonl"),
    "openbookqa": ("openbookqa", "Main/test.jsonl"),
}


@pytest.fixture(scope="module")
def ai2_files(data_root: Path) -> dict[str, bytes]:
    return {
        name: _Blob((need_folder(data_root, folder) / folder / rel).read_bytes())
        for name, (folder, rel) in AI2_FILES.items()
    }


def _load_ai2(name: str, root: str) -> list[Any]:
    if name == "openbookqa":
        return load_openbookqa(root)
    return load_arc(root, "easy" if name == "arc_easy" else "challenge")


@SETTINGS
@given(name=st.sampled_from(sorted(AI2_FILES)), mutation=_byte_mutation(400_000))
def test_arc_and_openbookqa_mutations_load_or_raise_data_error(ai2_files, name, mutation) -> None:
    folder, rel = AI2_FILES[name]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / folder / rel
        path.parent.mkdir(parents=True)
        path.write_bytes(_mutate(ai2_files[name], mutation))
        try:
            items = _load_ai2(name, tmp)
        except DataError as exc:
            assert path.name in str(exc), str(exc)
            return
        assert all(0 <= it.answer < len(it.choices) for it in items)


UNQOVER_FILES = ("nouns/subjects/religion", "slots/religion_noact", "activities/biased_religion")


@pytest.fixture(scope="module")
def unqover_lists(data_root: Path) -> Path:
    return need_folder(data_root, "unqover") / "unqover" / "word_lists"


@SETTINGS
@given(which=st.sampled_from(UNQOVER_FILES), mutation=_byte_mutation(20_000))
def test_unqover_list_mutations_load_or_raise_data_error(unqover_lists, which, mutation) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lists = Path(tmp) / "word_lists"
        for rel in UNQOVER_FILES:
            (lists / rel).parent.mkdir(parents=True, exist_ok=True)
            data = (unqover_lists / rel).read_bytes()
            (lists / rel).write_bytes(_mutate(data, mutation) if rel == which else data)
        try:
            instances = generate_unqover(lists, "religion", 5)
        except DataError as exc:
            assert Path(which).name in str(exc) or "religion" in str(exc), str(exc)
            return
        assert len(instances) == 5
