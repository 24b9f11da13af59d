"""fairlens.plots: every figure has its title, axes and the expected traces; no file is written."""

from __future__ import annotations

import argparse

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from fairlens import plots
from fairlens.analysis import (
    AblationEffect,
    AblationRow,
    CosineMatrix,
    HeadSweep,
    HookTypeSweep,
    LayerMetrics,
    PCAResult,
    ProjectionResult,
    SteeringPoint,
    SteeringSweep,
    TokenView,
    method_cosines,
)
from fairlens.apps.figures import FigureSizes, write_figures
from fairlens.apps.figures_cli import register_cli
from fairlens.errors import ConfigError
from tests.conftest import synthetic_items

HOOKS = tuple(f"blocks.{i}.hook_resid_post" for i in range(3))


def _title(fig: go.Figure) -> str:
    return fig.layout.title.text  # type: ignore[union-attr]


def test_hook_type_heatmap_and_curves():
    acc = np.array([[0.5, 0.7, 0.9], [0.6, 0.8, 0.7]])
    res = HookTypeSweep(("resid_pre", "resid_post"), (0, 1, 2), acc, acc, acc * 0 + 0.05, acc, n=40)
    fig = plots.hook_type_heatmap(res)
    assert isinstance(fig, go.Figure) and "n=40" in _title(fig)
    assert np.allclose(fig.data[0].z, 100 * acc)  # type: ignore[attr-defined]
    assert fig.layout.xaxis.title.text.startswith("layer")  # type: ignore[union-attr]
    curves = plots.layer_curves(res)
    names = [t.name for t in curves.data if t.showlegend is not False]  # type: ignore[attr-defined]
    assert "resid_post (CV mean ± std)" in names and "resid_pre (validation)" in names
    assert curves.layout.yaxis.title.text == "probe accuracy (%)"  # type: ignore[union-attr]


def test_metrics_pca_and_projection_figures_carry_item_hover():
    items = synthetic_items(n_templates=1, per_template=6)
    n = len(items)
    uids = tuple(it.uid for it in items)
    labels = np.array([0, 1] * (n // 2))
    m = LayerMetrics(HOOKS, (0, 1, 2), *(np.arange(3.0) for _ in range(4)))
    assert len(plots.metrics_curves(m).data) == 4
    pca = PCAResult(
        HOOKS, np.random.default_rng(0).normal(size=(3, n, 2)), np.full((3, 2), 0.2), labels, uids
    )
    fig = plots.pca_grid(pca, items=items)
    assert len(fig.data) == 3 * 2  # 3 panels x 2 classes
    assert items[0].question in "".join(fig.data[0].text + fig.data[1].text)  # type: ignore[attr-defined]
    cat = plots.pca_grid(pca, categories=[it.category for it in items], colour_by="category")
    assert {t.name for t in cat.data} == {"Age", "SES"}  # type: ignore[attr-defined]
    with pytest.raises(ConfigError):
        plots.pca_grid(pca, colour_by="category")
    proj = ProjectionResult(
        HOOKS, np.random.default_rng(1).normal(size=(n, 3)), labels, uids, "DSV"
    )
    hist = plots.projection_histograms(proj, items=items)
    kinds = [type(t).__name__ for t in hist.data]
    assert kinds.count("Histogram") == 6 and kinds.count("Scatter") == 6
    assert "DSV" in _title(hist)


def test_head_cosine_and_method_figures():
    heads = HeadSweep(
        (0, 1),
        4,
        2,
        np.full((2, 4), 0.6),
        np.full((2, 4), np.nan),
        np.full((2, 2), 0.7),
        np.array([0, 0, 1, 1]),
    )
    fig = plots.head_heatmap(heads)
    assert list(fig.data[0].y) == ["h0 (kv0)", "h1 (kv0)", "h2 (kv1)", "h3 (kv1)"]  # type: ignore[attr-defined]
    cm = CosineMatrix(HOOKS, np.eye(3), "layer", None, np.ones(3))
    heat = plots.cosine_heatmap(cm)
    assert list(heat.data[0].x) == ["0", "1", "2"] and heat.data[0].zmin == -1  # type: ignore[attr-defined]
    mc = method_cosines({"a": torch.eye(3), "b": torch.eye(3), "c": -torch.eye(3)}, HOOKS)
    curves = plots.method_cosine_curves(mc)
    assert [t.name for t in curves.data] == ["a vs b", "a vs c", "b vs c"]  # type: ignore[attr-defined]


def _sweep() -> SteeringSweep:
    def pt(mode, layer, alpha, tau):
        return SteeringPoint(mode, layer, alpha, tau, 0.4 + 0.1 * alpha, 0.8, 5.0 - alpha, 2.0, 0.5)

    points = [pt("dynamic", layer, a, 0.5) for layer in (1, 2) for a in (1.0, 2.0)]
    points += [pt("static", layer, a, float("nan")) for layer in (1, 2) for a in (1.0, 2.0)]
    base = SteeringPoint("base", -1, 0.0, float("nan"), 0.4, 0.8, 6.0, 2.0, float("nan"))
    return SteeringSweep(base, tuple(points), (1, 2), (1.0, 2.0), (0.5,), 20, "resid_post")


def test_steering_ablation_and_token_figures():
    sweep = _sweep()
    heat = plots.sweep_heatmap(sweep, "acc_ambig")
    assert len(heat.data) == 2 and "unsteered: 40.0" in _title(heat)
    assert np.allclose(np.asarray(heat.data[0].z), [[50, 50], [60, 60]])  # type: ignore[attr-defined]
    trade = plots.tradeoff_scatter(sweep)
    assert [t.name for t in trade.data] == ["unsteered", "dynamic", "static"]  # type: ignore[attr-defined]
    assert "s_AMB" in trade.layout.yaxis.title.text  # type: ignore[union-attr]
    eff = AblationEffect(
        AblationRow("none", 0.5, 0.8, 4.0, 1.0), (AblationRow("zero", 0.4, 0.8, 2.0, 1.0),), 10
    )
    bars = plots.ablation_bars(eff)
    assert len(bars.data) == 4 and bars.data[0].y[0] == pytest.approx(-10.0)  # type: ignore[attr-defined]
    view = TokenView(
        ("a", " b", ":"),
        np.array([1.0, -2.0, 0.5]),
        np.array([0.9, 0.2, 0.6]),
        HOOKS[1],
        0.5,
        "a b:",
    )
    tok = plots.token_figure(view)
    assert len(tok.layout.shapes) == 1  # only " b" is gated  # type: ignore[union-attr]
    assert "gate fires" in tok.data[1].name  # type: ignore[attr-defined]


def test_write_html_and_cli_registration(tmp_path):
    fig = plots.tradeoff_scatter(_sweep())
    written = write_figures({"t": fig}, tmp_path, formats=("html",))
    assert [p.name for p in written] == ["t.html"] and written[0].stat().st_size > 1000
    with pytest.raises(ConfigError, match="formats"):
        write_figures({"t": fig}, tmp_path, formats=("gif",))
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    argv = ["figures", "--figures-dir", "x", "--sweep-alphas", "1", "2", "--full", "--name", "r"]
    args = parser.parse_args(argv)
    assert args.figures_dir == "x" and args.sweep_alphas == [1.0, 2.0] and args.full
    assert args.name == "r" and not hasattr(args, "restart")  # the run's flags, resumed only
    with pytest.raises(ConfigError):
        FigureSizes(steer_items_per_category=0)
