"""KV-cache generation and teacher-forced scoring: agree with HF generate, with each other, under steering."""

from __future__ import annotations

import pytest
import torch

from fairlens.backend import count_hooks, encode_batch
from fairlens.backend.generation import continuation_logprobs, generate_greedy
from fairlens.errors import ConfigError
from fairlens.steer.steerer import Steerer, SteeringConfig

HOOK = "blocks.1.hook_resid_post"
PROMPTS = ["the old man came late and", "a nurse", "the young woman left early because the"]


def _torch_hooks(model):
    return count_hooks(model)


def _steerer(hf, mode="static", alpha=8.0, positions="generated"):
    g = torch.Generator().manual_seed(1)
    d = hf.config.hidden_size
    return Steerer(
        HOOK,
        torch.randn(d, generator=g),
        torch.randn(d, generator=g),
        0.0,
        SteeringConfig(mode=mode, alpha=alpha, positions=positions),
    )


def test_greedy_matches_transformers_generate(tiny):
    _, hf, tok = tiny
    gen = generate_greedy(hf, tok, PROMPTS, max_new_tokens=6, batch_size=2)
    batch = encode_batch(tok, PROMPTS, padding_side="left")
    with torch.no_grad():
        ref = hf.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )[:, batch.input_ids.shape[1] :]
    for row, tokens in enumerate(gen.tokens):
        assert list(tokens) == ref[row, : len(tokens)].tolist()
        assert len(gen.logprobs[row]) == len(tokens) >= 1


@pytest.mark.parametrize("steer", [False, True])
def test_teacher_forced_scores_equal_generation_scores(tiny, steer):
    """Scoring a continuation steers the same positions as generating it (KV-cache, one token per call)."""
    _, hf, tok = tiny
    before = _torch_hooks(hf)  # transformers keeps a few hooks of its own
    steerer = _steerer(hf)
    ctx = steerer.apply(hf) if steer else torch.no_grad()
    with ctx:
        gen = generate_greedy(hf, tok, PROMPTS, max_new_tokens=5, batch_size=3)
        forced = continuation_logprobs(hf, tok, PROMPTS, gen.tokens, batch_size=2)
    for lp, ref in zip(forced, gen.logprobs, strict=True):
        assert torch.allclose(lp, torch.tensor(ref), atol=1e-4)
    assert _torch_hooks(hf) == before


def test_steering_changes_generation_and_gate_is_recorded_per_token(tiny):
    _, hf, tok = tiny
    plain = generate_greedy(hf, tok, PROMPTS, max_new_tokens=5)
    with _steerer(hf, alpha=60.0).apply(hf):
        steered = generate_greedy(hf, tok, PROMPTS, max_new_tokens=5)
    assert steered.tokens != plain.tokens
    with _steerer(hf, mode="dynamic").apply(hf, record=True) as stats:
        gen = generate_greedy(hf, tok, PROMPTS, max_new_tokens=5, gate=stats)
    assert gen.gate_p_unbiased is not None
    # one gate decision per forward call the row took part in: the prompt pass + each fed token
    for probs, tokens in zip(gen.gate_p_unbiased, gen.tokens, strict=True):
        assert len(probs) == len(tokens)


def test_bad_inputs_are_refused(tiny):
    hooked, hf, tok = tiny
    with pytest.raises(ConfigError, match="plain transformers model"):
        generate_greedy(hooked, tok, PROMPTS)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generate_greedy(hf, tok, PROMPTS, max_new_tokens=0)
    with pytest.raises(ConfigError, match="empty"):
        generate_greedy(hf, tok, [""])
    with pytest.raises(ConfigError, match="one per prompt"):
        continuation_logprobs(hf, tok, PROMPTS, [[1]])
    assert continuation_logprobs(hf, tok, ["a b"], [[]])[0].numel() == 0
