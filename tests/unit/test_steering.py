"""Steering: hooks removed on every exit, alpha=0 is a no-op, rows gated independently, generation."""

from __future__ import annotations

import pytest
import torch

from fairlens.backend import count_hooks, encode_batch, forward_logits
from fairlens.errors import ConfigError
from fairlens.steer.steerer import Steerer, SteeringConfig
from tests.conftest import rejects_ill_typed

HOOK = "blocks.1.hook_resid_post"


def _last_acts(hooked, batch):
    _, cache = hooked.run_with_cache(
        batch.input_ids, attention_mask=batch.attention_mask, names_filter=HOOK
    )
    return cache[HOOK][:, -1]


def _separating_steerer(hooked, batch, mode="dynamic", alpha=4.0, **kw):
    """A gate that calls row 0 biased (P<0.5) and row 1 unbiased, with a random vector."""
    a = _last_acts(hooked, batch)
    coef = a[1] - a[0]
    intercept = -(coef @ (a[0] + a[1]) / 2)
    vector = torch.randn(hooked.cfg.d_model, generator=torch.Generator().manual_seed(0))
    return Steerer(HOOK, vector, coef, intercept, SteeringConfig(mode=mode, alpha=alpha, **kw))


@pytest.fixture
def batch(tiny):
    _, _, tok = tiny
    return encode_batch(tok, ["the old man came late", "a nurse left"], padding_side="left")


def test_hooks_removed_after_normal_and_raised_exit(tiny, batch):
    hooked, _, _ = tiny
    steerer = _separating_steerer(hooked, batch)
    assert count_hooks(hooked) == 0
    with steerer.apply(hooked):
        assert count_hooks(hooked) == 1
        forward_logits(hooked, batch)
    assert count_hooks(hooked) == 0
    with pytest.raises(RuntimeError, match="boom"), steerer.apply(hooked):
        assert count_hooks(hooked) == 1
        raise RuntimeError("boom")
    assert count_hooks(hooked) == 0


def test_user_hooks_survive(tiny, batch):
    hooked, _, _ = tiny
    seen = []
    steerer = _separating_steerer(hooked, batch)
    hooked.add_hook(HOOK, lambda act, hook: seen.append(1))
    try:
        with steerer.apply(hooked):
            forward_logits(hooked, batch)
        forward_logits(hooked, batch)
        assert len(seen) == 2  # the user's hook is still there after our context exits
    finally:
        hooked.reset_hooks()
    assert count_hooks(hooked) == 0


def test_alpha_zero_and_off_are_bit_identical(tiny, batch):
    hooked, _, _ = tiny
    with torch.no_grad():
        plain = forward_logits(hooked, batch)
        for steerer in (
            _separating_steerer(hooked, batch, alpha=0.0, mode="static"),
            _separating_steerer(hooked, batch, mode="off"),
        ):
            with steerer.apply(hooked):
                assert torch.equal(forward_logits(hooked, batch), plain)


def test_all_unbiased_gate_is_bit_identical(tiny, batch):
    hooked, _, _ = tiny
    steerer = _separating_steerer(hooked, batch, tau=0.0)  # P(unbiased) < 0 never holds
    with torch.no_grad():
        plain = forward_logits(hooked, batch)
        with steerer.apply(hooked) as stats:
            steered = forward_logits(hooked, batch)
    assert torch.equal(steered, plain)
    assert int(stats.fired) == 0 and int(stats.probed) == 2


def test_rows_are_gated_independently(tiny, batch):
    hooked, _, _ = tiny
    steerer = _separating_steerer(hooked, batch)
    with torch.no_grad():
        plain = forward_logits(hooked, batch)
        with steerer.apply(hooked, record=True) as stats:
            steered = forward_logits(hooked, batch)
    probs = stats.history[0][:, 0]
    assert probs[0] < 0.5 < probs[1]
    assert not torch.allclose(steered[0, -1], plain[0, -1], atol=1e-3)  # row 0 steered
    assert torch.equal(steered[1], plain[1])  # row 1 untouched
    assert torch.equal(steered[0, :-1], plain[0, :-1])  # only the last position of row 0
    assert int(stats.fired) == 1


def test_static_mode_steers_every_row(tiny, batch):
    hooked, _, _ = tiny
    steerer = _separating_steerer(hooked, batch, mode="static")
    with torch.no_grad():
        plain = forward_logits(hooked, batch)
        with steerer.apply(hooked):
            steered = forward_logits(hooked, batch)
    for row in range(2):
        assert not torch.allclose(steered[row, -1], plain[row, -1], atol=1e-3)


def test_all_positions_policy(tiny, batch):
    hooked, _, _ = tiny
    steerer = _separating_steerer(hooked, batch, mode="static", positions="all")
    with torch.no_grad(), steerer.apply(hooked) as stats:
        forward_logits(hooked, batch)
    assert int(stats.probed) == int(batch.attention_mask.sum()) < batch.input_ids.numel()  # no pads


def _generate(hooked, batch, n):
    return hooked.generate(
        batch.input_ids,
        max_new_tokens=n,
        do_sample=False,
        use_past_kv_cache=True,
        verbose=False,
        padding_side="left",
        stop_at_eos=False,
    )


def test_generation_probes_and_steers_each_new_token(tiny, batch):
    hooked, _, _ = tiny
    n_new = 4
    plain = _generate(hooked, batch, n_new)
    steerer = _separating_steerer(hooked, batch, mode="static", alpha=50.0)
    with steerer.apply(hooked) as stats:
        steered = _generate(hooked, batch, n_new)
    assert count_hooks(hooked) == 0
    assert int(stats.probed) == 2 * n_new  # prompt's last token + each generated token, per row
    assert not torch.equal(steered, plain)
    with steerer.with_config(positions="last_prompt").apply(hooked) as stats:
        _generate(hooked, batch, n_new)
    assert int(stats.probed) == 2  # only the prompt pass
    with steerer.with_config(alpha=0.0).apply(hooked):
        assert torch.equal(_generate(hooked, batch, n_new), plain)


@pytest.mark.ill_typed
def test_config_validation():
    with pytest.raises(ConfigError, match="tau is a probability"):
        SteeringConfig(tau=1.5)
    with rejects_ill_typed(ConfigError, "mode must be one of"):
        SteeringConfig(mode="always")  # type: ignore[arg-type]
    with rejects_ill_typed(ConfigError, "vector and coef"):
        Steerer(HOOK, torch.zeros(4), torch.zeros(5), 0.0)


def test_fast_path_on_hf_model_matches_tl(tiny, batch):
    """The same Steerer on the plain HF model: same gate decisions, same logits, no hook left."""
    hooked, hf, _ = tiny
    steerer = _separating_steerer(hooked, batch)
    before = count_hooks(hf)
    with torch.no_grad():
        with steerer.apply(hooked, record=True) as tl_stats:
            tl = forward_logits(hooked, batch)
        with steerer.apply(hf, record=True) as hf_stats:
            fast = forward_logits(hf, batch)
    assert torch.equal(tl_stats.history[0] < 0.5, hf_stats.history[0] < 0.5)
    mask = batch.attention_mask.bool()
    assert (tl[mask] - fast[mask]).abs().max().item() <= 1e-4
    assert count_hooks(hf) == before


def test_fast_path_generation_matches_tl(tiny, batch):
    hooked, hf, _ = tiny
    steerer = _separating_steerer(hooked, batch, mode="static", alpha=20.0)
    with steerer.apply(hooked):
        tl = _generate(hooked, batch, 4)
    with steerer.apply(hf) as stats, torch.no_grad():
        fast = hf.generate(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=0,
        )
    assert torch.equal(tl, fast)
    assert int(stats.probed) == 2 * 4


@pytest.mark.parametrize("side", ["left", "right"])
def test_gate_statistics_count_tokens_not_pads(tiny, side):
    """A static steerer at every position of a padded batch: probed = fired = the real tokens."""
    from fairlens.backend import forward_logits, pad_sequences

    hooked, hf, _ = tiny
    seqs = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16]]
    batch = pad_sequences(seqs, pad_token_id=0, padding_side=side)
    d = hf.config.hidden_size
    static = Steerer(
        HOOK, torch.ones(d), torch.zeros(d), 0.0, SteeringConfig(mode="static", positions="all")
    )
    for model in (hooked, hf):
        with torch.no_grad(), static.apply(model) as stats:
            forward_logits(model, batch)
        result = stats.result()
        assert result.probed == result.fired == sum(map(len, seqs)) == 12
        assert result.calls == 1 and result.rate == 1.0
