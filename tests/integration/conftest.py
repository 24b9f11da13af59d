"""Integration fixtures: the real embedded SmolLM2 and the real BBQ files (skipped with a reason if absent)."""

from __future__ import annotations

import os

import pytest

from fairlens.errors import DataError, ModelLoadError


@pytest.fixture(scope="session")
def smollm2():
    """``(hooked, hf, tokenizer)`` for the embedded SmolLM2-135M (float32)."""
    from fairlens.models import load_hf, load_model

    try:
        hooked = load_model("smollm2-135m")
        hf, tok, _ = load_hf("smollm2-135m")
    except ModelLoadError as exc:
        skip_or_fail(f"embedded model unavailable: {exc.one_line()}")
    return hooked, hf, tok


@pytest.fixture(scope="session")
def data_root():
    """The shared data directory (``../shared/data`` or ``$FAIRLENS_DATA_DIR``)."""
    from fairlens.data import resolve_data_dir

    try:
        return resolve_data_dir(None)
    except DataError as exc:
        skip_or_fail(f"data not found: {exc.one_line()}")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random Llama saved as a Hugging Face model folder (a `--model` for the CLI)."""
    from fairlens.testing import tiny_llama, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-model")
    tiny_llama().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def need_folder(root, name: str):
    """``root``, after checking it holds ``name/`` (skipped, or failed in CI, when it does not)."""
    if not (root / name).is_dir():
        skip_or_fail(f"no {name}/ in {root}")
    return root


@pytest.fixture(scope="session")
def bbq_items(data_root):
    from fairlens.data import load_bbq

    return load_bbq(data_root / "bbq")


def skip_or_fail(reason: str) -> None:
    """Skip when an input is missing on a developer's machine; fail in CI, where it must exist."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must have it: the README's test command installs it)")
    pytest.skip(reason)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in this folder needs the embedded model or the real data: mark it."""
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)
