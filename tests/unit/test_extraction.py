"""Activation extraction: the right token, both paddings, HF hidden states, artifact round trip."""

from __future__ import annotations

import pytest
import torch

from fairlens.activations.extraction import Activations, extract_activations
from fairlens.backend import count_hooks, encode
from fairlens.errors import ConfigError, HookPointError

TEXTS = ["the old man came", "a nurse left early and the doctor was late", "x"]


def test_matches_hf_hidden_states_and_padding(tiny):
    hooked, hf, tok = tiny
    seqs = encode(tok, TEXTS)
    left = extract_activations(hooked, seqs, padding_side="left", batch_size=2)
    right = extract_activations(hooked, seqs, padding_side="right", batch_size=3)
    assert left.acts.shape == (3, hooked.cfg.n_layers, hooked.cfg.d_model)
    assert torch.allclose(left.acts, right.acts, atol=1e-5)
    for i, s in enumerate(seqs):
        with torch.no_grad():
            hidden = hf(torch.tensor([s]), output_hidden_states=True).hidden_states
        for layer in range(
            hooked.cfg.n_layers - 1
        ):  # HF's last hidden state is after the final norm
            assert torch.allclose(left.acts[i, layer], hidden[layer + 1][0, -1], atol=1e-4)
    assert count_hooks(hooked) == 0


def test_read_index_and_hook_kinds(tiny):
    hooked, _, tok = tiny
    seqs = encode(tok, TEXTS[:2])
    mid = extract_activations(hooked, seqs, hooks="resid_mid", layers=[1], read_index=[1, 2])
    ref = []
    for s, i in zip(seqs, [1, 2], strict=True):
        _, cache = hooked.run_with_cache(torch.tensor([s]), names_filter="blocks.1.hook_resid_mid")
        ref.append(cache["blocks.1.hook_resid_mid"][0, i])
    assert torch.allclose(mid.acts[:, 0], torch.stack(ref), atol=1e-5)
    z = extract_activations(hooked, seqs, hooks="z", layers=[0])
    assert z.acts.shape == (2, 1, hooked.cfg.n_heads * hooked.cfg.d_head)


def test_errors(tiny):
    hooked, _, tok = tiny
    seqs = encode(tok, TEXTS[:2])
    with pytest.raises(HookPointError, match="Did you mean 'resid_post'"):
        extract_activations(hooked, seqs, hooks="resid_pots")
    with pytest.raises(HookPointError, match="out of range"):
        extract_activations(hooked, seqs, layers=[7])
    with pytest.raises(ConfigError, match="read_index out of range"):
        extract_activations(hooked, seqs, read_index=[0, 99])
    with pytest.raises(ConfigError, match="No sequences"):
        extract_activations(hooked, [])


def test_artifact_round_trip(tiny, tmp_path):
    hooked, _, tok = tiny
    acts = extract_activations(hooked, encode(tok, TEXTS), uids=["a", "b", "c"])
    labelled = acts.with_labels(torch.tensor([1, 0]), keep=[0, 2])
    labelled.save(tmp_path / "acts")
    back = Activations.load(tmp_path / "acts")
    assert torch.equal(back.acts, labelled.acts)
    assert back.uids == ("a", "c")
    assert back.labels is not None and back.labels.tolist() == [1, 0]
    assert back.hook_names == acts.hook_names
    assert not list(tmp_path.glob("**/*.pkl"))


def test_hf_lean_extraction_equals_tl(tiny):
    """The plain-HF path (hooks + early stop) reads the same numbers as the TL path."""
    hooked, hf, tok = tiny
    seqs = encode(tok, TEXTS)
    before = _hf_hook_count(hf)  # transformers may keep its own output-recording hooks
    for hooks in ("resid_post", "resid_pre", "attn_out", "mlp_out"):
        tl = extract_activations(hooked, seqs, hooks=hooks, layers=[0, 1])
        fast = extract_activations(hf, seqs, hooks=hooks, layers=[0, 1], padding_side="right")
        assert torch.allclose(tl.acts, fast.acts, atol=1e-4), hooks
    assert _hf_hook_count(hf) == before
    with pytest.raises(HookPointError, match="no module boundary"):
        extract_activations(hf, seqs, hooks="resid_mid", layers=[0])


def _hf_hook_count(model) -> int:
    return count_hooks(model)


def test_prompt_tokens_and_one_kind_of_a_multi_kind_pass(tiny):
    import fairlens as fl
    from tests.conftest import synthetic_items

    hooked, hf, tok = tiny
    items = synthetic_items(n_templates=1, per_template=2)
    seqs = fl.prompt_tokens(hooked, items)
    assert seqs == fl.prompt_tokens(hf, items, tokenizer=tok)
    assert seqs[0] == tok(fl.format_prompt(items[0], "zero_shot"))["input_ids"]
    acts = extract_activations(hooked, seqs, hooks=["mlp_out", "resid_post"], layers=[2, 0])
    post = acts.of_kind("resid_post")
    assert post.hook_names == ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post")
    torch.testing.assert_close(post.acts[:, 1], acts.at("blocks.2.hook_resid_post"))
    with pytest.raises(ConfigError, match="extracted kinds: mlp_out, resid_post"):
        acts.of_kind("attn_out")
