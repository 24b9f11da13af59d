"""The layer sweep's results: one :class:`LayerScore` per layer and the whole :class:`SweepResult` (JSON round trip included)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from jaxtyping import Float
from torch import Tensor

from fairlens.detect.probes import LinearProbe
from fairlens.errors import ConfigError


@dataclass(frozen=True)
class LayerScore:
    """Probe quality at one layer.

    Attributes:
        layer: Layer index (the label of this entry, e.g. ``3`` for ``blocks.3.hook_resid_post``).
        accuracy: Validation accuracy of the probe fitted on the train part.
        auroc: Validation ROC AUC of that probe's logits.
        cv_mean: Mean k-fold cross-validation accuracy on the train part (NaN if CV is off).
        cv_std: Standard deviation of the fold accuracies (NaN if CV is off).
        n_train: Examples in the train part.
        n_val: Examples in the validation part.
    """

    layer: int
    accuracy: float
    auroc: float
    cv_mean: float
    cv_std: float
    n_train: int
    n_val: int


@dataclass(frozen=True, eq=False)
class SweepResult:
    """Outcome of :func:`probe_sweep`: scores per layer and the probes themselves.

    ``coef``/``intercept`` are the probes fitted on the **train part only** (not train+val), so the
    reported validation scores are honest estimates for exactly these weights. Compared by
    identity (``eq=False``) because it holds tensors.

    Attributes:
        hook_names: Hook point of each layer entry, e.g. ``"blocks.3.hook_resid_post"``.
        layers: Layer index of each entry.
        scores: One :class:`LayerScore` per entry.
        class_balance: Fraction of examples with ``y = 1`` (unbiased), over all examples.
        n: Number of examples.
        val_fraction: Requested validation fraction (actual sizes are in ``scores``).
        seed: Seed of the split and the CV folds.
        C: Inverse regularisation strength of the probes.
        coef: ``[layer, d_model]`` float64 probe weights (train part).
        intercept: ``[layer]`` float64 probe intercepts (train part).
    """

    hook_names: tuple[str, ...]
    layers: tuple[int, ...]
    scores: tuple[LayerScore, ...]
    class_balance: float
    n: int
    val_fraction: float
    seed: int
    C: float
    coef: Float[Tensor, "layer d_model"]
    intercept: Float[Tensor, " layer"]

    def __post_init__(self) -> None:
        k = len(self.layers)
        sizes = {
            len(self.hook_names),
            len(self.scores),
            self.coef.shape[0],
            self.intercept.shape[0],
        }
        if sizes != {k} or self.coef.ndim != 2:
            raise ConfigError(
                f"SweepResult fields disagree on the number of layers: layers={k}, "
                f"hook_names={len(self.hook_names)}, scores={len(self.scores)}, "
                f"coef={tuple(self.coef.shape)}, intercept={tuple(self.intercept.shape)}.",
                "Give hook_names, scores, coef and intercept one entry per layer.",
            )

    def best_layer(self) -> int:
        """Layer with the highest validation accuracy.

        Ties are broken by higher validation AUROC, then by the earliest layer (the cheapest place
        to steer and the least processed representation).
        """
        best = max(
            range(len(self.scores)),
            key=lambda i: (self.scores[i].accuracy, _nan0(self.scores[i].auroc), -i),
        )
        return self.layers[best]

    def probe(self, layer: int) -> LinearProbe:
        """The fitted :class:`LinearProbe` of ``layer`` (a layer index, not a position)."""
        if layer not in self.layers:
            raise ConfigError(
                f"Layer {layer} was not part of this sweep; swept layers: {list(self.layers)}.",
                "Pass one of the swept layers, or sweep that layer too.",
            )
        i = self.layers.index(layer)
        return LinearProbe.from_weights(self.coef[i], self.intercept[i], C=self.C)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary without the weight tensors (NaN becomes ``None``)."""
        return {
            "hook_names": list(self.hook_names),
            "layers": list(self.layers),
            "scores": [{k: _json_float(v) for k, v in asdict(s).items()} for s in self.scores],
            "best_layer": self.best_layer(),
            "class_balance": self.class_balance,
            "n": self.n,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "C": self.C,
            "d_model": int(self.coef.shape[1]),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], coef: Tensor, intercept: Tensor) -> SweepResult:
        """Rebuild a :class:`SweepResult` from its ``to_dict`` form and the saved probe tensors."""

        def num(v: Any) -> float:
            return float("nan") if v is None else float(v)

        scores = tuple(
            LayerScore(
                layer=int(s["layer"]),
                accuracy=num(s["accuracy"]),
                auroc=num(s["auroc"]),
                cv_mean=num(s["cv_mean"]),
                cv_std=num(s["cv_std"]),
                n_train=int(s["n_train"]),
                n_val=int(s["n_val"]),
            )
            for s in d["scores"]
        )
        return cls(
            hook_names=tuple(d["hook_names"]),
            layers=tuple(d["layers"]),
            scores=scores,
            class_balance=float(d["class_balance"]),
            n=int(d["n"]),
            val_fraction=float(d["val_fraction"]),
            seed=int(d["seed"]),
            C=float(d["C"]),
            coef=coef,
            intercept=intercept,
        )


def _nan0(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def _json_float(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v
