"""FairSteer: fit once (gate + direction + layer + strength), then steer any forward or generation.

``FairSteer(config).fit(model, probe_items, dsv_items, select_items)`` runs the method on *disjoint*
item sets (template-disjoint splits; the split hashes are recorded):

1. **BAD** — one pass of the unsteered model over ``probe_items`` (prefix-cached on the plain
   transformers model): each item's answer gives its label (1 answered gold, 0 picked the bias
   target); one linear probe per layer on the ``:`` activations, validated across templates. The
   control gates (``"context"``, ``"ambig"``, see :mod:`fairlens.detect.gates`) are fitted beside it.
2. **Direction** — the configured method of the registry (:mod:`fairlens.directions.registry`;
   default ``"dsv"``: FairSteer's contrastive pairs from ``dsv_items``) at every candidate layer.
3. **Layer and strength** (``selection``):

   * ``"search"`` (default): the layer (all candidates) and ``alpha`` (``alphas``, relative to the
     mean residual norm at ``:``) that give the highest ambiguous accuracy on ``select_items`` under
     dynamic steering, among settings whose disambiguated accuracy is at least base - ``margin``
     (:class:`fairlens.search.engine.SelectionRule`); probe accuracy is never the criterion;
   * ``"bbq"``: the reference code's criterion: overall BBQ accuracy on ``select_items`` under
     dynamic steering at a fixed ``alpha``, over every candidate layer (the paper preset);
   * ``"probe"``: the layer with the best BAD-probe validation accuracy (for comparison only: on
     small validation sets this has a large winner's curse).

The fitted object steers with ``with fs.steering(model): ...`` and saves/loads as safetensors +
JSON, refusing to be applied to a different model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor

from fairlens._version import __version__
from fairlens.artifacts import load_artifact, save_artifact
from fairlens.data import BBQItem
from fairlens.detect.gates import GATES
from fairlens.detect.layer_sweep import SweepResult
from fairlens.directions import DIRECTION_METHODS, Directions, cosine
from fairlens.errors import ArtifactError, ConfigError
from fairlens.fairsteer.applying import FittedSteering
from fairlens.fairsteer.config import FairSteerConfig
from fairlens.fairsteer.validate import check_artifact
from fairlens.model_types import Model, Tokenizer
from fairlens.models import ModelInfo, get_model_info
from fairlens.scoring.metrics import accuracy
from fairlens.steer.fit_data import FitData
from fairlens.steer.fit_settings import check_disjoint


class FairSteer(FittedSteering):
    """The FairSteer estimator. Learned state ends in ``_`` (scikit-learn convention)."""

    def __init__(self, config: FairSteerConfig | None = None, **overrides: Any) -> None:
        base = config or FairSteerConfig()
        self.config = FairSteerConfig(**{**asdict(base), **overrides}) if overrides else base

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        model: Model,
        probe_items: Sequence[BBQItem],
        dsv_items: Sequence[BBQItem] = (),
        select_items: Sequence[BBQItem] | None = None,
        *,
        tokenizer: Tokenizer | None = None,
        shots: Sequence[BBQItem] | None = None,
        fit_data: FitData | None = None,
        progress: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> FairSteer:
        """Fit gate, direction, layer and strength on ``model``; see the module docstring.

        Args:
            model: The plain transformers model (fast path: prefix-cached, recommended) or a
                ``HookedTransformer`` (the analysis path: same numbers, whole prompts re-run).
            probe_items: BAD items.
            dsv_items: Items for the contrastive pairs (needed by the ``"dsv"`` directions).
            select_items: The selection split (needed by ``selection="search"`` and ``"bbq"``).
            tokenizer: For a plain transformers model.
            shots: Few-shot examples (``prompt_format="few_shot"``).
            fit_data: A :class:`~fairlens.steer.fit_data.FitData` already computed on these items (reused,
                e.g. by the search); must match ``probe_items``.
            progress: Progress bars.
            log: ``log(message)`` for stage messages.

        Returns:
            ``self``.
        """
        cfg = self.config
        say = log or (lambda _m: None)
        needs_select = cfg.selection in ("search", "bbq") and not (
            cfg.layer is not None and (cfg.alpha is not None or cfg.selection == "bbq")
        )
        if needs_select and not select_items:
            raise ConfigError(
                f"selection={cfg.selection!r} needs select_items (a held-out selection split).",
                "pass select_items, or fix the layer and alpha, or use selection='probe'.",
            )
        if needs_select and cfg.scoring != "letter":
            raise ConfigError(
                f"selection={cfg.selection!r} scores steering variants with a prefix cache, which "
                "needs letter scoring.",
                "use scoring='letter', or selection='probe' (or a fixed layer and alpha) with loglik.",
            )
        check_disjoint({"probe": probe_items, "dsv": dsv_items, "select": select_items or []})
        if fit_data is None:
            say("BAD pass over the probe items")
            fit_data = FitData(
                model,
                probe_items,
                dsv_items,
                tokenizer=tokenizer,
                hook_kind=cfg.hook_kind,
                layers=_candidate_layers(cfg),
                prompt_format=cfg.prompt_format,
                shots=shots,
                batch_size=cfg.batch_size,
                n_dsv_per_category=cfg.n_dsv_per_category,
                C=cfg.C,
                seed=cfg.seed,
                progress=progress,
                scoring=cfg.scoring,
            )
        elif [it.uid for it in fit_data.probe_items] != [it.uid for it in probe_items]:
            raise ConfigError("fit_data was computed on other probe items.", "pass matching items.")
        fit = fit_data
        self._fit_gates(fit)
        say(f"direction {cfg.direction!r} at {len(fit.layers)} layers")
        self.dsv_: Directions = fit.direction(cfg.direction)
        self.residual_norms_: Tensor = fit.residual_norms.float().clone()
        self.direction_cosines_ = _cosines(fit, self.dsv_)
        self.model_info_: ModelInfo = get_model_info(model)
        from fairlens.detect.gates import gate_labels, label_composition

        _, y = gate_labels("bad", fit.probe_items, fit.predictions)
        self.probe_counts_ = {
            "n_probe_items": len(probe_items),
            "unbiased": int((y == 1).sum()),
            "biased": int((y == 0).sum()),
        }
        self.label_composition_ = label_composition(fit.probe_items, fit.predictions)
        self.base_probe_accuracy_ = accuracy(probe_items, fit.predictions)
        self.split_hashes_ = {**fit.split_hashes(), "select": _hash(select_items)}
        self.fitted_templates_ = sorted(
            f"{c}/{q}"
            for c, q in {it.template_id for it in [*probe_items, *dsv_items, *(select_items or [])]}
        )
        # the selection split's share of them: another selection (a sweep) may reuse it, eval may not
        self.selection_templates_ = sorted(
            f"{c}/{q}" for c, q in {it.template_id for it in select_items or []}
        )
        self._select(fit, list(select_items or []), progress, say)
        return self

    def sweep_or_none(self, gate: str) -> SweepResult | None:
        return self.gates_.get(gate)

    def _fit_gates(self, fit: FitData) -> None:
        cfg = self.config
        self.gates_: dict[str, SweepResult] = {}
        self.gate_notes_: dict[str, str] = {}
        for name in GATES:
            result = fit.gate_or_reason(name)
            if isinstance(result, str):
                self.gate_notes_[name] = result
            else:
                self.gates_[name] = result
        if cfg.gate not in self.gates_:
            hint = (
                "Use more probe items, another scoring mode (--scoring loglik) or a stronger model."
                if cfg.gate == "bad"
                else "Use more probe items or another gate."
            )
            raise ConfigError(
                f"Too few labelled examples for the {cfg.gate!r} gate: {self.gate_notes_[cfg.gate]}.",
                hint,
            )

    def _select(
        self, fit: FitData, select_items: list[BBQItem], progress: bool, say: Callable[[str], None]
    ) -> None:
        from fairlens.search.space import SearchSpace, SelectionRule, Variant
        from fairlens.search.variants import score_variants

        cfg = self.config
        layers = [cfg.layer] if cfg.layer is not None else list(fit.layers)
        self.selection_: dict[str, Any] = {"selection": cfg.selection}
        if cfg.selection == "probe" or (cfg.layer is not None and cfg.alpha is not None):
            self.layer_ = cfg.layer if cfg.layer is not None else self.gates_[cfg.gate].best_layer()
            self.alpha_ = cfg.strength
            self.selection_["rule"] = (
                "fixed layer and alpha"
                if cfg.layer is not None
                else "best probe validation accuracy"
            )
            return
        if cfg.selection == "bbq":
            alphas: tuple[float, ...] = (cfg.strength,)
            rule = SelectionRule(metric="acc_overall", constraint=None)
        else:
            alphas = (cfg.alpha,) if cfg.alpha is not None else tuple(cfg.alphas)
            rule = SelectionRule(margin=cfg.margin)
        space = SearchSpace(
            directions=(cfg.direction,),
            layers=tuple(layers),
            alphas=alphas,
            alpha_unit=cfg.alpha_unit,
            scopes=(cfg.scope,),
            band_width=cfg.band_width,
            modes=("dynamic",),
            taus=(cfg.tau,),
            gates=(cfg.gate,),
        )
        from fairlens.search.space import expand

        variants = expand(space, fit.layers, fit.n_layers)
        say(f"selecting layer and alpha: {len(variants)} settings on {len(select_items)} items")
        base, rows, _, _ = score_variants(fit, select_items, variants, progress=progress)
        best = rule.choose(rows, base)
        chosen = Variant.from_dict({k: best[k] for k in Variant.__dataclass_fields__})
        self.layer_ = chosen.layer
        self.alpha_ = chosen.alpha
        self.selection_.update(
            {"rule": rule.describe(), "base": base, "rows": rows, "chosen": best["key"]}
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted state as safetensors + JSON."""
        self._check_fitted()
        tensors = {"dsv": self.dsv_.vectors.float(), "residual_norms": self.residual_norms_.float()}
        for name, sweep in self.gates_.items():
            tensors[f"gate_{name}_coef"] = sweep.coef.float()
            tensors[f"gate_{name}_intercept"] = sweep.intercept.float()
        meta = {
            "format": 2,
            "config": self.config.to_dict(),
            "layer": self.layer_,
            "alpha": self.alpha_,
            "hook_name": self.hook_name_,
            "model": self.model_info_.fingerprint(),
            "gates": {k: v.to_dict() for k, v in self.gates_.items()},
            "gate_notes": self.gate_notes_,
            "dsv": self.dsv_.to_dict(),
            "split_hashes": self.split_hashes_,
            "fitted_templates": self.fitted_templates_,
            "selection_templates": self.selection_templates_,
            "probe_counts": self.probe_counts_,
            "label_composition": self.label_composition_,
            "base_probe_accuracy": self.base_probe_accuracy_,
            "selection": self.selection_,
            "direction_cosines": self.direction_cosines_,
        }
        return save_artifact(path, "fairsteer", tensors, meta)

    @classmethod
    def load(cls, path: str | Path, model: Model | None = None) -> FairSteer:
        """Load a saved FairSteer; with ``model``, refuse it if it was fitted on another model."""
        tensors, meta = load_artifact(path, "fairsteer")
        if meta.get("format") != 2:
            raise ArtifactError(
                f"{str(path)!r} was saved by fairlens {meta.get('fairlens_version', '?')} in an older "
                f"format that fairlens {__version__} does not read.",
                "refit it (fairlens run, or FairSteer(...).fit(...)) and save it again.",
            )
        check_artifact(path, tensors, meta)
        fs = cls(FairSteerConfig.from_dict(meta["config"]))
        fs.gates_ = {
            name: SweepResult.from_dict(
                d, tensors[f"gate_{name}_coef"], tensors[f"gate_{name}_intercept"]
            )
            for name, d in meta["gates"].items()
        }
        fs.gate_notes_ = dict(meta["gate_notes"])
        d = meta["dsv"]
        fs.dsv_ = Directions(
            tensors["dsv"],
            tuple(d["hook_names"]),
            d["method"],
            d["position"],
            d["n_pos"],
            d["n_neg"],
        )
        fs.residual_norms_ = tensors["residual_norms"]
        fs.model_info_ = _info_from_fingerprint(meta["model"])
        fs.layer_ = int(meta["layer"])
        fs.alpha_ = float(meta["alpha"])
        fs.split_hashes_ = meta["split_hashes"]
        fs.fitted_templates_ = list(meta["fitted_templates"])
        fs.selection_templates_ = list(meta.get("selection_templates", []))
        fs.probe_counts_ = meta["probe_counts"]
        fs.label_composition_ = meta["label_composition"]
        fs.base_probe_accuracy_ = meta["base_probe_accuracy"]
        fs.selection_ = meta["selection"]
        fs.direction_cosines_ = meta["direction_cosines"]
        if model is not None:
            get_model_info(model).check_matches(meta["model"], what="FairSteer artifact")
        return fs


def _candidate_layers(cfg: FairSteerConfig) -> list[int] | None:
    if cfg.layers is None:
        return None
    layers = list(cfg.layers)
    if cfg.layer is not None and cfg.layer not in layers:
        layers.append(cfg.layer)
    width = cfg.band_width if cfg.scope == "band" else 1
    for base in list(layers) if cfg.layer is None else [cfg.layer]:
        layers += [v for v in range(base, base + width) if v not in layers]
    return sorted(layers)


def _hash(items: Sequence[BBQItem] | None) -> str | None:
    from fairlens.data import content_hash

    return content_hash(items) if items else None


def _cosines(fit: FitData, dsv: Directions) -> dict[str, Any]:
    """Per-layer cosines between the steering direction and the cheap comparison directions."""
    out: dict[str, Any] = {"layers": list(fit.layers), "direction": dsv.method}
    for name in ("probe", "pca", "colon", "dsv"):
        if name == dsv.method or name not in DIRECTION_METHODS:
            continue
        if name == "dsv" and not fit.dsv_items:
            continue
        try:
            other = fit.direction(name)
        except ConfigError:
            continue
        out[f"{dsv.method}_vs_{name}"] = cosine(dsv.vectors, other.vectors).tolist()
    return out


def _info_from_fingerprint(fp: dict[str, Any]) -> ModelInfo:
    from fairlens.models.tl_adapter import WeightProcessing

    return ModelInfo(**{**fp, "processing": WeightProcessing(**fp["processing"])})
