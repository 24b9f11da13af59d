"""Streamed extraction: equals in-memory extraction (fp16), resumes after an interruption."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import fairlens.activations.streaming as streaming
from fairlens.activations.extraction import extract_activations
from fairlens.backend import encode
from fairlens.errors import ArtifactError

TEXTS = [f"row {i} " + "word " * (i % 5) for i in range(11)]


def test_streamed_equals_in_memory(tiny, tmp_path):
    hooked, _, tok = tiny
    seqs = encode(tok, TEXTS)
    streaming.extract_to_disk(hooked, seqs, tmp_path / "run", chunk_size=4, progress=False)
    acts, names = streaming.open_streamed(tmp_path / "run")
    ref = extract_activations(hooked, seqs)
    assert names == list(ref.hook_names)
    assert torch.allclose(
        torch.tensor(np.asarray(acts), dtype=torch.float32), ref.acts, atol=1e-2, rtol=1e-3
    )


def test_resume_after_interruption(tiny, tmp_path, monkeypatch):
    hooked, _, tok = tiny
    seqs = encode(tok, TEXTS)
    real = streaming.extract_activations
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(streaming, "extract_activations", flaky)
    with pytest.raises(KeyboardInterrupt):
        streaming.extract_to_disk(hooked, seqs, tmp_path / "run", chunk_size=4, progress=False)
    with pytest.raises(ArtifactError, match="unfinished"):
        streaming.open_streamed(tmp_path / "run")
    monkeypatch.setattr(streaming, "extract_activations", real)
    calls["n"] = 0
    counting = {"n": 0}

    def counted(*args, **kwargs):
        counting["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(streaming, "extract_activations", counted)
    streaming.extract_to_disk(hooked, seqs, tmp_path / "run", chunk_size=4, progress=False)
    assert counting["n"] == 2  # chunks 1 and 2 only; chunk 0 was already on disk
    acts, _ = streaming.open_streamed(tmp_path / "run")
    ref = extract_activations(hooked, seqs)
    assert torch.allclose(
        torch.tensor(np.asarray(acts), dtype=torch.float32), ref.acts, atol=1e-2, rtol=1e-3
    )
    with pytest.raises(ArtifactError, match="other settings"):
        streaming.extract_to_disk(hooked, seqs, tmp_path / "run", chunk_size=5, progress=False)
