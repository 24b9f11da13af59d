"""Every registered model family, on a tiny random-init model: TL == HF, hooks land, steering agrees.

Each family gets a small HF config here (random weights, the test tokenizer's vocabulary), is saved
as a local HF directory and loaded through the public loaders: ``fairlens.load_model`` (TL) and
``fairlens.load_hf`` (fast path). Adding a family is one entry in ``fairlens.models.FAMILIES`` and
one entry in ``TINY_CONFIGS``; ``test_every_family_has_a_tiny_config`` keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from fairlens.backend import (
    add_hooks,
    count_hooks,
    forward_logits,
    hook_name,
    last_token_logits,
    pad_sequences,
    sliding_window,
)
from fairlens.detect.probes import LinearProbe
from fairlens.errors import ConfigError, HookPointError, ModelLoadError
from fairlens.models import FAMILIES, family_of, get_model_info, load_hf, load_model
from fairlens.steer.steerer import Steerer, SteeringConfig
from fairlens.testing import tiny_tokenizer

TOL = 1e-4
PROMPTS = [
    "The doctor and the nurse came early. Who forgot? Answer: A",
    "A young man left late.",
    "Who was it? The old neighbor",
    "friend",
]


def _common(vocab: int) -> dict[str, Any]:
    return {"vocab_size": vocab, "pad_token_id": vocab - 2, "eos_token_id": vocab - 1}


def _llama(vocab: int) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None,
        tie_word_embeddings=True, **_common(vocab),
    )  # fmt: skip


def _qwen2(vocab: int) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None,
        tie_word_embeddings=False, use_sliding_window=False, **_common(vocab),
    )  # fmt: skip


def _qwen3(vocab: int) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=256, bos_token_id=None,
        tie_word_embeddings=False, use_sliding_window=False, **_common(vocab),
    )  # fmt: skip


def _mistral(vocab: int) -> Any:
    from transformers import MistralConfig

    return MistralConfig(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=1, max_position_embeddings=256, bos_token_id=None,
        sliding_window=None, **_common(vocab),
    )  # fmt: skip


def _gemma2(vocab: int) -> Any:
    from transformers import Gemma2Config

    return Gemma2Config(
        hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
        max_position_embeddings=256, bos_token_id=None, final_logit_softcapping=5.0,
        attn_logit_softcapping=20.0, **_common(vocab),
    )  # fmt: skip


def _gpt2(vocab: int) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        n_embd=64, n_layer=3, n_head=4, n_positions=256, bos_token_id=vocab - 1,
        **_common(vocab),
    )  # fmt: skip


def _gpt_neox(vocab: int) -> Any:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=256, rotary_pct=0.5, use_parallel_residual=True,
        bos_token_id=vocab - 1, **_common(vocab),
    )  # fmt: skip


def _phi3(vocab: int) -> Any:
    from transformers import Phi3Config

    return Phi3Config(
        hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, original_max_position_embeddings=256,
        sliding_window=None, bos_token_id=None, **_common(vocab),
    )  # fmt: skip


TINY_CONFIGS: dict[str, Callable[[int], Any]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "mistral": _mistral,
    "gemma2": _gemma2,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "phi3": _phi3,
}


def test_every_family_has_a_tiny_config():
    assert set(TINY_CONFIGS) == set(FAMILIES)


def _random_model(family: str, seed: int = 0) -> Any:
    from transformers import AutoModelForCausalLM

    config = TINY_CONFIGS[family](len(tiny_tokenizer()))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # larger than HF's init so that random logits are not all ~equal
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2)
            elif "norm" in name or "ln" in name:  # 1-D norm weights/biases: not all identical
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def pair(request, tmp_path_factory):
    """``(family, hooked, hf, tokenizer)`` loaded from one saved random-init HF directory."""
    family = request.param
    folder = tmp_path_factory.mktemp(family)
    model = _random_model(family)
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    hooked = load_model(str(folder))
    hf, tokenizer, info = load_hf(str(folder))
    return family, hooked, hf, tokenizer, info


def _batch(tokenizer: Any, side: str) -> Any:
    seqs = [tokenizer(p)["input_ids"] for p in PROMPTS]
    return pad_sequences(seqs, pad_token_id=tokenizer.pad_token_id, padding_side=side)  # type: ignore[arg-type]


def test_family_is_resolved_and_recorded(pair):
    family, hooked, hf, _, info = pair
    assert family_of(hf) is FAMILIES[family]
    assert info.architecture in FAMILIES[family].architectures
    assert get_model_info(hooked).weights_sha == info.weights_sha
    assert (info.n_layers, info.d_model) == (hooked.cfg.n_layers, hooked.cfg.d_model)


@pytest.mark.parametrize("side", ["left", "right"])
def test_tl_logits_equal_hf_logits(pair, side):
    _, hooked, hf, tokenizer, _ = pair
    batch = _batch(tokenizer, side)
    with torch.no_grad():
        tl, ref = forward_logits(hooked, batch), forward_logits(hf, batch)
        real = batch.attention_mask.bool()
        assert (tl[real] - ref[real]).abs().max().item() <= TOL
        tl_last, hf_last = last_token_logits(hooked, batch), last_token_logits(hf, batch)
    rows = torch.arange(len(PROMPTS))
    assert (tl_last - hf_last).abs().max().item() <= TOL
    assert (hf_last - ref[rows, batch.last_index]).abs().max().item() <= TOL


@pytest.mark.parametrize("kind", ["resid_pre", "resid_post", "attn_out", "mlp_out"])
def test_hook_points_carry_the_same_tensor_on_both_paths(pair, kind):
    _, hooked, hf, tokenizer, _ = pair
    batch = _batch(tokenizer, "left")
    name = hook_name(kind, 1)
    seen: dict[str, torch.Tensor] = {}

    def grab(key: str) -> Callable[[torch.Tensor], None]:
        def fn(act: torch.Tensor) -> None:
            seen[key] = act.detach().clone()

        return fn

    with torch.no_grad():
        with add_hooks(hooked, [(name, grab("tl"))]) as handle:
            assert len(handle) == 1 and count_hooks(hooked) == 1
            forward_logits(hooked, batch)
        with add_hooks(hf, [(name, grab("hf"))]):
            forward_logits(hf, batch)
    real = batch.attention_mask.bool()
    assert (seen["tl"][real] - seen["hf"][real]).abs().max().item() <= TOL
    assert count_hooks(hooked) + count_hooks(hf) == 0


def test_a_fitted_steerer_gives_the_same_outputs_on_both_paths(pair):
    _, hooked, hf, tokenizer, _ = pair
    name = hook_name("resid_post", 1)
    # Fit a probe and a mean-difference vector on real activations of the TL model.
    texts = [f"{p} {i}" for i in range(6) for p in PROMPTS]
    acts: list[torch.Tensor] = []
    with torch.no_grad(), add_hooks(hooked, [(name, lambda a: acts.append(a[:, -1]) and None)]):
        for text in texts:
            hooked(torch.tensor([tokenizer(text)["input_ids"]]))
    x = torch.cat(acts).float()
    y = np.arange(len(texts)) % 2
    probe = LinearProbe(C=1.0).fit(x.numpy(), y)
    vector = x[y == 1].mean(0) - x[y == 0].mean(0)
    coef = torch.from_numpy(probe.coef_[0]).float()
    intercept = float(probe.intercept_[0])
    steerer = Steerer(name, vector, coef, intercept, SteeringConfig(alpha=3.0, positions="all"))
    batch = _batch(tokenizer, "left")
    real = batch.attention_mask.bool()
    with torch.no_grad():
        base = forward_logits(hf, batch)
        with steerer.apply(hooked, record=True) as tl_stats:
            tl = forward_logits(hooked, batch)
        with steerer.apply(hf, record=True) as hf_stats:
            ref = forward_logits(hf, batch)
    # Pad positions are steered too under positions="all" but hold no token: compare real ones.
    p_tl, p_hf = tl_stats.history[-1][real], hf_stats.history[-1][real]
    assert (p_tl - p_hf).abs().max().item() <= TOL
    fired = p_hf < steerer.config.tau
    assert torch.equal(p_tl < steerer.config.tau, fired)
    assert 0 < int(fired.sum()) < int(real.sum())  # the gate decided both ways
    assert (tl[real] - ref[real]).abs().max().item() <= TOL
    assert (ref[real] - base[real]).abs().max().item() > 1e-2  # steering changed the outputs
    assert count_hooks(hooked) + count_hooks(hf) == 0


def test_tl_only_hook_is_refused_on_the_fast_path(pair):
    _, _, hf, _, _ = pair
    with pytest.raises(HookPointError, match="no module boundary"):
        add_hooks(hf, [(hook_name("z", 0), lambda a: None)])
    with pytest.raises(HookPointError, match="out of range"):
        add_hooks(
            hf,
            [
                (hook_name("resid_post", 0), lambda a: None),
                ("blocks.99.hook_resid_post", lambda a: None),
            ],
        )
    assert count_hooks(hf) == 0  # the hook added before the failure was removed too


def test_unknown_family_is_one_clear_error():
    from transformers import BloomConfig

    with pytest.raises(ModelLoadError, match="not a family fairlens knows"):
        family_of(BloomConfig(architectures=["BloomForCausalLM"]))


def test_prefix_cached_scoring_is_exact_on_every_family(pair):
    """The search's one-token forward on a KV cache equals full-prompt runs (steered or not)."""
    from fairlens.backend import encode
    from fairlens.scoring.letters import letter_token_ids
    from fairlens.scoring.prefix_cache import PrefixCache, make_scorer
    from fairlens.scoring.variant_scorer import FullPromptScorer

    _, hooked, hf, tokenizer, _ = pair
    seqs = encode(tokenizer, [p + "\nAnswer:" for p in PROMPTS])
    if sliding_window(hf) is not None:  # the tiny Gemma-2 slides over 8 tokens: refused, clearly
        with pytest.raises(ConfigError, match="sliding attention window"):
            PrefixCache(hf, seqs, read_ids=letter_token_ids(tokenizer), tokenizer=tokenizer)
        assert isinstance(
            make_scorer(hf, seqs, read_ids=[1], tokenizer=tokenizer, keep_cache=False),
            FullPromptScorer,
        )
        seqs = [q[-8:] for q in seqs]  # within the window the cache is exact again
    ids = letter_token_ids(tokenizer)
    hooks = [hook_name("resid_post", 0), hook_name("resid_post", 2)]
    g = torch.Generator().manual_seed(0)
    d = hooked.cfg.d_model
    edits = [
        {hooks[0]: 3 * torch.randn(d, generator=g)},
        {hooks[1]: 3 * torch.randn(d, generator=g)},
    ]
    cached = PrefixCache(hf, seqs, read_ids=ids, capture=hooks, tokenizer=tokenizer, batch_size=3)
    full = FullPromptScorer(hooked, seqs, read_ids=ids, capture=hooks, tokenizer=tokenizer)
    torch.testing.assert_close(cached.base_logits, full.base_logits, atol=TOL, rtol=0)
    for h in hooks:
        torch.testing.assert_close(cached.base_acts[h], full.base_acts[h], atol=TOL, rtol=0)
    steered = cached.logits(edits)
    torch.testing.assert_close(steered, full.logits(edits), atol=TOL, rtol=0)
    assert not torch.allclose(steered[0], cached.base_logits)
    assert count_hooks(hooked) + count_hooks(hf) == 0
