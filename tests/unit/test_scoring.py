"""Answer scoring: padding-independent, equal to hand computation, same on TL and HF."""

from __future__ import annotations

import pytest
import torch

from fairlens.errors import ConfigError
from fairlens.scoring.letters import build_prompts, letter_token_ids, score_items
from tests.conftest import rejects_ill_typed


@pytest.mark.parametrize("mode", ["letter", "loglik"])
def test_left_and_right_padding_agree(tiny, items, mode):
    hooked, _, _ = tiny
    left = score_items(hooked, items[:10], mode=mode, padding_side="left", batch_size=4)
    right = score_items(hooked, items[:10], mode=mode, padding_side="right", batch_size=4)
    assert torch.allclose(left.scores, right.scores, atol=1e-4)
    assert torch.equal(left.predictions, right.predictions)


def test_letter_scores_equal_unbatched_next_token_logits(tiny, items):
    hooked, _, tok = tiny
    res = score_items(hooked, items[:6], mode="letter", batch_size=3)
    letters = letter_token_ids(tok)
    for i, prompt in enumerate(build_prompts(items[:6], "zero_shot", tok, None)):
        ids = torch.tensor([tok.encode(prompt)])
        with torch.no_grad():
            logits = hooked(ids)[0, -1, letters]
        assert torch.allclose(res.scores[i], logits, atol=1e-4)


def test_loglik_equals_hand_computation(tiny, items):
    hooked, _, tok = tiny
    item = items[1]
    res = score_items(hooked, [item], mode="loglik", reduction="sum")
    prompt = build_prompts([item], "zero_shot", tok, None)[0]
    p_ids = tok.encode(prompt)
    for k, answer in enumerate(item.answers):
        c_ids = tok.encode(" " + answer, add_special_tokens=False)
        ids = torch.tensor([p_ids + c_ids])
        with torch.no_grad():
            lp = hooked(ids)[0].log_softmax(-1)
        expected = sum(lp[len(p_ids) - 1 + j, t].item() for j, t in enumerate(c_ids))
        assert res.scores[0, k].item() == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("mode", ["letter", "loglik"])
def test_tl_and_hf_score_the_same(tiny, items, mode):
    hooked, hf, tok = tiny
    a = score_items(hooked, items[:8], mode=mode)
    b = score_items(hf, items[:8], mode=mode, tokenizer=tok)
    assert torch.allclose(a.scores, b.scores, atol=1e-4)


@pytest.mark.ill_typed
def test_bad_inputs(tiny, items):
    hooked, _, _ = tiny
    with rejects_ill_typed(ConfigError, "Unknown scoring mode 'logit'"):
        score_items(hooked, items, mode="logit")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="No items to score"):
        score_items(hooked, [])
    with rejects_ill_typed(ConfigError, "padding_side"):
        score_items(hooked, items[:2], padding_side="middle")  # type: ignore[arg-type]


def test_too_long_prompt_is_a_clear_error(tiny, items):
    from fairlens.testing import tiny_hooked

    short, _, _ = tiny_hooked(seed=0)
    short.cfg.n_ctx = 16  # pretend a small context window
    with pytest.raises(ConfigError, match="context is 16 tokens"):
        score_items(short, items[:2])
