"""Intervals and paired tests for accuracies measured on the same items.

* :func:`wilson` — Wilson score interval of one accuracy;
* :func:`paired_bootstrap` — percentile interval of the difference of two accuracies on the same
  items (resampling items, so the pairing is kept);
* :func:`mcnemar` — exact McNemar test (two-sided binomial test on the discordant items);
* :func:`compare` — all three for a method against a baseline, JSON-ready.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fairlens.errors import ConfigError

__all__ = ["compare", "mcnemar", "paired_bootstrap", "proportion", "wilson"]


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (95 % by default)."""
    if n <= 0:
        raise ConfigError("wilson interval of an empty sample.", "pass n >= 1 trials.")
    if not 0 <= k <= n:
        raise ConfigError(f"k={k} successes out of n={n} is impossible.", "pass k between 0 and n.")
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _bool(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ConfigError(
            f"{name} must be 1-D (one entry per item); got shape {a.shape}.",
            f"pass {name} as a flat array with one boolean per item.",
        )
    return a.astype(bool)


def paired_bootstrap(
    correct_a: Any,
    correct_b: Any,
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """``(mean(b) - mean(a), low, high)``: the accuracy gain of b over a with a percentile interval.

    Items are resampled with replacement (the same resample for both), ``n_boot`` times.
    """
    a, b = _bool(correct_a, "correct_a"), _bool(correct_b, "correct_b")
    if a.shape != b.shape or a.size == 0:
        raise ConfigError(
            f"paired samples must be non-empty and equal in length; got {a.size}, {b.size}.",
            "pass two non-empty arrays with one entry per item, in the same item order.",
        )
    diff = b.astype(np.float64) - a.astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.size, size=(n_boot, diff.size))
    means = diff[idx].mean(1)
    tail = (1 - level) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def mcnemar(correct_a: Any, correct_b: Any) -> dict[str, Any]:
    """Exact McNemar test: ``{"b_only", "a_only", "p"}`` (two-sided, binomial on discordant items)."""
    a, b = _bool(correct_a, "correct_a"), _bool(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ConfigError(
            "paired samples must have equal length.",
            "pass correct_a and correct_b with one entry per item, in the same item order.",
        )
    b_only = int((b & ~a).sum())
    a_only = int((a & ~b).sum())
    n = a_only + b_only
    if n == 0:
        return {"b_only": 0, "a_only": 0, "p": 1.0}
    k = min(a_only, b_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return {"b_only": b_only, "a_only": a_only, "p": min(1.0, 2 * tail)}


def proportion(correct: Any) -> dict[str, Any]:
    """``{"n", "accuracy", "ci"}`` of a boolean array (Wilson 95 %; ``None`` when it is empty)."""
    ok = _bool(correct, "correct")
    n, k = int(ok.size), int(ok.sum())
    return {"n": n, "accuracy": k / n if n else None, "ci": list(wilson(k, n)) if n else None}


def compare(
    correct_base: Any, correct_method: Any, *, n_boot: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy of base and method with Wilson intervals, the paired gain and McNemar's p."""
    a, b = _bool(correct_base, "correct_base"), _bool(correct_method, "correct_method")
    n = int(a.size)
    if n == 0:
        return {"n": 0}
    gain, low, high = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    return {
        "n": n,
        "base": float(a.mean()),
        "base_ci": list(wilson(int(a.sum()), n)),
        "method": float(b.mean()),
        "method_ci": list(wilson(int(b.sum()), n)),
        "gain": gain,
        "gain_ci": [low, high],
        "mcnemar": mcnemar(a, b),
    }
