"""The figures are built from a fitted FairSteer and its fit data: the same labels, probe sweep,
DSV, layer and strength as the fit (nothing is labelled twice)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairlens.apps.figures import FigureSizes, build_figures
from fairlens.data import split_by_template
from fairlens.detect.gates import gate_labels
from fairlens.errors import ConfigError
from fairlens.fairsteer.estimator import FairSteer
from fairlens.steer.fit_data import FitData
from fairlens.testing import tiny_hooked
from tests.conftest import synthetic_items


def test_figures_show_the_fit_they_are_given():
    hooked, hf, tok = tiny_hooked(seed=0)
    items = synthetic_items(n_templates=10, per_template=12, categories=("Age", "SES", "Religion"))
    parts = {
        k: list(v.items)
        for k, v in split_by_template(
            items, {"probe": 0.5, "dsv": 0.2, "select": 0.3}, seed=0
        ).items()
    }
    fit = FitData(hf, parts["probe"], parts["dsv"], tokenizer=tok, n_dsv_per_category=2)
    fs = FairSteer(n_dsv_per_category=2, alphas=(0.4, 0.8)).fit(
        hf, parts["probe"], parts["dsv"], parts["select"], tokenizer=tok, fit_data=fit
    )
    sizes = FigureSizes(steer_items_per_category=2, category_pairs=2, sweep_layers=1)
    figs, summary = build_figures(
        hooked, fs, fit, parts["select"], parts["dsv"], sizes, seed=0, progress=False
    )
    assert len(figs) == 16
    keep, y = gate_labels("bad", fit.probe_items, fit.predictions)
    assert summary["n_labelled"] == len(keep) and summary["unbiased"] == int(np.sum(y))
    assert summary["fairsteer"]["layer"] == fs.layer_ and summary["fairsteer"]["alpha"] == fs.alpha_
    assert summary["best_probe_layer"] == fs.gates_["bad"].best_layer()
    # the steering sweep covers the fitted layer at the fit's alphas (in the fit's unit)
    ssweep = summary["steering_sweep"]
    assert fs.layer_ in ssweep["layers"] and ssweep["alphas"] == [0.4, 0.8]
    assert {p["layer"] for p in ssweep["points"]} == set(ssweep["layers"])
    # the token view is the fitted steerer's: its hook, its gate threshold
    view = figs["16_token_view"]
    assert fs.hook_name_ in str(view.layout.title.text)
    # the DSV figure is the fit's own direction (cosine of a layer with itself is 1)
    heat = figs["09_dsv_cosine_layers"].data[0].z
    assert np.allclose(np.diag(np.asarray(heat, dtype=float)), 1.0, atol=1e-5)
    assert torch.equal(fs.dsv_.vectors, fit.direction("dsv").vectors)
    with pytest.raises(ConfigError, match="not fitted"):
        build_figures(hooked, FairSteer(), fit, parts["select"], parts["dsv"], sizes)
