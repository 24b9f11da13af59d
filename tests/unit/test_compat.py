"""Artifacts saved by the previous (flat) layout load in this one and steer exactly as before."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fairlens.activations.extraction import Activations
from fairlens.backend import count_hooks, encode
from fairlens.data import split_by_template
from fairlens.fairsteer.config import FairSteerConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items

OLD = Path(__file__).resolve().parents[1] / "fixtures" / "layout-0.1.0"


def test_a_fairsteer_saved_by_the_flat_layout_loads_and_steers_the_same():
    hooked, _, tok = tiny_hooked(seed=0)
    expected = json.loads((OLD / "expected.json").read_text())
    fs = FairSteer.load(OLD / "fairsteer", model=hooked)
    assert (fs.layer_, fs.alpha_) == (expected["layer"], expected["alpha"])
    ids = torch.tensor([encode(tok, ["the old man came late\nAnswer:"])[0]])
    with torch.no_grad(), fs.steering(hooked, mode="dynamic"):
        logits = hooked(ids)[0, -1]
    torch.testing.assert_close(
        logits[:8], torch.tensor(expected["steered_last_logits_first8"]), atol=1e-5, rtol=0
    )
    assert count_hooks(hooked) == 0


def test_the_same_fit_gives_the_same_numbers_as_before_the_move():
    hooked, _, _ = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    splits = split_by_template(items, {"probe": 0.6, "dsv": 0.2, "eval": 0.2}, seed=0)
    fresh = FairSteer(FairSteerConfig(scoring="loglik", selection="probe", C=1.0, layers=(0, 1, 2)))
    fresh.fit(hooked, list(splits["probe"].items), list(splits["dsv"].items))
    old = FairSteer.load(OLD / "fairsteer", model=hooked)
    torch.testing.assert_close(fresh.dsv_.vectors, old.dsv_.vectors, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        fresh.sweep_.coef.double(), old.sweep_.coef.double(), atol=1e-6, rtol=0
    )
    assert fresh.layer_ == old.layer_ and fresh.summary() == old.summary()


def test_activations_saved_by_the_flat_layout_load():
    acts = Activations.load(OLD / "activations")
    assert acts.acts.shape == (2, 2, 64)
    assert acts.hook_names == ("blocks.0.hook_resid_post", "blocks.2.hook_resid_post")
