"""FairSteer: fit once (probe + DSV + layer), then steer any forward or generation.

``FairSteer(config).fit(model, probe_items, dsv_items, select_items)`` runs the three stages of the
method on *disjoint* item sets (pass template-disjoint splits; the split hashes are recorded):

1. **BAD** — score ``probe_items`` with the unsteered model, label each last-prompt-token activation
   ``y=1`` (answered the gold label) or ``y=0`` (picked the bias target, gold != target), drop the
   rest, and sweep one linear probe per layer (validated across templates).
2. **DSV** — mean activation difference over contrastive pairs built from ``dsv_items``.
3. **Layer** — by probe accuracy (``selection="probe"``) or by BBQ accuracy under dynamic steering
   on ``select_items`` (``selection="bbq"``, the reference code's criterion; the ``top_k`` layers by
   probe accuracy are tried).

The fitted object steers with ``with fs.steering(model, mode="dynamic"): ...`` and saves/loads as
safetensors + JSON, refusing to be applied to a different model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from fairlens.artifacts import load_artifact, save_artifact
from fairlens.batching import encode
from fairlens.data import BBQItem, PromptFormat, content_hash, contrastive_pairs
from fairlens.directions import Directions, compute_dsv, cosine, dsv_at_colon, pca_direction
from fairlens.errors import ConfigError, NotFittedError
from fairlens.extraction import extract_activations
from fairlens.hooks import HOOK_KINDS, hook_name
from fairlens.metrics import accuracy, probe_labels
from fairlens.models import ModelInfo, get_model_info
from fairlens.scoring import ScoreResult, ScoringMode, build_prompts, score_items
from fairlens.steering import GateStats, PositionPolicy, Steerer, SteeringConfig, SteerMode
from fairlens.sweep import SweepResult, probe_sweep


@dataclass(frozen=True)
class FairSteerConfig:
    """Hyper-parameters of a FairSteer fit (paper defaults)."""

    hook_kind: str = "resid_post"
    layers: tuple[int, ...] | None = None  # candidate layers; None = all
    layer: int | None = None  # fixed steering layer (skips selection)
    selection: Literal["probe", "bbq"] = "probe"
    top_k: int = 3  # layers tried by selection="bbq"
    alpha: float = 1.0
    tau: float = 0.5
    C: float = 1.0
    dsv_position: Literal["answer", "colon"] = "answer"
    n_dsv_per_category: int | None = 10
    scoring: ScoringMode = "letter"
    prompt_format: PromptFormat = "zero_shot"
    positions: PositionPolicy | None = None  # None: "generated" for letter, "all" for loglik
    batch_size: int = 16
    seed: int = 42

    def __post_init__(self) -> None:
        if self.hook_kind not in HOOK_KINDS or self.hook_kind == "z":
            raise ConfigError(
                f"hook_kind must be a residual-width hook ({', '.join(k for k in HOOK_KINDS if k != 'z')}), "
                f"got {self.hook_kind!r}."
            )
        if self.selection not in ("probe", "bbq"):
            raise ConfigError(f"selection must be 'probe' or 'bbq', got {self.selection!r}.")
        if self.dsv_position not in ("answer", "colon"):
            raise ConfigError(
                f"dsv_position must be 'answer' or 'colon', got {self.dsv_position!r}."
            )
        if self.scoring not in ("letter", "loglik"):
            raise ConfigError(f"scoring must be 'letter' or 'loglik', got {self.scoring!r}.")
        if self.top_k < 1 or self.batch_size < 1:
            raise ConfigError("top_k and batch_size must be >= 1.")
        SteeringConfig(alpha=self.alpha, tau=self.tau)  # validates alpha/tau

    @property
    def steer_positions(self) -> PositionPolicy:
        if self.positions is not None:
            return self.positions
        return "all" if self.scoring == "loglik" else "generated"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FairSteerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"Unknown FairSteer config keys: {unknown}; valid: {sorted(known)}.")
        data = dict(data)
        if data.get("layers") is not None:
            data["layers"] = tuple(data["layers"])
        return cls(**data)


class FairSteer:
    """The FairSteer estimator. Learned state ends in ``_`` (scikit-learn convention)."""

    def __init__(self, config: FairSteerConfig | None = None, **overrides: Any) -> None:
        base = config or FairSteerConfig()
        self.config = FairSteerConfig(**{**asdict(base), **overrides}) if overrides else base

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        model: Any,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem],
        select_items: Sequence[BBQItem] | None = None,
        *,
        shots: Sequence[BBQItem] | None = None,
        progress: bool = False,
    ) -> FairSteer:
        """Fit probe, DSV and layer on ``model``; see the module docstring. Returns ``self``."""
        cfg = self.config
        info = get_model_info(model)
        n_layers = model.cfg.n_layers
        layers = list(cfg.layers) if cfg.layers is not None else list(range(n_layers))
        for layer in [*layers, *([cfg.layer] if cfg.layer is not None else [])]:
            hook_name(cfg.hook_kind, layer, n_layers=n_layers)
        if cfg.layer is not None and cfg.layer not in layers:
            layers.append(cfg.layer)
        _check_disjoint({"probe": probe_items, "dsv": dsv_items, "select": select_items or []})
        if cfg.selection == "bbq" and cfg.layer is None and not select_items:
            raise ConfigError("selection='bbq' needs select_items (a held-out selection split).")

        # 1. BAD: labels from the unsteered model's own answers, activations at the last prompt token.
        base = self._score(model, probe_items, shots, progress)
        keep, y = probe_labels(probe_items, base.predictions)
        kept = [probe_items[i] for i in keep]
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if min(n_pos, n_neg) < 10:
            raise ConfigError(
                f"Too few labelled examples for the probe: {n_pos} unbiased and {n_neg} biased answers "
                f"among {len(probe_items)} probe items (need >= 10 of each).",
                "Use more probe items, another scoring mode (--scoring loglik) or a stronger model.",
            )
        tok = model.tokenizer
        seqs = encode(tok, build_prompts(kept, cfg.prompt_format, tok, shots))
        acts = extract_activations(
            model,
            seqs,
            hooks=cfg.hook_kind,
            layers=layers,
            uids=[it.uid for it in kept],
            batch_size=cfg.batch_size,
            position="last_prompt_token",
            progress=progress,
        ).with_labels(torch.as_tensor(y))
        sweep = probe_sweep(
            acts.acts,
            y,
            layers=layers,
            hook_names=acts.hook_names,
            C=cfg.C,
            seed=cfg.seed,
            groups=[f"{it.category}/{it.question_index}" for it in kept],
            progress=progress,
        )

        # 2. DSV at every candidate layer.
        if cfg.dsv_position == "answer":
            pairs = contrastive_pairs(
                dsv_items,
                cfg.prompt_format,
                tokenizer=tok,
                shots=shots,
                n_per_category=cfg.n_dsv_per_category,
                seed=cfg.seed,
            )
            dsv = compute_dsv(
                model,
                pairs,
                hooks=cfg.hook_kind,
                layers=layers,
                batch_size=cfg.batch_size,
                progress=progress,
            )
        else:
            dsv = dsv_at_colon(acts)

        # Comparison directions (same layers): probe weights, first PC, and the DSV at the other
        # read position; cosines per layer go into reports.
        colon = dsv if cfg.dsv_position == "colon" else dsv_at_colon(acts)
        pca = pca_direction(acts)
        probe_dirs = sweep.coef.float()
        self.direction_cosines_ = {
            "layers": list(sweep.layers),
            "dsv_vs_probe": cosine(dsv.vectors, probe_dirs).tolist(),
            "dsv_vs_pca": cosine(dsv.vectors, pca.vectors).tolist(),
            "probe_vs_pca": cosine(probe_dirs, pca.vectors).tolist(),
            "dsv_answer_vs_colon": cosine(dsv.vectors, colon.vectors).tolist(),
        }
        self.sweep_: SweepResult = sweep
        self.dsv_: Directions = dsv
        self.model_info_: ModelInfo = info
        self.probe_counts_ = {"n_probe_items": len(probe_items), "unbiased": n_pos, "biased": n_neg}
        self.base_probe_accuracy_ = accuracy(probe_items, base.predictions)
        self.split_hashes_ = {
            "probe": content_hash(probe_items),
            "dsv": content_hash(dsv_items),
            "select": content_hash(select_items) if select_items else None,
        }
        self.fitted_templates_ = sorted(
            {
                f"{it.category}/{it.question_index}"
                for it in [*probe_items, *dsv_items, *(select_items or [])]
            }
        )
        self.selection_scores_: dict[int, float] = {}
        # 3. Layer selection.
        if cfg.layer is not None:
            self.layer_ = cfg.layer
        elif cfg.selection == "probe":
            self.layer_ = sweep.best_layer()
        else:
            assert select_items
            ranked = sorted(sweep.scores, key=lambda s: -s.accuracy)[: cfg.top_k]
            for score in tqdm(ranked, desc="selecting layer", disable=not progress):
                self.layer_ = score.layer
                with self.steering(model, mode="dynamic"):
                    res = self._score(model, select_items, shots)
                self.selection_scores_[self.layer_] = accuracy(select_items, res.predictions)
            self.layer_ = max(self.selection_scores_, key=lambda k: (self.selection_scores_[k], -k))
        return self

    def _score(
        self,
        model: Any,
        items: Sequence[BBQItem],
        shots: Sequence[BBQItem] | None,
        progress: bool = False,
    ) -> ScoreResult:
        """Score items with this config's scoring mode and prompt format (left padding)."""
        cfg = self.config
        return score_items(
            model, items, mode=cfg.scoring, prompt_format=cfg.prompt_format, shots=shots,
            batch_size=cfg.batch_size, padding_side="left", progress=progress,
        )  # fmt: skip

    # ------------------------------------------------------------------ applying
    def _check_fitted(self) -> None:
        if not hasattr(self, "layer_"):
            raise NotFittedError(
                "This FairSteer is not fitted yet.",
                "Call .fit(model, ...) or FairSteer.load(path) first.",
            )

    @property
    def hook_name_(self) -> str:
        self._check_fitted()
        return hook_name(self.config.hook_kind, self.layer_)

    def steerer(
        self,
        *,
        mode: SteerMode = "dynamic",
        alpha: float | None = None,
        tau: float | None = None,
        positions: PositionPolicy | None = None,
        layer: int | None = None,
    ) -> Steerer:
        """A :class:`Steerer` for the chosen (or another fitted) layer."""
        self._check_fitted()
        layer = self.layer_ if layer is None else layer
        name = hook_name(self.config.hook_kind, layer)
        idx = self.sweep_.hook_names.index(name) if name in self.sweep_.hook_names else None
        if idx is None:
            raise ConfigError(
                f"Layer {layer} was not fitted; fitted layers: {list(self.sweep_.layers)}."
            )
        cfg = SteeringConfig(
            mode=mode,
            alpha=self.config.alpha if alpha is None else alpha,
            tau=self.config.tau if tau is None else tau,
            positions=self.config.steer_positions if positions is None else positions,
        )
        return Steerer(
            name,
            self.dsv_.at(name),
            self.sweep_.coef[idx].float(),
            self.sweep_.intercept[idx].float(),
            cfg,
        )

    @contextmanager
    def steering(
        self, model: Any, mode: SteerMode = "dynamic", **kwargs: Any
    ) -> Iterator[GateStats]:
        """Steer ``model`` inside the block (removes exactly its hook on exit); yields gate stats."""
        self._check_fitted()
        get_model_info(model).check_matches(self.model_info_.fingerprint(), what="FairSteer")
        with self.steerer(mode=mode, **kwargs).apply(model) as stats:
            yield stats

    def run_with_steering(
        self, model: Any, tokens: torch.Tensor, mode: SteerMode = "dynamic", **kwargs: Any
    ) -> torch.Tensor:
        """Logits of ``model(tokens)`` under steering (tokens left-padded if batched)."""
        with self.steering(model, mode=mode, **kwargs), torch.no_grad():
            return model(tokens)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted state as safetensors + JSON."""
        self._check_fitted()
        tensors = {
            "probe_coef": self.sweep_.coef.float(),
            "probe_intercept": self.sweep_.intercept.float(),
            "dsv": self.dsv_.vectors.float(),
        }
        meta = {
            "config": self.config.to_dict(),
            "layer": self.layer_,
            "hook_name": self.hook_name_,
            "model": self.model_info_.fingerprint(),
            "sweep": self.sweep_.to_dict(),
            "dsv": self.dsv_.to_dict(),
            "split_hashes": self.split_hashes_,
            "fitted_templates": self.fitted_templates_,
            "probe_counts": self.probe_counts_,
            "base_probe_accuracy": self.base_probe_accuracy_,
            "selection_scores": {str(k): v for k, v in self.selection_scores_.items()},
            "direction_cosines": self.direction_cosines_,
        }
        return save_artifact(path, "fairsteer", tensors, meta)

    @classmethod
    def load(cls, path: str | Path, model: Any | None = None) -> FairSteer:
        """Load a saved FairSteer; with ``model``, refuse it if it was fitted on another model."""
        tensors, meta = load_artifact(path, "fairsteer")
        fs = cls(FairSteerConfig.from_dict(meta["config"]))
        fs.sweep_ = _sweep_from_dict(
            meta["sweep"], tensors["probe_coef"], tensors["probe_intercept"]
        )
        d = meta["dsv"]
        fs.dsv_ = Directions(
            tensors["dsv"],
            tuple(d["hook_names"]),
            d["method"],
            d["position"],
            d["n_pos"],
            d["n_neg"],
        )
        fs.model_info_ = _info_from_fingerprint(meta["model"])
        fs.layer_ = int(meta["layer"])
        fs.split_hashes_ = meta["split_hashes"]
        fs.fitted_templates_ = list(meta["fitted_templates"])
        fs.probe_counts_ = meta["probe_counts"]
        fs.base_probe_accuracy_ = meta["base_probe_accuracy"]
        fs.selection_scores_ = {int(k): v for k, v in meta["selection_scores"].items()}
        fs.direction_cosines_ = meta["direction_cosines"]
        if model is not None:
            get_model_info(model).check_matches(meta["model"], what="FairSteer artifact")
        return fs


def _sweep_from_dict(d: dict[str, Any], coef: torch.Tensor, intercept: torch.Tensor) -> SweepResult:
    """Rebuild a :class:`SweepResult` from its ``to_dict`` form and the saved probe tensors."""
    from fairlens.sweep import LayerScore

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
    return SweepResult(
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


def _info_from_fingerprint(fp: dict[str, Any]) -> ModelInfo:
    from fairlens.tl_adapter import WeightProcessing

    return ModelInfo(**{**fp, "processing": WeightProcessing(**fp["processing"])})


def _check_disjoint(splits: dict[str, Sequence[BBQItem]]) -> None:
    """Refuse overlapping templates between the fitting splits (honest numbers need disjointness)."""
    seen: dict[tuple[str, str], str] = {}
    for name, items in splits.items():
        for template in {it.template_id for it in items}:
            if template in seen and seen[template] != name:
                raise ConfigError(
                    f"BBQ template {template} is in both the {seen[template]!r} and {name!r} items.",
                    "Build the splits with fairlens.data.split_by_template so they are disjoint by template.",
                )
            seen[template] = name
