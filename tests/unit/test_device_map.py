"""Models split across devices by accelerate (``load_hf(device_map=...)`` / ``dispatch_model``):
steering, the gate, extraction and generation give the unsplit model's numbers with layers
offloaded to disk, and a layer left on the meta device is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fairlens.activations.extraction import extract_activations
from fairlens.backend import add_hooks, count_hooks
from fairlens.backend.generation import generate_greedy
from fairlens.errors import ConfigError
from fairlens.scoring.letters import prompt_tokens, score_items
from fairlens.steer.steerer import Steerer, SteeringConfig
from fairlens.testing import tiny_llama, tiny_tokenizer
from tests.conftest import synthetic_items

# layer 1 (the steered one) and the unembedding live on disk, the rest on the CPU
SPLIT = {
    "model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
    "model.layers.2": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk",
}  # fmt: skip


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory):
    from accelerate import dispatch_model

    whole = tiny_llama(tie_word_embeddings=False)
    split = dispatch_model(
        tiny_llama(tie_word_embeddings=False),
        SPLIT,
        offload_dir=str(tmp_path_factory.mktemp("offload")),
    )
    assert split.model.layers[1].self_attn.q_proj.weight.is_meta  # really offloaded
    return whole, split, tiny_tokenizer()


def _steerer(positions: str = "last_prompt") -> Steerer:
    g = torch.Generator().manual_seed(1)
    vector, coef = torch.randn(64, generator=g), torch.randn(64, generator=g) * 0.3
    config = SteeringConfig(alpha=2.0, positions=positions)  # type: ignore[arg-type]
    return Steerer("blocks.1.hook_resid_post", vector, coef, 0.0, config)


def test_steered_scores_and_gate_equal_the_unsplit_model(pair) -> None:
    whole, split, tok = pair
    items = synthetic_items(n_templates=2, per_template=4, categories=("Age",))
    results = []
    for model in (whole, split):
        with _steerer().apply(model) as stats:
            scores = score_items(model, items, tokenizer=tok, batch_size=3).scores
        results.append((scores, stats.result()))
        assert count_hooks(model) == 0
    assert torch.equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1] and results[0][1].fired > 0


def test_extraction_and_steered_generation_equal_the_unsplit_model(pair) -> None:
    whole, split, tok = pair
    items = synthetic_items(n_templates=1, per_template=5, categories=("SES",))
    seqs = prompt_tokens(whole, items, tokenizer=tok)
    a, b = (extract_activations(m, seqs, layers=[0, 1, 2], batch_size=2).acts for m in pair[:2])
    assert torch.equal(a, b)
    texts = [it.context for it in items]
    outs = []
    for model in (whole, split):
        with _steerer("generated").apply(model, record=True) as stats:
            outs.append(generate_greedy(model, tok, texts, max_new_tokens=5, gate=stats))
    assert outs[0].tokens == outs[1].tokens and outs[0].gate_fired == outs[1].gate_fired


def test_load_hf_with_a_device_map_has_the_same_identity(tmp_path: Path) -> None:
    from fairlens.models import load_hf

    tiny_llama(tie_word_embeddings=False).save_pretrained(tmp_path / "m")
    tiny_tokenizer().save_pretrained(tmp_path / "m")
    whole, tok, info = load_hf(str(tmp_path / "m"))
    split, _, split_info = load_hf(
        str(tmp_path / "m"), device_map=SPLIT, offload_folder=tmp_path / "off"
    )
    assert split.model.layers[1].mlp.up_proj.weight.is_meta
    assert split_info.weights_sha == info.weights_sha  # read from the offloaded copy
    items = synthetic_items(n_templates=1, per_template=3, categories=("Age",))
    assert torch.equal(
        score_items(whole, items, tokenizer=tok).scores,
        score_items(split, items, tokenizer=tok).scores,
    )


def test_a_layer_left_on_meta_is_refused_by_name() -> None:
    model = tiny_llama()
    model.model.layers[1].to("meta")
    with pytest.raises(ConfigError, match=r"blocks\.1\.hook_resid_post.*meta device"):
        add_hooks(model, [("blocks.1.hook_resid_post", lambda a: a)])
    assert count_hooks(model) == 0
    with add_hooks(model, [("blocks.0.hook_resid_post", lambda a: a)]):  # others still hook
        assert count_hooks(model) == 1


def test_prefix_cache_refuses_an_offloaded_unembedding(pair) -> None:
    from fairlens.scoring.prefix_cache import PrefixCache

    _, split, tok = pair
    with pytest.raises(ConfigError, match="lm_head"):
        PrefixCache(split, [[1, 2, 3, 4]], read_ids=[5, 6], tokenizer=tok)
