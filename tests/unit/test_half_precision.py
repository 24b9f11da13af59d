"""The gate and the probes compute in float32 whatever the model's dtype: a bfloat16 model's gate
decisions are the float32 gate's on its own activations, a bfloat16 gate would not be, and the
decisions agree with the float32 model's wherever bfloat16 rounding cannot move P(unbiased) past
tau."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairlens.backend import add_hooks
from fairlens.detect.probes import LinearProbe
from fairlens.scoring.likelihood import text_logprobs
from fairlens.steer.steerer import Steerer, SteeringConfig
from fairlens.testing import tiny_llama, tiny_tokenizer
from tests.conftest import synthetic_items

HOOK = "blocks.1.hook_resid_post"
TAUS = np.round(np.arange(0.05, 0.96, 0.01), 2)


@pytest.fixture(scope="module")
def setting():
    g = torch.Generator().manual_seed(1)
    vector, coef = torch.randn(64, generator=g), torch.randn(64, generator=g) * 0.3
    texts = [it.context for it in synthetic_items(n_templates=2, per_template=8)]
    return tiny_tokenizer(), texts, vector, coef


def _gated(model, tok, texts, vector, coef, tau):
    """Per-token P(unbiased) and decisions of a dynamic steerer at every position."""
    steerer = Steerer(HOOK, vector, coef, 0.0, SteeringConfig(alpha=1.0, tau=tau, positions="all"))
    with steerer.apply(model, record=True) as stats:
        scores = text_logprobs(model, tok, texts, batch_size=1, gate=stats)
    assert scores.gate_p_unbiased is not None and scores.gate_fired is not None
    return torch.cat(scores.gate_p_unbiased), torch.cat(scores.gate_fired)


def _activations(model, tok, texts):
    """The hook's activations at the scored tokens, as the model computes them (no steering)."""
    out = []
    for text in texts:  # one at a time: no pads, and in the order of the texts
        seen: list[torch.Tensor] = []
        with add_hooks(model, [(HOOK, lambda a, seen=seen: seen.append(a.detach().clone()) or a)]):
            (lp,) = text_logprobs(model, tok, [text]).logprobs
        out.append(seen[0][0, -len(lp) :])
    return torch.cat(out)


def test_bf16_gate_is_float32_math_on_bf16_activations(setting) -> None:
    tok, texts, vector, coef = setting
    bf16 = tiny_llama().to(torch.bfloat16)
    p, fired = _gated(bf16, tok, texts, vector, coef, tau=0.6)
    acts = _activations(bf16, tok, texts)
    assert acts.dtype == torch.bfloat16 and p.dtype == torch.float32
    reference = torch.sigmoid(acts.float() @ coef)
    # equal up to float32 summation order (a bfloat16 gate is ~1e-2 off, below)
    torch.testing.assert_close(p, reference, rtol=0, atol=1e-6)
    far = (reference - 0.6).abs() > 1e-3
    assert torch.equal(fired[far], reference[far] < 0.6)
    # the check has teeth: a gate computed in bfloat16 flips decisions beyond the 1e-3 margin
    half = torch.sigmoid((acts @ coef.to(torch.bfloat16)).float())
    flips = sum(
        int((((reference < t) != (half < t)) & ((reference - t).abs() > 1e-3)).sum()) for t in TAUS
    )
    assert flips > 0


def _hf_scale() -> torch.nn.Module:
    """The tiny model with weights at Hugging Face's initialisation scale (std 0.02), where, as
    in trained models, bfloat16 rounding moves the residual stream by a small relative amount."""
    model = tiny_llama()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.mul_(0.1)
    return model


def test_bf16_decisions_equal_float32_models_away_from_tau(setting) -> None:
    tok, texts, vector, coef = setting
    coef = coef / 0.3  # unit-scale probe weights: P(unbiased) spreads over ~0.4..0.6 here
    p32, _ = _gated(_hf_scale(), tok, texts, vector, coef, tau=0.5)
    tau = float(p32.median())  # half the tokens on each side
    p32, fired32 = _gated(_hf_scale(), tok, texts, vector, coef, tau=tau)
    p16, fired16 = _gated(_hf_scale().to(torch.bfloat16), tok, texts, vector, coef, tau=tau)
    assert float((p32 - p16).abs().max()) > 0  # the bfloat16 model computes other activations
    far = (p32 - tau).abs() > 1e-3
    assert int(fired32[far].sum()) > 100 and int((~fired32[far]).sum()) > 100
    assert torch.equal(fired32[far], fired16[far])


def test_probe_reads_half_precision_in_float32() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    probe = LinearProbe().fit(x, (x[:, 0] > 0).astype(int))
    acts = torch.from_numpy(x).to(torch.bfloat16)
    p = probe.p_unbiased_torch(acts)
    assert p.dtype == torch.float32
    assert torch.equal(p, probe.p_unbiased_torch(acts.float()))
