"""Prefix-cached scoring is exact: equal to full-prompt runs, steered or not, at every layer."""

from __future__ import annotations

import pytest
import torch

from fairlens.backend import count_hooks, encode, encode_batch
from fairlens.errors import ConfigError
from fairlens.scoring.letters import letter_token_ids
from fairlens.scoring.prefix_cache import PrefixCache
from fairlens.scoring.variant_scorer import FullPromptScorer, compose_dynamic, gate_fires
from fairlens.steer.steerer import Steerer, SteeringConfig

TEXTS = [
    "the old man came late\nAnswer:",
    "a nurse left\nAnswer:",
    "who is the doctor that came early today, the friend or the neighbor?\nAnswer:",
    "x:",
    "the young woman and the old man left early\nAnswer:",
]
HOOKS = [f"blocks.{layer}.hook_resid_post" for layer in range(3)]


def _hf_hooks(model) -> int:
    return count_hooks(model)


@pytest.fixture(scope="module")
def prompts(tiny):
    _, _, tok = tiny
    return encode(tok, TEXTS), letter_token_ids(tok)


@pytest.fixture(scope="module")
def edits():
    g = torch.Generator().manual_seed(0)
    one_each = [{h: 3 * torch.randn(64, generator=g)} for h in HOOKS]
    per_item = {
        HOOKS[0]: torch.randn(len(TEXTS), 64, generator=g),
        HOOKS[2]: torch.randn(64, generator=g),
    }
    return [*one_each, per_item, {}]


@pytest.mark.parametrize("side", ["left", "right"])
def test_cached_logits_equal_full_prompt_logits(tiny, prompts, edits, side):
    """Unsteered and steered at every layer, per-item deltas too, both paddings, TL and HF."""
    hooked, hf, tok = tiny
    seqs, ids = prompts
    cached = PrefixCache(
        hf, seqs, read_ids=ids, capture=HOOKS, tokenizer=tok, batch_size=2, padding_side=side
    )
    full_tl = FullPromptScorer(hooked, seqs, read_ids=ids, capture=HOOKS, tokenizer=tok)
    full_hf = FullPromptScorer(
        hf, seqs, read_ids=ids, capture=HOOKS, tokenizer=tok, padding_side=side
    )
    assert cached.base_logits.shape == (len(TEXTS), 3)
    torch.testing.assert_close(cached.base_logits, full_tl.base_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(cached.base_logits, full_hf.base_logits, atol=1e-4, rtol=0)
    for h in HOOKS:
        torch.testing.assert_close(cached.base_acts[h], full_tl.base_acts[h], atol=1e-4, rtol=0)
    steered = cached.logits(edits)
    assert steered.shape == (len(edits), len(TEXTS), 3)
    torch.testing.assert_close(steered, full_tl.logits(edits), atol=1e-4, rtol=0)
    torch.testing.assert_close(steered, full_hf.logits(edits), atol=1e-4, rtol=0)
    assert not torch.allclose(steered[0], cached.base_logits)  # the edits do move the logits
    torch.testing.assert_close(steered[-1], cached.base_logits, atol=1e-5, rtol=0)
    assert _hf_hooks(hf) == 0 and count_hooks(hooked) == 0


def test_batching_over_variants_does_not_change_results(tiny, prompts, edits):
    _, hf, tok = tiny
    seqs, ids = prompts
    wide = PrefixCache(hf, seqs, read_ids=ids, tokenizer=tok, batch_size=5, rows_per_pass=1000)
    narrow = PrefixCache(hf, seqs, read_ids=ids, tokenizer=tok, batch_size=1, rows_per_pass=1)
    a = wide.logits(edits)
    torch.testing.assert_close(a, narrow.logits(edits), atol=1e-5, rtol=0)
    torch.testing.assert_close(a, wide.logits(edits), atol=0, rtol=0)  # the cache is never mutated


def test_composed_dynamic_equals_a_real_dynamic_run(tiny, prompts):
    """Gate on the unsteered activation, steered logits where it fires: same as the Steerer."""
    hooked, hf, tok = tiny
    seqs, ids = prompts
    hook = HOOKS[1]
    cached = PrefixCache(hf, seqs, read_ids=ids, capture=[hook], tokenizer=tok)
    acts = cached.base_acts[hook]
    coef = acts[0] - acts[1]  # fires on some rows, not others
    intercept = -(coef @ (acts[0] + acts[1]) / 2)
    vector = torch.randn(64, generator=torch.Generator().manual_seed(3)) * 4
    fire = gate_fires(acts, coef, intercept, 0.5)
    assert 0 < int(fire.sum()) < len(TEXTS)
    composed = compose_dynamic(cached.base_logits, cached.logits([{hook: vector}])[0], fire)
    steerer = Steerer(hook, vector, coef, intercept, SteeringConfig(mode="dynamic"))
    batch = encode_batch(tok, TEXTS, padding_side="left")
    for model in (hooked, hf):
        full = FullPromptScorer(model, seqs, read_ids=ids, tokenizer=tok)
        with steerer.apply(model) as stats:
            real = full.logits([{}])[0]
        torch.testing.assert_close(composed, real, atol=1e-4, rtol=0)
        assert int(stats.fired) == int(fire.sum())
    assert batch.input_ids.shape[0] == len(TEXTS)


def test_band_steerer_equals_the_cached_band(tiny, prompts):
    """A band: vectors at consecutive layers, one gate decision at the first, as cached edits."""
    hooked, hf, tok = tiny
    seqs, ids = prompts
    cached = PrefixCache(hf, seqs, read_ids=ids, capture=[HOOKS[0]], tokenizer=tok)
    g = torch.Generator().manual_seed(5)
    v0, v1 = torch.randn(64, generator=g) * 3, torch.randn(64, generator=g) * 3
    acts = cached.base_acts[HOOKS[0]]
    coef = acts[2] - acts[0]
    intercept = -(coef @ (acts[2] + acts[0]) / 2)
    fire = gate_fires(acts, coef, intercept, 0.5)
    composed = compose_dynamic(
        cached.base_logits, cached.logits([{HOOKS[0]: v0, HOOKS[1]: v1}])[0], fire
    )
    steerer = Steerer(
        HOOKS[0], v0, coef, intercept, SteeringConfig(mode="dynamic"), band=[(HOOKS[1], v1)]
    )
    full = FullPromptScorer(hooked, seqs, read_ids=ids, tokenizer=tok)
    with steerer.apply(hooked):
        real = full.logits([{}])[0]
    torch.testing.assert_close(composed, real, atol=1e-4, rtol=0)
    assert count_hooks(hooked) == 0


def test_refusals(tiny, prompts):
    hooked, hf, tok = tiny
    seqs, ids = prompts
    with pytest.raises(ConfigError, match="plain transformers model"):
        PrefixCache(hooked, seqs, read_ids=ids)
    with pytest.raises(ConfigError, match="fewer than 2 tokens"):
        PrefixCache(hf, [seqs[0], seqs[0][:1]], read_ids=ids, tokenizer=tok)
    cached = PrefixCache(hf, seqs, read_ids=ids, tokenizer=tok)
    with pytest.raises(ConfigError, match="NaN or infinite"):
        cached.logits([{HOOKS[0]: torch.full((64,), float("nan"))}])
    with pytest.raises(ConfigError, match="outside the model"):
        cached.logits([{"blocks.7.hook_resid_post": torch.zeros(64)}])
    with pytest.raises(ConfigError, match="shape"):
        cached.logits([{HOOKS[0]: torch.zeros(63)}])
    with pytest.raises(ConfigError, match="uids"):
        PrefixCache(hf, seqs, read_ids=ids, tokenizer=tok, uids=["a"])
    assert _hf_hooks(hf) == 0


def test_gradients_reach_the_delta_not_the_cache(tiny, prompts):
    """forward_with is differentiable in the added vector (the optimised direction uses it)."""
    _, hf, tok = tiny
    seqs, ids = prompts
    cached = PrefixCache(hf, seqs, read_ids=ids, tokenizer=tok, batch_size=5)
    v = torch.zeros(64, requires_grad=True)
    with torch.enable_grad():
        rows, z = cached.forward_with(0, {HOOKS[1]: v})
        z[:, 0].sum().backward()
    assert v.grad is not None and float(v.grad.norm()) > 0
    assert sorted(rows.tolist()) == list(range(len(TEXTS)))
    torch.testing.assert_close(z.detach(), cached.base_logits[rows], atol=1e-5, rtol=0)
