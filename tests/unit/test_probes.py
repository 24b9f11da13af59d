"""Tests for the batched logistic-regression solver and the LinearProbe estimator."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import sklearn.exceptions
import torch
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from fairlens.detect.probes import LinearProbe, fit_logistic_batched
from fairlens.errors import ConfigError, NotFittedError
from tests.conftest import rejects_ill_typed


def _layered_data(
    n_layers: int = 4, n: int = 300, d: int = 12, seed: int = 0, ill: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train/test features ``[layer, n, d]`` with a noisy linear signal that differs by layer."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_layers, 2 * n, d))
    w = rng.normal(size=(n_layers, d))
    score = np.einsum("lnd,ld->ln", X, w)[0] + rng.normal(scale=2.0, size=2 * n)
    y = (score > 0).astype(np.float64)
    X[:, :, 1] += 3.0  # a non-centred feature
    if ill:
        X[:, :, 2] *= 1e2  # a feature on a very different scale ...
        X[:, :, 3] += 100.0  # ... and one with a large offset
    return X[:, :n], y[:n], X[:, n:], y[n:]


def _sklearn_fit(X: np.ndarray, y: np.ndarray, fit_intercept: bool) -> LogisticRegression:
    """scikit-learn's lbfgs run to convergence (the reference solution)."""
    ref = LogisticRegression(C=1.0, fit_intercept=fit_intercept, max_iter=100_000, tol=1e-10)
    return ref.fit(X, y)


@functools.cache
def _sklearn_refs(fit_intercept: bool, ill: bool) -> list[LogisticRegression]:
    X, y, _, _ = _layered_data(ill=ill)
    return [_sklearn_fit(X[layer], y, fit_intercept) for layer in range(X.shape[0])]


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("ill", [False, True])
@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_batched_solver_matches_sklearn(fit_intercept: bool, ill: bool, method: str) -> None:
    X, y, Xt, yt = _layered_data(ill=ill)
    coef, intercept = fit_logistic_batched(
        torch.from_numpy(X), torch.from_numpy(y), fit_intercept=fit_intercept, method=method
    )
    assert coef.shape == (4, 12) and intercept.shape == (4,)
    for layer in range(4):
        ref = _sklearn_refs(fit_intercept, ill)[layer]
        w = coef[layer].numpy()
        rel = np.abs(w - ref.coef_[0]).max() / np.abs(ref.coef_[0]).max()
        assert rel < 1e-3, f"layer {layer}: relative weight error {rel:.2e}"
        assert float(intercept[layer]) == pytest.approx(ref.intercept_[0], rel=1e-3, abs=1e-3)
        acc = ((Xt[layer] @ w + float(intercept[layer]) > 0) == yt).mean()
        assert abs(acc - ref.score(Xt[layer], yt)) <= 0.005


def test_per_layer_labels_and_sample_weight_match_sklearn() -> None:
    X, y, _, _ = _layered_data(n_layers=3)
    rng = np.random.default_rng(1)
    Y = np.stack([y, 1 - y, rng.integers(0, 2, size=y.shape).astype(np.float64)])
    sw = rng.uniform(0.5, 2.0, size=y.shape)
    coef, intercept = fit_logistic_batched(
        torch.from_numpy(X), torch.from_numpy(Y), C=0.3, sample_weight=sw
    )
    for layer in range(3):
        ref = LogisticRegression(C=0.3, max_iter=100_000, tol=1e-10)
        ref.fit(X[layer], Y[layer], sample_weight=sw)
        np.testing.assert_allclose(coef[layer].numpy(), ref.coef_[0], rtol=1e-3, atol=1e-5)
        assert float(intercept[layer]) == pytest.approx(ref.intercept_[0], rel=1e-3, abs=1e-5)


def test_warm_start_reaches_the_same_optimum() -> None:
    X, y, _, _ = _layered_data()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    cold = fit_logistic_batched(Xt, yt)
    init = (torch.randn(4, 12, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    warm = fit_logistic_batched(Xt, yt, init=init)
    torch.testing.assert_close(warm[0], cold[0], rtol=1e-4, atol=1e-6)


@pytest.mark.ill_typed
def test_solver_rejects_bad_input() -> None:
    X = torch.randn(2, 20, 3)
    y = torch.randint(0, 2, (20,)).double()
    with rejects_ill_typed(
        ConfigError, r"shape \[layer, batch, d_model\]; received shape \(20, 3\)"
    ):
        fit_logistic_batched(X[0], y)
    with rejects_ill_typed(ConfigError, r"y must have shape \[20\] or \[2, 20\]"):
        fit_logistic_batched(X, y[:10])
    with pytest.raises(ConfigError, match="only 0 and 1"):
        fit_logistic_batched(X, y + 1)
    X[1, 3, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN"):
        fit_logistic_batched(X, y)


def _probe_data(n: int = 200, d: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = (X[:, 0] - X[:, 1] + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return X, y


def test_probe_matches_sklearn_and_has_sklearn_attributes() -> None:
    X, y = _probe_data()
    probe = LinearProbe().fit(X, y)
    ref = _sklearn_fit(X, y, True)
    assert probe.coef_.shape == (1, 8) and probe.intercept_.shape == (1,)
    np.testing.assert_array_equal(probe.classes_, [0, 1])
    assert probe.n_features_in_ == 8
    np.testing.assert_allclose(probe.coef_, ref.coef_, rtol=1e-3)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    np.testing.assert_allclose(probe.predict_proba(X).sum(axis=1), 1.0)
    assert probe.score(X, y) == pytest.approx(ref.score(X, y), abs=0.005)
    assert np.linalg.norm(probe.direction_) == pytest.approx(1.0)
    assert probe.direction_[0] > 0.6 and probe.direction_[1] < -0.6


def test_probe_accepts_torch_input() -> None:
    X, y = _probe_data()
    a = LinearProbe().fit(torch.from_numpy(X).float(), torch.from_numpy(y))
    b = LinearProbe().fit(X.astype(np.float32), y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-9)
    np.testing.assert_array_equal(a.predict(torch.from_numpy(X)), b.predict(X))


def test_probe_works_with_clone_cross_val_score_and_pipeline() -> None:
    X, y = _probe_data()
    probe = LinearProbe(C=0.5, max_iter=50)
    twin = clone(probe)
    assert twin.get_params() == probe.get_params() and twin is not probe
    scores = cross_val_score(LinearProbe(), X, y, cv=4)
    assert scores.shape == (4,) and scores.min() > 0.75
    pipe = make_pipeline(StandardScaler(), LinearProbe()).fit(X, y)
    assert pipe.score(X, y) > 0.85


def test_p_unbiased_torch_equals_predict_proba() -> None:
    X, y = _probe_data()
    probe = LinearProbe().fit(X, y)
    acts = torch.from_numpy(X).to(torch.bfloat16).float().reshape(4, 50, 8)  # [batch pos d_model]
    p = probe.p_unbiased_torch(acts.to(torch.float16))
    assert p.shape == (4, 50) and p.dtype == torch.float32
    expected = probe.predict_proba(acts.to(torch.float16).reshape(200, 8).numpy())[:, 1]
    np.testing.assert_allclose(p.reshape(-1).numpy(), expected, atol=1e-6)


def test_unfitted_probe_raises() -> None:
    probe = LinearProbe()
    with pytest.raises(NotFittedError, match=r"not fitted yet.*Call \.fit"):
        probe.predict(np.zeros((2, 3)))
    with pytest.raises(AttributeError):
        probe.p_unbiased_torch(torch.zeros(2, 3))
    assert not hasattr(probe, "direction_")
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(probe)
    check_is_fitted(LinearProbe().fit(*_probe_data()))


def test_probe_error_messages() -> None:
    X, y = _probe_data(n=20)
    with pytest.raises(ConfigError, match=r"both classes 0 and 1; received only \[1\] in 20"):
        LinearProbe().fit(X, np.ones(20))
    with pytest.raises(
        ConfigError, match=r"only 0 \(biased\) and 1 \(unbiased\); received labels \[1, 2\]"
    ):
        LinearProbe().fit(X, y + 1)
    with pytest.raises(ConfigError, match=r"one label per row of X \(20\); received shape \(19,\)"):
        LinearProbe().fit(X, y[:19])
    with pytest.raises(
        ConfigError, match=r"must be 2-D \[n_examples, d_model\]; received shape \(20, 8, 1\)"
    ):
        LinearProbe().fit(X[..., None], y)
    bad = X.copy()
    bad[0, 0] = np.inf
    with pytest.raises(ConfigError, match="NaN or infinite"):
        LinearProbe().fit(bad, y)
    probe = LinearProbe().fit(X, y)
    with pytest.raises(ConfigError, match="X has 3 features but the probe was fitted on 8"):
        probe.predict(X[:, :3])


def test_round_trip_through_tensors_and_safetensors(tmp_path) -> None:
    X, y = _probe_data()
    probe = LinearProbe(C=0.7).fit(X, y)
    tensors = probe.to_tensors()
    assert tensors["coef"].shape == (8,) and tensors["intercept"].shape == ()
    path = tmp_path / "probe.safetensors"
    save_file(tensors, str(path))
    loaded = load_file(str(path))
    again = LinearProbe.from_weights(loaded["coef"], loaded["intercept"], C=0.7)
    np.testing.assert_array_equal(again.decision_function(X), probe.decision_function(X))
    np.testing.assert_array_equal(again.predict(X), probe.predict(X))
    assert again.get_params() == probe.get_params()
    with pytest.raises(ConfigError, match=r"Expected coef \[d_model\] or \[1, d_model\]"):
        LinearProbe.from_weights(torch.zeros(2, 8), 0.0)
