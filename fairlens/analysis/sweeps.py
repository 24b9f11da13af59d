"""Steering sweeps: BBQ accuracy and bias scores over layer x alpha (x tau), dynamic vs static.

The paper fixes ``alpha = 1``, ``tau = 0.5`` and one layer. :func:`steering_sweep` measures what
those choices cost or buy: for every layer, strength ``alpha`` and gate threshold ``tau`` it steers
the model (dynamic = gated by the probe, static = always on, the paper's "DSV only") and scores the
same BBQ items, reporting ambiguous / disambiguated accuracy and ``s_AMB`` / ``s_DIS``. Static
steering ignores ``tau``, so it is run once per (layer, alpha).

A sweep is a *selection* tool: run it on a selection split, never on the items you will report
(it refuses items that share a BBQ template with the steerer's fitting data or with ``exclude``).
On the plain transformers model with letter scoring it runs on a prefix cache (one one-token forward
per static setting; the dynamic settings, every ``tau``, composed from it); elsewhere it re-runs the
prompts under each steerer. The two give the same numbers (tested).

For the full protocol (direction families, scopes, a declared selection rule, intervals on an eval
split), use :func:`fairlens.search.engine.run_search`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from itertools import product
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from fairlens.backend import is_hooked
from fairlens.data import BBQItem, PromptFormat
from fairlens.detect.layer_sweep import SweepResult
from fairlens.directions import Directions
from fairlens.errors import ConfigError
from fairlens.model_types import Model, Tokenizer
from fairlens.scoring.letters import ScoringMode, score_items
from fairlens.scoring.metrics import BBQMetrics, bbq_metrics
from fairlens.steer.fitted import SteererSource
from fairlens.steer.steerer import PositionPolicy, Steerer, SteeringConfig, SteerMode

__all__ = ["METRICS", "SteererFactory", "SteeringPoint", "SteeringSweep", "steering_sweep"]

METRICS: tuple[str, ...] = ("acc_ambig", "acc_disambig", "s_amb", "s_dis")
"""Pooled metrics each sweep point records (accuracies are fractions, bias scores x100)."""

Mode = Literal["base", "dynamic", "static"]


@dataclass(frozen=True, eq=False)
class SteererFactory:
    """Builds :class:`Steerer` s from a probe sweep and per-layer directions, without a FairSteer.

    For analysis on activations you extracted yourself: the DSV (or any direction) and the probe of
    each swept layer, combined exactly as :meth:`FairSteer.steerer` combines them.

    Attributes:
        sweep: Probe sweep over the candidate layers (gates).
        directions: One steering vector per hook of ``sweep`` (same hook names).
        positions: Default position policy (``"generated"``: the paper's).
    """

    sweep: SweepResult
    directions: Directions
    positions: PositionPolicy = "generated"

    def __post_init__(self) -> None:
        missing = [h for h in self.sweep.hook_names if h not in self.directions.hook_names]
        if missing:
            raise ConfigError(
                f"No direction for the swept hooks {missing}.",
                "pass directions read at every hook of sweep.hook_names.",
            )

    def steerer(
        self,
        *,
        mode: SteerMode = "dynamic",
        alpha: float | None = None,
        tau: float | None = None,
        positions: PositionPolicy | None = None,
        layer: int | None = None,
    ) -> Steerer:
        """A steerer at ``layer`` (default: the sweep's best layer)."""
        layer = self.sweep.best_layer() if layer is None else layer
        probe = self.sweep.probe(layer)
        name = self.sweep.hook_names[self.sweep.layers.index(layer)]
        cfg = SteeringConfig(
            mode=mode,
            alpha=1.0 if alpha is None else alpha,
            tau=0.5 if tau is None else tau,
            positions=positions or self.positions,  # type: ignore[arg-type]
        )
        return Steerer(
            name,
            self.directions.at(name),
            torch.from_numpy(probe.coef_[0]).float(),
            float(probe.intercept_[0]),
            cfg,
        )


@dataclass(frozen=True)
class SteeringPoint:
    """Pooled BBQ metrics of one steering setting.

    Attributes:
        mode: ``"base"`` (no steering), ``"dynamic"`` or ``"static"``.
        layer: Steered layer (``-1`` for base).
        alpha: Steering strength (0 for base).
        tau: Gate threshold (NaN for base and static).
        acc_ambig, acc_disambig: Pooled accuracies (fractions).
        s_amb, s_dis: Pooled bias scores (x100).
        gate_rate: Fraction of probed positions steered (NaN for base).
    """

    mode: str
    layer: int
    alpha: float
    tau: float
    acc_ambig: float
    acc_disambig: float
    s_amb: float
    s_dis: float
    gate_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {
            k: (None if isinstance(v, float) and not np.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def _nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


def _point(
    mode: str, layer: int, alpha: float, tau: float, m: BBQMetrics, rate: float
) -> SteeringPoint:
    p = m.pooled
    return SteeringPoint(
        mode, layer, alpha, tau, _nan(p.acc_ambig), _nan(p.acc_disambig), _nan(p.s_amb), _nan(p.s_dis), rate
    )  # fmt: skip


@dataclass(frozen=True)
class SteeringSweep:
    """All points of a sweep plus the unsteered baseline.

    Attributes:
        base: The unsteered model's point.
        points: One point per (mode, layer, alpha, tau) setting.
        layers, alphas, taus: The swept values.
        n_items: Items scored per point.
        hook_kind: Hook kind steered (e.g. ``"resid_post"``).
    """

    base: SteeringPoint
    points: tuple[SteeringPoint, ...]
    layers: tuple[int, ...]
    alphas: tuple[float, ...]
    taus: tuple[float, ...]
    n_items: int
    hook_kind: str

    def grid(self, metric: str, mode: str = "dynamic", tau: float | None = None) -> np.ndarray:
        """``[layer, alpha]`` array of ``metric`` for one mode (and ``tau``, default the first)."""
        if metric not in (*METRICS, "gate_rate"):
            raise ConfigError(
                f"Unknown metric {metric!r}.", f"use one of: {', '.join([*METRICS, 'gate_rate'])}."
            )
        tau = self.taus[0] if tau is None else tau
        out = np.full((len(self.layers), len(self.alphas)), np.nan)
        for p in self.points:
            if p.mode == mode and (mode == "static" or p.tau == tau):
                out[self.layers.index(p.layer), self.alphas.index(p.alpha)] = getattr(p, metric)
        return out

    def best(self, metric: str = "acc_ambig", mode: str = "dynamic") -> SteeringPoint:
        """The point of ``mode`` with the highest ``metric`` (lowest |bias| for ``s_*``)."""
        cands = [p for p in self.points if p.mode == mode]
        if not cands:
            raise ConfigError(
                f"No {mode!r} points in this sweep.",
                "pass a mode that was swept (steering_sweep(modes=...)).",
            )
        if metric.startswith("s_"):
            return min(cands, key=lambda p: abs(getattr(p, metric)))
        return max(cands, key=lambda p: getattr(p, metric))

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(),
            "points": [p.to_dict() for p in self.points],
            "layers": list(self.layers),
            "alphas": list(self.alphas),
            "taus": list(self.taus),
            "n_items": self.n_items,
            "hook_kind": self.hook_kind,
        }


def steering_sweep(
    model: Model,
    items: Sequence[BBQItem],
    source: SteererSource,
    *,
    layers: Sequence[int],
    alphas: Sequence[float] = (0.5, 1.0, 2.0),
    taus: Sequence[float] = (0.5,),
    modes: Sequence[SteerMode] = ("dynamic", "static"),
    scoring: ScoringMode = "letter",
    prompt_format: PromptFormat = "zero_shot",
    positions: PositionPolicy | None = None,
    batch_size: int = 16,
    tokenizer: Tokenizer | None = None,
    exclude: Sequence[BBQItem] = (),
    progress: bool = False,
) -> SteeringSweep:
    """Score ``items`` under steering at every (mode, layer, alpha, tau) and unsteered.

    Args:
        model: The ``HookedTransformer`` the source was fitted on.
        items: Evaluation items (keep them template-disjoint from the fitting data).
        source: A fitted :class:`~fairlens.FairSteer` (or any object with a compatible
            ``steerer(mode=, alpha=, tau=, positions=, layer=)``); its DSV and probe of each layer
            are used.
        layers: Layers to steer (must have been fitted).
        alphas: Steering strengths.
        taus: Gate thresholds (dynamic mode only).
        modes: ``"dynamic"`` and/or ``"static"``.
        scoring: ``"letter"`` or ``"loglik"``.
        prompt_format: Prompt format.
        positions: Position policy override (default: the source's).
        batch_size: Items per forward pass.
        tokenizer: For a plain transformers model.
        exclude: Items the sweep must not share a BBQ template with (e.g. the eval split); the
            steerer's fit split (its probe and DSV templates) is always refused, its selection
            split is allowed (a sweep is one more selection on it).
        progress: Show a progress bar over settings.

    Returns:
        A :class:`SteeringSweep`; ``grid(metric, mode)`` gives the ``[layer, alpha]`` heatmap.
    """
    bad = [m for m in modes if m not in ("dynamic", "static")]
    if bad or not modes:
        raise ConfigError(
            f"modes must be 'dynamic' and/or 'static'; received {list(modes)}.",
            "pass modes=('dynamic',), ('static',) or ('dynamic', 'static').",
        )
    if not layers or not alphas or not taus:
        raise ConfigError(
            "layers, alphas and taus must each have at least one value.",
            "pass at least one value for each of layers, alphas and taus.",
        )
    _check_templates(items, source, exclude)
    settings: list[tuple[SteerMode, int, float, float]] = []
    for mode, layer, alpha in product(modes, layers, alphas):
        for tau in taus if mode == "dynamic" else (float("nan"),):
            settings.append((mode, int(layer), float(alpha), float(tau)))
    probe = source.steerer(mode="static", layer=int(layers[0]), positions=positions)
    cached = not is_hooked(model) and scoring == "letter" and probe.config.positions != "all"
    plan = _SweepPlan(
        model, tuple(items), source, tuple(settings), tuple(int(v) for v in layers),
        tuple(float(a) for a in alphas), prompt_format, positions, batch_size, tokenizer,
        progress, scoring,
    )  # fmt: skip
    base, points, hook_kind = (_cached_sweep if cached else _full_sweep)(plan)
    return SteeringSweep(
        base,
        tuple(points),
        tuple(int(v) for v in layers),
        tuple(float(a) for a in alphas),
        tuple(float(t) for t in taus),
        len(items),
        hook_kind,
    )


@dataclass(frozen=True)
class _SweepPlan:
    """What both sweep engines need: the model, the items, the steerer source and the settings."""

    model: Model
    items: tuple[BBQItem, ...]
    source: SteererSource
    settings: tuple[tuple[SteerMode, int, float, float], ...]
    layers: tuple[int, ...]
    alphas: tuple[float, ...]
    prompt_format: PromptFormat
    positions: PositionPolicy | None
    batch_size: int
    tokenizer: Tokenizer | None
    progress: bool
    scoring: ScoringMode


def _full_sweep(plan: _SweepPlan) -> tuple[SteeringPoint, list[SteeringPoint], str]:
    """The sweep by re-running the prompts under each steerer (any model, any scoring mode)."""
    model, items, source = plan.model, plan.items, plan.source

    def run() -> np.ndarray:
        res = score_items(
            model, items, mode=plan.scoring, prompt_format=plan.prompt_format, batch_size=plan.batch_size,
            tokenizer=plan.tokenizer,
        )  # fmt: skip
        return res.predictions.numpy()

    base = _point("base", -1, 0.0, float("nan"), bbq_metrics(items, run()), float("nan"))
    points = []
    hook_kind = ""
    for mode, layer, alpha, tau in tqdm(
        plan.settings, desc="steering sweep", disable=not plan.progress
    ):
        steerer = source.steerer(
            mode=mode,
            alpha=alpha,
            tau=0.5 if mode == "static" else tau,
            positions=plan.positions,
            layer=layer,
        )
        hook_kind = steerer.hook_name.rsplit("hook_", 1)[-1]
        with steerer.apply(model) as stats:
            preds = run()
        points.append(_point(mode, layer, alpha, tau, bbq_metrics(items, preds), stats.rate))
    return base, points, hook_kind


def _check_templates(
    items: Sequence[BBQItem], source: SteererSource, exclude: Sequence[BBQItem]
) -> None:
    # the fit split (probe and DSV items) is refused; the steerer's own selection split is not:
    # a sweep is another selection on it, and both stay disjoint from the eval split
    fitted = set(getattr(source, "fitted_templates_", None) or ()) - set(
        getattr(source, "selection_templates_", None) or ()
    )
    excluded = {f"{it.category}/{it.question_index}" for it in exclude}
    for name, templates in (
        ("the steerer's fit split", fitted),
        ("the excluded items", excluded),
    ):
        shared = sorted({f"{it.category}/{it.question_index}" for it in items} & templates)
        if shared:
            raise ConfigError(
                f"the sweep items share {len(shared)} BBQ template(s) with {name} (e.g. {shared[0]}).",
                "sweep on a template-disjoint selection split (fairlens.data.split_by_template).",
            )


def _cached_sweep(plan: _SweepPlan) -> tuple[SteeringPoint, list[SteeringPoint], str]:
    """The sweep on a prefix cache: one static forward per (layer, alpha), dynamic composed."""
    from fairlens.backend import resolve_tokenizer
    from fairlens.scoring.letters import letter_token_ids, prompt_tokens
    from fairlens.scoring.prefix_cache import PrefixCache

    model, items, source = plan.model, plan.items, plan.source
    positions, progress = plan.positions, plan.progress

    tok = resolve_tokenizer(model, plan.tokenizer)
    statics = {
        (layer, alpha): source.steerer(mode="static", alpha=alpha, layer=layer, positions=positions)
        for layer in plan.layers
        for alpha in plan.alphas
    }
    hooks = sorted({s.hook_name for s in statics.values()})
    cache = PrefixCache(
        model, prompt_tokens(model, items, plan.prompt_format, tokenizer=tok),
        read_ids=letter_token_ids(tok), capture=hooks, tokenizer=tok, batch_size=plan.batch_size,
        progress=progress, uids=[it.uid for it in items],
    )  # fmt: skip
    keys = list(statics)
    edits = [statics[key].static_edit() for key in keys]
    logits = cache.logits(edits, progress=progress)
    static_preds = {key: logits[i].argmax(-1) for i, key in enumerate(keys)}
    base_preds = cache.base_predictions
    base = _point("base", -1, 0.0, float("nan"), bbq_metrics(items, base_preds), float("nan"))
    points = []
    hook_kind = ""
    for mode, layer, alpha, tau in plan.settings:
        st = statics[(layer, alpha)]
        hook_kind = st.hook_name.rsplit("hook_", 1)[-1]
        if mode == "static":
            preds, rate = static_preds[(layer, alpha)], 1.0
        else:
            fire = st.p_unbiased(cache.base_acts[st.hook_name]) < tau
            preds = torch.where(fire, static_preds[(layer, alpha)], base_preds)
            rate = float(fire.float().mean())
        points.append(_point(mode, layer, alpha, tau, bbq_metrics(items, preds), rate))
    return base, points, hook_kind
