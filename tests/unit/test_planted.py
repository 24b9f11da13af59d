"""Planted direction: a label written into layer k only must be found there by every stage.

On a random-init tiny model we add ``+c*u`` (y=1) or ``-c*u`` (y=0) to the last-token residual
stream after block k and take it out again before block k+1, so only ``blocks.k.hook_resid_post``
carries the label. The probe sweep must pick layer k, the mean-difference direction (the DSV
estimator) must align with ``u``, and the steering gate must fire on exactly the y=0 rows.
"""

from __future__ import annotations

import torch

from fairlens.activations.extraction import extract_activations
from fairlens.backend import add_hooks, count_hooks
from fairlens.detect.layer_sweep import probe_sweep
from fairlens.directions import cosine, mean_difference
from fairlens.steer.steerer import Steerer, SteeringConfig
from fairlens.testing import tiny_hooked

K = 2
N = 240
SEQ_LEN = 12


def _setup():
    hooked, _, _ = tiny_hooked(seed=7, n_layers=4)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 250, (N, SEQ_LEN), generator=gen)
    y = torch.randint(0, 2, (N,), generator=gen)
    u = torch.randn(hooked.cfg.d_model, generator=gen)
    u = u / u.norm()
    signs = (2 * y - 1).float()
    scale = 30.0  # ~4x the per-dimension std of the residual stream at layer k

    def plant(act):
        act = act.clone()
        act[:, -1] += scale * signs[: act.shape[0], None] * u
        return act

    def unplant(act):
        act = act.clone()
        act[:, -1] -= scale * signs[: act.shape[0], None] * u
        return act

    planting = [(f"blocks.{K}.hook_resid_post", plant), (f"blocks.{K + 1}.hook_resid_pre", unplant)]
    return hooked, tokens, y, u, planting


def test_planted_direction_is_found_at_layer_k_and_gates_the_right_rows():
    hooked, tokens, y, u, planting = _setup()
    seqs = tokens.tolist()
    with add_hooks(hooked, planting):
        # one batch in input order (equal lengths keep the order), so the planted signs line up
        acts = extract_activations(hooked, seqs, batch_size=N).with_labels(y)
    sweep = probe_sweep(acts.acts, y.numpy(), hook_names=acts.hook_names, cv_folds=3)
    assert sweep.best_layer() == K
    accs = {s.layer: s.accuracy for s in sweep.scores}
    assert accs[K] > 0.95
    assert all(accs[layer] < 0.8 for layer in accs if layer != K)

    direction = mean_difference(acts).at(f"blocks.{K}.hook_resid_post")
    assert cosine(direction, u).item() > 0.9

    hook = f"blocks.{K}.hook_resid_post"
    k_idx = sweep.layers.index(K)
    steerer = Steerer(
        hook,
        direction,
        sweep.coef[k_idx].float(),
        sweep.intercept[k_idx].float(),
        SteeringConfig(mode="dynamic"),
    )
    # The steering hook is registered after the planting hook, so it sees the planted activations.
    with (
        add_hooks(hooked, planting),
        steerer.apply(hooked, record=True) as stats,
        torch.no_grad(),
    ):
        hooked(tokens)
    fired = stats.history[0][:, 0] < 0.5
    agreement = (fired == (y == 0)).float().mean().item()
    assert agreement > 0.95
    assert count_hooks(hooked) == 0
