"""Shared fixtures: tiny random-init models and synthetic BBQ items (no files, no network)."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import random

# Runtime checks of every annotation in fairlens (jaxtyping shapes with beartype types), as
# TransformerLens does with --jaxtyping-packages: installed before fairlens is first imported.
# FAIRLENS_TYPECHECK=0 runs without them (the `ill_typed` tests run both ways: tests/README.md).
TYPECHECKED = os.environ.get("FAIRLENS_TYPECHECK", "1") != "0"
if TYPECHECKED:
    from jaxtyping import install_import_hook

    install_import_hook(
        "fairlens", "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
    )

import pytest  # noqa: E402
import torch  # noqa: E402

from fairlens.data import BBQItem  # noqa: E402
from fairlens.models import EMBEDDED_MODELS, EmbeddedModel  # noqa: E402

torch.set_num_threads(1)

_WORDS = [
    "the",
    "a",
    "doctor",
    "nurse",
    "old",
    "young",
    "man",
    "woman",
    "neighbor",
    "friend",
    "came",
    "left",
    "early",
    "late",
]


def synthetic_item(
    category: str = "Age",
    example_id: int = 0,
    question_index: str = "1",
    *,
    ambiguous: bool = True,
    polarity: str = "neg",
    label: int | None = None,
    unknown_loc: int = 2,
    target_loc: int | None = 0,
    seed: int | None = None,
) -> BBQItem:
    """A BBQ-shaped item with random short text (deterministic per ``seed``/``example_id``)."""
    rng = random.Random(seed if seed is not None else example_id)
    context = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12))) + "."
    others = [i for i in range(3) if i != unknown_loc]
    if label is None:
        label = unknown_loc if ambiguous else others[example_id % 2]
    bias = None
    if target_loc is not None:
        bias = target_loc if polarity == "neg" else next(i for i in others if i != target_loc)
    answers = ["The old man", "The young man", "Unknown"]
    answers[unknown_loc], answers[2] = answers[2], answers[unknown_loc]
    groups = ["old", "nonOld", "unknown"]
    groups[unknown_loc], groups[2] = groups[2], groups[unknown_loc]
    return BBQItem(
        category=category,
        example_id=example_id,
        question_index=question_index,
        question_polarity=polarity,  # type: ignore[arg-type]
        context_condition="ambig" if ambiguous else "disambig",  # type: ignore[arg-type]
        context=context,
        question="Who forgot?",
        answers=tuple(answers),  # type: ignore[arg-type]
        answer_groups=tuple(groups),  # type: ignore[arg-type]
        answer_info_text=tuple(groups),  # type: ignore[arg-type]
        stereotyped_groups=("old",),
        subcategory="None",
        label=label,
        unknown_loc=unknown_loc,
        target_loc=target_loc,
        bias_target_loc=bias,
        source_file="synthetic.jsonl",
        line_number=example_id + 1,
    )


def synthetic_items(
    n_templates: int = 6, per_template: int = 8, categories=("Age", "SES")
) -> list[BBQItem]:
    """Items over several templates and categories, half ambiguous, both polarities."""
    items = []
    eid = 0
    for cat in categories:
        for t in range(n_templates):
            for k in range(per_template):
                items.append(
                    synthetic_item(
                        cat,
                        eid,
                        str(t + 1),
                        ambiguous=k % 2 == 0,
                        polarity="neg" if (k // 2) % 2 == 0 else "nonneg",
                        seed=eid,
                    )
                )
                eid += 1
    return items


@pytest.fixture(scope="session")
def tiny():
    """``(hooked, hf, tokenizer)`` with the same random weights (GQA tiny Llama)."""
    from fairlens.testing import tiny_hooked

    return tiny_hooked(seed=0)


@pytest.fixture(autouse=True)
def _no_hook_leaks(request):
    """Every test leaves the shared tiny models without hooks: a leak fails the test that made it."""
    yield
    if "tiny" in request.fixturenames:
        from fairlens.backend import count_hooks

        hooked, hf, _ = request.getfixturevalue("tiny")
        assert count_hooks(hooked) + count_hooks(hf) == 0, (
            f"{request.node.name} left hooks on the tiny models"
        )


@pytest.fixture
def items() -> list[BBQItem]:
    return synthetic_items()


def rejects_ill_typed(error: type[Exception], match: str):
    """``pytest.raises`` for an argument of the wrong type (a string for a number, a value outside a
    ``Literal``, mismatched shapes): fairlens' own ``error`` naming the fix when it runs as users run
    it; the runtime annotation check, which fires first, when the test run has them on. Tests using
    this carry the ``ill_typed`` marker and CI runs them both ways."""
    if TYPECHECKED:
        from jaxtyping import TypeCheckError

        return pytest.raises(TypeCheckError)
    return pytest.raises(error, match=match)


@pytest.fixture
def fake_multipart(tmp_path, monkeypatch):
    """A factory: ``fake_multipart(chunks, missing=(), size=None, sha256=None)`` registers a fake
    embedded model split over ``len(chunks)`` "installed" packages under ``tmp_path``."""

    def make(chunks: list[bytes], *, missing=(), size=None, sha256=None):
        return _fake_multipart(tmp_path, monkeypatch, chunks, missing, size, sha256)

    return make


def _fake_multipart(tmp_path, monkeypatch, chunks, missing, size, sha256):
    """The parts are plain files; ``importlib.util.find_spec`` is patched to point at their folders
    (parts listed in ``missing`` are reported as not installed), and the cache is ``tmp_path``.
    """
    monkeypatch.setenv("FAIRLENS_CACHE", str(tmp_path / "cache"))
    folders = {}
    for i, chunk in enumerate(chunks, 1):
        folder = tmp_path / "site" / f"fake_part{i}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"part{i:02d}.bin").write_bytes(chunk)
        folders[f"fake_part{i}"] = folder
    real = importlib.util.find_spec

    def find_spec(name, *args):
        if not name.startswith("fake_part"):
            return real(name, *args)
        if name in missing or name not in folders:
            return None
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folders[name])]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    joined = b"".join(chunks)
    model = EmbeddedModel(
        name="fake-multipart",
        package="fake-part{i}",
        version="1.0",
        module="fake_part{i}",
        filename="data/part{i:02d}.bin",
        description="test model",
        n_parts=len(chunks),
        size=len(joined) if size is None else size,
        sha256=hashlib.sha256(joined).hexdigest() if sha256 is None else sha256,
    )
    monkeypatch.setitem(EMBEDDED_MODELS, model.name, model)
    return model
