"""The real embedded SmolLM2-135M: TL == HF, padding-independent scoring on real BBQ, steering hygiene."""

from __future__ import annotations

import pytest
import torch

from fairlens.backend import count_hooks
from fairlens.data import subsample
from fairlens.scoring.letters import score_items
from fairlens.steer.steerer import Steerer, SteeringConfig

pytestmark = pytest.mark.integration


def test_smollm2_config_and_logits_match_hf(smollm2):
    hooked, hf, tok = smollm2
    cfg = hooked.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads) == (30, 576, 9, 3)
    ids = torch.tensor([tok.encode("I saw a grandson and their grandfather last week.\nAnswer:")])
    with torch.no_grad():
        diff = (hooked(ids) - hf(ids).logits).abs().max().item()
    assert diff <= 1e-4


def test_real_bbq_scoring_padding_and_backend_independent(smollm2, bbq_items):
    hooked, hf, tok = smollm2
    items = subsample(bbq_items, 1, seed=0)[:8]
    for mode in ("letter", "loglik"):
        left = score_items(hooked, items, mode=mode, padding_side="left", batch_size=8)
        right = score_items(hooked, items, mode=mode, padding_side="right", batch_size=8)
        on_hf = score_items(hf, items, mode=mode, tokenizer=tok, batch_size=8)
        assert torch.allclose(left.scores, right.scores, atol=1e-3)
        assert torch.allclose(left.scores, on_hf.scores, atol=1e-3)


def test_generation_under_steering_leaves_no_hooks(smollm2):
    hooked, _, tok = smollm2
    d = hooked.cfg.d_model
    # P(unbiased) = sigmoid(1) > 0.5 everywhere: probed at every step, never fires.
    steerer = Steerer(
        "blocks.10.hook_resid_post", torch.ones(d), torch.zeros(d), 1.0, SteeringConfig()
    )
    ids = torch.tensor([tok.encode("The nurse said")])
    plain = hooked.generate(ids, max_new_tokens=3, do_sample=False, verbose=False)
    with steerer.apply(hooked) as stats:
        same = hooked.generate(ids, max_new_tokens=3, do_sample=False, verbose=False)
    assert torch.equal(plain, same)
    assert int(stats.probed) == 3 and int(stats.fired) == 0
    assert count_hooks(hooked) == 0
