"""The steering search: direction x layer x alpha x scope x mode x gate x tau, chosen on a selection split.

Protocol (what makes the numbers honest):

1. Everything is *fitted* on the fit split (:class:`~fairlens.steer.fit_data.FitData`: BAD labels, gates,
   directions, residual norms).
2. Every variant of the grid is scored on a **selection split** that shares no BBQ template with the
   fit items or the eval items (refused otherwise).
3. One variant is chosen by a :class:`SelectionRule` declared before scoring and recorded with the
   results (default: the highest ambiguous accuracy among variants whose disambiguated accuracy is
   at least base - 2 points).
4. The chosen variant (and the best variant of each direction family and mode, each chosen by the
   same rule on the selection split) is scored **once** on the eval split, with Wilson intervals,
   paired bootstrap intervals of the gain over base and McNemar's p.

Speed: variants confined to the last prompt position (scopes ``"colon"`` and ``"band"``) are scored
on a :class:`~fairlens.scoring.prefix_cache.PrefixCache`: one static forward of one token per (direction, layer,
alpha, scope), and every dynamic variant (each gate and tau) is composed from it and the base run
with no extra forward. Scope ``"all"`` (every prompt position) re-runs whole prompts per variant.
Per-variant predictions are appended to ``edits.jsonl`` in ``out_dir`` as they are computed, so an
interrupted search resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from fairlens.backend import hook_name
from fairlens.data import BBQItem, content_hash
from fairlens.detect.gates import get_gate
from fairlens.directions import get_direction_method
from fairlens.errors import ConfigError
from fairlens.scoring.metrics import bbq_metrics
from fairlens.scoring.prefix_cache import PrefixCache
from fairlens.scoring.variant_scorer import Edit, VariantScorer
from fairlens.stats import compare
from fairlens.steer.fit_data import FitData, _model_id, check_disjoint
from fairlens.steer.interventions import DEBIAS_INSTRUCTION

__all__ = [
    "SCOPES",
    "SearchResult",
    "SearchSpace",
    "SelectionRule",
    "Variant",
    "run_search",
    "score_variants",
]

SCOPES: tuple[str, ...] = ("colon", "band", "all")
MODES: tuple[str, ...] = ("static", "dynamic")
ALPHA_UNITS: tuple[str, ...] = ("relative", "absolute")
METRICS: tuple[str, ...] = ("acc_ambig", "acc_disambig", "acc_overall", "s_amb", "s_dis")


def _finite_tuple(name: str, values: Sequence[float], *, low: float | None = None) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ConfigError(f"{name} must be finite numbers; got {v!r}.", f"fix --{name}.")
        if low is not None and v < low:
            raise ConfigError(f"{name} must be >= {low}; got {v!r}.")


@dataclass(frozen=True)
class SearchSpace:
    """The grid. Every combination is one variant (static variants ignore gates and taus).

    Attributes:
        directions: Direction methods (:data:`fairlens.directions.DIRECTION_METHODS`).
        layers: Steered layers (default: every fitted candidate layer).
        alphas: Steering strengths, in ``alpha_unit``.
        alpha_unit: ``"relative"``: ``alpha`` times the mean residual norm at ``:`` of that layer,
            along the unit direction; ``"absolute"``: ``alpha`` times the raw vector (the paper's).
        scopes: ``"colon"`` (one layer at ``:``, the reference), ``"band"`` (``band_width``
            consecutive layers from the given one, at ``:``, gated once at the first), ``"all"``
            (every prompt position of that layer; re-runs whole prompts).
        band_width: Layers in a band.
        modes: ``"static"`` (always add) and/or ``"dynamic"`` (add where the gate fires).
        taus: Gate thresholds on P(leave alone).
        gates: Gates (:data:`fairlens.detect.gates.GATES`).
    """

    directions: tuple[str, ...] = ("dsv",)
    layers: tuple[int, ...] | None = None
    alphas: tuple[float, ...] = (0.1, 0.2, 0.4, 0.8)
    alpha_unit: str = "relative"
    scopes: tuple[str, ...] = ("colon",)
    band_width: int = 3
    modes: tuple[str, ...] = MODES
    taus: tuple[float, ...] = (0.5,)
    gates: tuple[str, ...] = ("bad",)

    def __post_init__(self) -> None:
        for name in ("directions", "alphas", "scopes", "modes", "taus", "gates"):
            if not getattr(self, name):
                raise ConfigError(f"the search space needs at least one value in {name}.")
        for d in self.directions:
            get_direction_method(d)
        for g in self.gates:
            get_gate(g)
        _finite_tuple("alphas", self.alphas, low=0.0)
        _finite_tuple("taus", self.taus, low=0.0)
        if any(t > 1 for t in self.taus):
            raise ConfigError(f"taus are probabilities in [0, 1]; got {list(self.taus)}.")
        if self.alpha_unit not in ALPHA_UNITS:
            raise ConfigError(f"alpha_unit must be one of {ALPHA_UNITS}; got {self.alpha_unit!r}.")
        bad = [s for s in self.scopes if s not in SCOPES]
        if bad:
            raise ConfigError(f"unknown scopes {bad}.", f"use some of: {', '.join(SCOPES)}.")
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ConfigError(f"unknown modes {bad}.", f"use some of: {', '.join(MODES)}.")
        if self.band_width < 2 and "band" in self.scopes:
            raise ConfigError(f"band_width must be >= 2; got {self.band_width}.")
        if self.layers is not None and not self.layers:
            raise ConfigError("layers is empty.", "pass None (all fitted layers) or some layers.")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**values)


@dataclass(frozen=True)
class SelectionRule:
    """How the winner is chosen on the selection split, declared before scoring.

    The variant with the highest ``metric`` among those whose ``constraint`` metric is at least
    base's minus ``margin`` (no constraint when ``constraint`` is None). Ties: the smaller
    relative strength, then the earlier layer, then the variant key.
    """

    metric: str = "acc_ambig"
    constraint: str | None = "acc_disambig"
    margin: float = 0.02

    def __post_init__(self) -> None:
        for name in (self.metric, *([self.constraint] if self.constraint else [])):
            if name not in ("acc_ambig", "acc_disambig", "acc_overall"):
                raise ConfigError(
                    f"selection metrics are accuracies (acc_ambig, acc_disambig, acc_overall); got {name!r}."
                )
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ConfigError(f"margin must be a finite number >= 0; got {self.margin!r}.")

    def describe(self) -> str:
        head = f"highest {self.metric}"
        if self.constraint:
            head += f" among variants with {self.constraint} >= base - {100 * self.margin:g} points"
        return head + "; ties: smaller relative strength, then earlier layer, then variant key"

    def eligible(self, row: Mapping[str, Any], base: Mapping[str, Any]) -> bool:
        if self.constraint is None:
            return True
        value, ref = row.get(self.constraint), base.get(self.constraint)
        if value is None or ref is None:
            return True
        return value >= ref - self.margin - 1e-12

    def choose(
        self, rows: Sequence[Mapping[str, Any]], base: Mapping[str, Any]
    ) -> Mapping[str, Any]:
        """The winning row; raises when no row meets the rule."""
        ok = [r for r in rows if self.eligible(r, base) and r.get(self.metric) is not None]
        if not ok:
            raise ConfigError(
                f"no variant of the {len(rows)} scored meets the selection rule ({self.describe()}).",
                "widen the margin (--margin), add smaller alphas, or check the grid.",
            )
        return min(
            ok,
            key=lambda r: (-r[self.metric], r["strength"], r["layer"], r["key"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


@dataclass(frozen=True)
class Variant:
    """One steering setting."""

    direction: str
    layer: int
    alpha: float
    alpha_unit: str = "relative"
    scope: str = "colon"
    mode: str = "dynamic"
    gate: str | None = "bad"
    tau: float | None = 0.5
    band_width: int = 1

    @property
    def edit_key(self) -> str:
        """Key of the static forward this variant needs (dynamic variants share it)."""
        width = f"x{self.band_width}" if self.scope == "band" else ""
        return f"{self.direction}|L{self.layer}{width}|{self.alpha_unit[:3]}{self.alpha:g}|{self.scope}"

    @property
    def key(self) -> str:
        if self.mode == "static":
            return f"{self.edit_key}|static"
        return f"{self.edit_key}|dynamic|{self.gate}|t{self.tau:g}"

    @property
    def layers(self) -> tuple[int, ...]:
        width = self.band_width if self.scope == "band" else 1
        return tuple(range(self.layer, self.layer + width))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Variant:
        return cls(**{k: v for k, v in data.items() if k != "key"})


def expand(space: SearchSpace, fitted_layers: Sequence[int], n_layers: int) -> list[Variant]:
    """Every variant of ``space`` (static first per edit, then each gate x tau)."""
    layers = list(fitted_layers) if space.layers is None else list(space.layers)
    unknown = [v for v in layers if v not in fitted_layers]
    if unknown:
        raise ConfigError(
            f"layers {unknown} were not fitted (fitted: {list(fitted_layers)}).",
            "search among the fitted layers, or fit with those layers.",
        )
    out: list[Variant] = []
    for direction in space.directions:
        for scope in space.scopes:
            width = space.band_width if scope == "band" else 1
            for layer in layers:
                if scope == "band" and (
                    layer + width > n_layers
                    or any(v not in fitted_layers for v in range(layer, layer + width))
                ):
                    continue
                for alpha in space.alphas:
                    base = Variant(
                        direction,
                        layer,
                        float(alpha),
                        space.alpha_unit,
                        scope,
                        "static",
                        None,
                        None,
                        width,
                    )
                    if "static" in space.modes:
                        out.append(base)
                    if "dynamic" in space.modes:
                        for gate in space.gates:
                            for tau in space.taus:
                                out.append(replace(base, mode="dynamic", gate=gate, tau=float(tau)))
    if not out:
        raise ConfigError(
            "the search space has no variant (e.g. every band runs past the last layer)."
        )
    return out


# --------------------------------------------------------------------------- building edits


def steering_vectors(fit: FitData, variant: Variant) -> dict[str, Tensor]:
    """Hook -> vector actually added (alpha and unit applied) for every layer of ``variant``."""
    layers = variant.layers
    dirs = fit.direction(variant.direction, layers)
    out: dict[str, Tensor] = {}
    for layer in layers:
        hook = hook_name(fit.hook_kind, layer)
        v = dirs.at(hook).float()
        if variant.alpha_unit == "absolute":
            out[hook] = variant.alpha * v
            continue
        norm = float(v.norm())
        if not norm > 0 or not math.isfinite(norm):
            raise ConfigError(
                f"the {variant.direction!r} direction at layer {layer} is zero or not finite, so a "
                "relative strength is undefined.",
                "drop that layer or direction.",
            )
        out[hook] = variant.alpha * fit.norm_at(hook) / norm * v
    return out


def strength(fit: FitData, variant: Variant) -> float:
    """``||alpha v|| / mean ||h||`` at the variant's first layer (the relative strength)."""
    hook = hook_name(fit.hook_kind, variant.layer)
    vec = steering_vectors(fit, replace(variant, scope="colon"))[hook]
    return float(vec.norm()) / fit.norm_at(hook)


def gate_probabilities(fit: FitData, gate: str, layer: int, acts: Tensor) -> Tensor:
    """P(leave alone) of gate ``gate`` at ``layer`` for unsteered ``acts`` ``[n, d]``."""
    sweep = fit.gate(gate)
    i = sweep.layers.index(layer)
    return torch.sigmoid(
        acts.double() @ sweep.coef[i].double() + sweep.intercept[i].double()
    ).float()


# --------------------------------------------------------------------------- scoring


@dataclass
class _Context:
    fit: FitData
    items: list[BBQItem]
    scorer: VariantScorer
    store: _EditStore | None
    progress: bool


def _row(items: Sequence[BBQItem], preds: np.ndarray, base_preds: np.ndarray) -> dict[str, Any]:
    pooled = bbq_metrics(items, preds).pooled
    return {
        "acc_ambig": pooled.acc_ambig,
        "acc_disambig": pooled.acc_disambig,
        "acc_overall": pooled.acc_overall,
        "s_amb": pooled.s_amb,
        "s_dis": pooled.s_dis,
        "changed": float((preds != base_preds).mean()),
    }


def _gate_rates(items: Sequence[BBQItem], fire: np.ndarray | None) -> dict[str, float | None]:
    if fire is None:
        return {"gate_rate": None, "gate_rate_ambig": None, "gate_rate_disambig": None}
    amb = np.array([it.is_ambiguous for it in items])

    def rate(mask: np.ndarray) -> float | None:
        return float(fire[mask].mean()) if mask.any() else None

    return {
        "gate_rate": float(fire.mean()),
        "gate_rate_ambig": rate(amb),
        "gate_rate_disambig": rate(~amb),
    }


def score_variants(
    fit: FitData,
    items: Sequence[BBQItem],
    variants: Sequence[Variant],
    *,
    scorer: VariantScorer | None = None,
    store: _EditStore | None = None,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, np.ndarray], VariantScorer]:
    """Score ``variants`` on ``items``: ``(base_row, rows, predictions by key, scorer)``.

    Static edits confined to ``:`` are batched on the (prefix-cached) scorer; dynamic variants are
    composed from them; scope ``"all"`` variants re-run whole prompts under a steerer.
    """
    items = list(items)
    needed = sorted({hook_name(fit.hook_kind, v.layer) for v in variants if v.mode == "dynamic"})
    if scorer is None:
        scorer = cast(VariantScorer, fit.scorer_for(items, desc="prefix pass (selection items)"))
    check_scorer(scorer, items)
    missing = [h for h in needed if h not in scorer.base_acts]
    if missing:
        raise ConfigError(
            f"the scorer did not capture {missing}; build it with capture=those hooks."
        )
    base_preds = scorer.base_logits.argmax(-1).numpy()
    base_row = {**_row(items, base_preds, base_preds), **_gate_rates(items, None), "key": "base"}
    ctx = _Context(fit, items, scorer, store, progress)
    static = _static_predictions(ctx, variants, base_preds)
    rows: list[dict[str, Any]] = []
    preds_by_key: dict[str, np.ndarray] = {}
    fire_cache: dict[tuple[str, int, float], np.ndarray] = {}
    for v in variants:
        if v.scope == "all":
            preds, fire = _all_positions(ctx, v)
        elif v.mode == "static":
            preds, fire = static[v.edit_key], None
        else:
            assert v.gate is not None and v.tau is not None
            fkey = (v.gate, v.layer, v.tau)
            if fkey not in fire_cache:
                hook = hook_name(fit.hook_kind, v.layer)
                p = gate_probabilities(fit, v.gate, v.layer, scorer.base_acts[hook])
                fire_cache[fkey] = (p < v.tau).numpy()
            fire = fire_cache[fkey]
            preds = np.where(fire, static[v.edit_key], base_preds)
        if v.mode == "static" and v.scope != "all":
            fire = np.ones(len(items), dtype=bool)
        preds_by_key[v.key] = preds
        rows.append(
            {
                **v.to_dict(),
                "strength": strength(fit, v),
                **_row(items, preds, base_preds),
                **_gate_rates(items, fire),
            }
        )
    return base_row, rows, preds_by_key, scorer


def _static_predictions(
    ctx: _Context, variants: Sequence[Variant], base_preds: np.ndarray
) -> dict[str, np.ndarray]:
    """Predictions of every distinct static edit at ``:`` (cached path), resuming from the store."""
    todo: dict[str, Variant] = {}
    for v in variants:
        if v.scope != "all" and v.edit_key not in todo:
            todo[v.edit_key] = replace(v, mode="static", gate=None, tau=None)
    done = dict(ctx.store.load()) if ctx.store is not None else {}
    out = {k: done[k] for k in todo if k in done}
    remaining = [v for k, v in todo.items() if k not in out]
    per_group = 32
    from tqdm.auto import tqdm

    groups = [remaining[i : i + per_group] for i in range(0, len(remaining), per_group)]
    for group in tqdm(groups, desc="static variants", disable=not ctx.progress, unit="group"):
        edits: list[Edit] = [steering_vectors(ctx.fit, v) for v in group]
        logits = ctx.scorer.logits(edits)
        for v, lg in zip(group, logits, strict=True):
            preds = lg.argmax(-1).numpy()
            out[v.edit_key] = preds
            if ctx.store is not None:
                ctx.store.append(v.edit_key, preds)
    return out


def _all_positions(ctx: _Context, v: Variant) -> tuple[np.ndarray, np.ndarray | None]:
    """A scope-``"all"`` variant: whole prompts under a steerer at every position."""
    from fairlens.scoring.letters import score_items
    from fairlens.steer.steerer import Steerer, SteeringConfig, SteerMode

    key = v.key
    if ctx.store is not None:
        saved = dict(ctx.store.load())
        if key in saved:
            return saved[key], None
    fit = ctx.fit
    hook = hook_name(fit.hook_kind, v.layer)
    vec = steering_vectors(fit, replace(v, scope="colon"))[hook]
    if v.mode == "dynamic":
        assert v.gate is not None and v.tau is not None
        sweep = fit.gate(v.gate)
        i = sweep.layers.index(v.layer)
        coef, intercept = sweep.coef[i].float(), sweep.intercept[i].float()
    else:
        coef, intercept = torch.zeros_like(vec), torch.tensor(0.0)
    steerer = Steerer(
        hook,
        vec,
        coef,
        intercept,
        SteeringConfig(
            mode=cast(SteerMode, v.mode),
            alpha=1.0,
            tau=v.tau if v.tau is not None else 0.5,
            positions="all",
        ),
    )
    with steerer.apply(fit.model):
        res = score_items(
            fit.model,
            ctx.items,
            mode="letter",
            prompt_format=fit.prompt_format,
            shots=fit.shots,
            tokenizer=fit.tokenizer,
            batch_size=fit.batch_size,
            progress=ctx.progress,
        )
    preds = res.predictions.numpy()
    if ctx.store is not None:
        ctx.store.append(key, preds)
    return preds, None


# --------------------------------------------------------------------------- resumable store


class _EditStore:
    """Per-edit predictions appended to ``edits.jsonl`` beside a ``meta.json`` that must match."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.path = folder / "edits.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        meta_path = folder / "meta.json"
        if meta_path.exists():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != meta:
                raise ConfigError(
                    f"{str(folder)!r} holds a search with other settings or splits, so it cannot "
                    "be resumed.",
                    "use another --out-dir, or delete that folder to start again.",
                )
        else:
            meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True))
        self._cache: dict[str, np.ndarray] | None = None

    def load(self) -> dict[str, np.ndarray]:
        if self._cache is None:
            self._cache = {}
            if self.path.exists():
                good: list[str] = []
                for line in self.path.read_text().splitlines():
                    try:
                        rec = json.loads(line)
                        self._cache[rec["key"]] = np.asarray(rec["pred"], dtype=np.int64)
                        good.append(line)
                    except (json.JSONDecodeError, KeyError, TypeError):
                        break  # a line cut by an interruption: drop it and what follows
                self.path.write_text("".join(g + "\n" for g in good))
        return self._cache

    def append(self, key: str, preds: np.ndarray) -> None:
        self.load()
        assert self._cache is not None
        self._cache[key] = preds
        with self.path.open("a") as fh:
            fh.write(json.dumps({"key": key, "pred": preds.tolist()}) + "\n")
            fh.flush()


# --------------------------------------------------------------------------- the search


@dataclass(frozen=True)
class SearchResult:
    """The whole grid on the selection split, the choice, and the eval-split scores.

    Attributes:
        space, rule: What was searched and how the winner was chosen (declared before scoring).
        base: Base metrics on the selection split.
        rows: Every variant's metrics on the selection split.
        chosen: The winner's key; ``family_best``: per direction and mode, the key chosen by the rule.
        references: Named reference variants (the paper's settings) with their selection scores.
        eval: Per evaluated key (``"base"``, ``"prompt"``, the chosen, the family bests, the
            references): metrics on the eval split and comparisons with base.
        patching: The instruction-patching ceiling per layer (selection and eval), if computed.
        diagnostics: Gate label composition and the gates' layer sweeps.
        settings: Split sizes and hashes, model, timings.
    """

    space: SearchSpace
    rule: SelectionRule
    base: dict[str, Any]
    rows: tuple[dict[str, Any], ...]
    chosen: str
    family_best: dict[str, dict[str, str | None]]
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    eval: dict[str, dict[str, Any]] = field(default_factory=dict)
    patching: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self, key: str) -> dict[str, Any]:
        for r in self.rows:
            if r["key"] == key:
                return r
        for ref in self.references.values():
            if ref["row"]["key"] == key:
                return ref["row"]
        raise ConfigError(f"no variant {key!r} in this search.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchResult:
        """Rebuild from :meth:`to_dict` (e.g. ``search.json`` of a finished search)."""
        rule = {k: v for k, v in data["rule"].items() if k != "description"}
        return cls(
            SearchSpace.from_dict(data["space"]),
            SelectionRule(**rule),
            data["base"],
            tuple(data["rows"]),
            data["chosen"],
            data["family_best"],
            data["references"],
            data["eval"],
            data["patching"],
            data["diagnostics"],
            data["settings"],
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space.to_dict(),
            "rule": self.rule.to_dict(),
            "base": self.base,
            "chosen": self.chosen,
            "family_best": self.family_best,
            "references": self.references,
            "eval": self.eval,
            "patching": self.patching,
            "diagnostics": self.diagnostics,
            "settings": self.settings,
            "rows": list(self.rows),
        }

    def markdown(self) -> str:
        from fairlens.search.report import search_markdown

        return search_markdown(self)


def _family_best(
    rows: Sequence[dict[str, Any]], base: dict[str, Any], rule: SelectionRule
) -> dict[str, dict[str, str | None]]:
    out: dict[str, dict[str, str | None]] = {}
    for direction in sorted({r["direction"] for r in rows}):
        out[direction] = {}
        for mode in MODES:
            sub = [r for r in rows if r["direction"] == direction and r["mode"] == mode]
            if not sub:
                continue
            try:
                out[direction][mode] = str(rule.choose(sub, base)["key"])
            except ConfigError:
                out[direction][mode] = None
    return out


def reference_variants(fit: FitData) -> dict[str, Variant]:
    """The paper's settings: DSV, alpha = 1 (absolute), tau = 0.5, BAD gate, one layer at ``:``.

    ``paper_probe_layer`` steers at the layer with the best BAD-probe validation accuracy (what
    fairlens did before); ``paper_bbq_layer`` is chosen by the reference code's criterion (overall
    BBQ accuracy under steering, over every fitted layer) on the selection split.
    """
    gate = fit.gate_or_reason("bad")
    if isinstance(gate, str):
        return {}
    return {
        "paper_probe_layer": Variant(
            "dsv", gate.best_layer(), 1.0, "absolute", "colon", "dynamic", "bad", 0.5
        ),
    }


def run_search(
    fit: FitData,
    select_items: Sequence[BBQItem],
    *,
    space: SearchSpace | None = None,
    rule: SelectionRule | None = None,
    eval_items: Sequence[BBQItem] = (),
    out_dir: str | Path | None = None,
    references: bool = True,
    patching: Sequence[str] = ("select", "eval"),
    extra_spaces: Sequence[SearchSpace] = (),
    extra_eval: Mapping[str, Variant] | None = None,
    scorers_out: dict[str, Any] | None = None,
    checkpoint: Callable[[], object] | None = None,
    progress: bool = False,
    log: Any = None,
) -> SearchResult:
    """Search ``space`` on ``select_items``, choose by ``rule``, score the choices on ``eval_items``.

    Args:
        fit: The fit split's material (model, gates, directions).
        select_items: The selection split (template-disjoint from the fit and eval items).
        space: The grid (default :class:`SearchSpace`).
        rule: The selection rule (default :class:`SelectionRule`).
        eval_items: The eval split; empty to stop after the selection.
        out_dir: Folder for ``edits.jsonl`` (resumable per-variant predictions) and ``meta.json``.
        references: Also score the paper's settings (:func:`reference_variants`, and the layer
            by the reference code's overall-accuracy criterion at alpha = 1).
        patching: The splits (``"select"``, ``"eval"``) on which to compute the instruction-patching
            ceiling per layer (each costs one pass over the instructed prompts of that split).
        extra_spaces: More grids whose variants join the selection (e.g. bands for a few
            directions only); the rule chooses among all of them.
        extra_eval: Named variants chosen elsewhere (e.g. FairSteer's own selection) to score on
            both splits beside the references; they take no part in the choice.
        scorers_out: If given, receives the eval split's scorers (``"plain"``, ``"prompt"``) for
            reuse (the panel's BBQ suite).
        checkpoint: Called once every direction and gate is fitted, before any scoring (e.g. to
            save the fit data, so that a resumed search does not fit them again).
        progress: Progress bars.
        log: ``log(message)`` for stage messages.
    """
    say = log or (lambda _m: None)
    space = space or SearchSpace()
    rule = rule or SelectionRule()
    select_items, eval_items = list(select_items), list(eval_items)
    if not select_items:
        raise ConfigError("the selection split is empty.", "pass held-out selection items.")
    check_disjoint(
        {"fit": [*fit.probe_items, *fit.dsv_items], "select": select_items, "eval": eval_items}
    )
    t0 = time.perf_counter()
    skipped: dict[str, str] = {}
    for sp in (space, *extra_spaces):
        for g in sp.gates:
            reason = fit.gate_or_reason(g)
            if isinstance(reason, str):
                skipped[g] = reason
    if skipped:
        say("gates left out of the grid: " + "; ".join(f"{g}: {r}" for g, r in skipped.items()))

    def usable(sp: SearchSpace) -> SearchSpace:
        gates = tuple(g for g in sp.gates if g not in skipped)
        if gates:
            return replace(sp, gates=gates)
        if "static" in sp.modes:
            return replace(sp, modes=("static",), gates=sp.gates)
        raise ConfigError(
            f"no gate of {list(sp.gates)} can be fitted on the fit split "
            f"({'; '.join(f'{g}: {r}' for g, r in skipped.items())}), so no dynamic variant.",
            "use more probe items, another gate, or static variants only.",
        )

    variants = _unique(
        [v for sp in (space, *extra_spaces) for v in expand(usable(sp), fit.layers, fit.n_layers)]
    )
    with_refs = references and "bad" in _available_gates(fit) and bool(fit.dsv_items)
    refs = reference_variants(fit) if with_refs else {}
    paper_layers = (
        [
            Variant("dsv", layer, 1.0, "absolute", "colon", "dynamic", "bad", 0.5)
            for layer in fit.layers
        ]
        if with_refs
        else []
    )
    refs.update(extra_eval or {})
    all_variants = _unique([*variants, *refs.values(), *paper_layers])
    needed: dict[str, set[int]] = {}
    for v in all_variants:  # fit every direction and gate first: errors surface before any scoring
        needed.setdefault(v.direction, set()).update(v.layers)
        if v.gate is not None:
            fit.gate(v.gate)
    for name, layers in needed.items():
        say(f"fitting direction {name!r} at {len(layers)} layers")
        fit.direction(name, sorted(layers))
    if checkpoint is not None:
        checkpoint()
    fit.scorer = None  # the probe items' keys and values are no longer needed
    store = None
    if out_dir is not None:
        meta = {
            "select": content_hash(select_items),
            "fit": fit.split_hashes(),
            "prompt_format": fit.prompt_format,
            "hook_kind": fit.hook_kind,
            "layers": fit.layers,
            "model": _model_id(fit.model),
        }
        store = _EditStore(Path(out_dir), meta)
    say(
        f"selection: {len(variants)} variants + {len(paper_layers)} reference layers on {len(select_items)} items"
    )
    base, rows_all, _, scorer = score_variants(
        fit, select_items, all_variants, store=store, progress=progress
    )
    by_key = {r["key"]: r for r in rows_all}
    rows = [by_key[v.key] for v in variants]
    chosen = str(rule.choose(rows, base)["key"])
    family = _family_best(rows, base, rule)
    ref_rows: dict[str, dict[str, Any]] = {}
    for name, v in refs.items():
        ref_rows[name] = {"variant": v.to_dict(), "row": by_key[v.key]}
    if paper_layers:
        overall = SelectionRule(metric="acc_overall", constraint=None)
        best = overall.choose([by_key[v.key] for v in paper_layers], base)
        ref_rows["paper_bbq_layer"] = {
            "variant": _variant_of(best["key"], rows_all).to_dict(),
            "row": best,
            "per_layer": [by_key[v.key] for v in paper_layers],
        }
    timings = {"selection_s": time.perf_counter() - t0}
    diagnostics = gate_diagnostics(fit)
    patch: dict[str, Any] = {}
    bad_splits = [p for p in patching if p not in ("select", "eval")]
    if bad_splits:
        raise ConfigError(f"patching splits must be 'select' and/or 'eval'; got {bad_splits}.")
    if "select" in patching:
        say("patching ceiling on the selection split")
        patch["select"] = patching_ceiling(fit, select_items, scorer)
    evaluated: dict[str, dict[str, Any]] = {}
    if eval_items:
        t = time.perf_counter()
        keys = [chosen, *(k for fam in family.values() for k in fam.values() if k)]
        keys += [ref["row"]["key"] for ref in ref_rows.values()]
        wanted = _unique([_variant_of(k, rows_all) for k in keys])
        if isinstance(scorer, PrefixCache):
            scorer.release()  # the selection items' keys and values: done with them
        fit.release()
        say(f"eval: {len(wanted)} variants + base + prompt on {len(eval_items)} items")
        evaluated, eval_scorer, instr = evaluate_variants(
            fit, eval_items, wanted, progress=progress
        )
        if scorers_out is not None:
            scorers_out.update({"plain": eval_scorer, "prompt": instr})
        if "eval" in patching:
            patch["eval"] = patching_ceiling(fit, eval_items, eval_scorer, instructed=instr)
        timings["eval_s"] = time.perf_counter() - t
    settings = {
        "n_select": len(select_items),
        "n_select_ambig": sum(it.is_ambiguous for it in select_items),
        "n_eval": len(eval_items),
        "n_eval_ambig": sum(it.is_ambiguous for it in eval_items),
        "n_variants": len(variants),
        "extra_spaces": [sp.to_dict() for sp in extra_spaces],
        "skipped_gates": skipped,
        "select_hash": content_hash(select_items),
        "eval_hash": content_hash(eval_items) if eval_items else None,
        "fit_hashes": fit.split_hashes(),
        "n_fit_probe_items": len(fit.probe_items),
        "prompt_format": fit.prompt_format,
        "hook_kind": fit.hook_kind,
        "fitted_layers": fit.layers,
        "model": _model_id(fit.model),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    return SearchResult(
        space,
        rule,
        base,
        tuple(rows),
        chosen,
        family,
        ref_rows,
        evaluated,
        patch,
        diagnostics,
        settings,
    )


def check_scorer(scorer: VariantScorer, items: Sequence[BBQItem]) -> None:
    """Refuse a scorer built on other prompts than ``items`` (silent misalignment otherwise)."""
    uids = tuple(it.uid for it in items)
    if scorer.n != len(uids) or (scorer.uids is not None and scorer.uids != uids):
        raise ConfigError(
            f"the scorer holds {scorer.n} prompts that are not these {len(uids)} items (in order).",
            "build the scorer from exactly these items (pass uids=...).",
        )


def _available_gates(fit: FitData) -> list[str]:
    return [g for g in ("bad", "context", "ambig") if not isinstance(fit.gate_or_reason(g), str)]


def _unique(variants: Sequence[Variant]) -> list[Variant]:
    seen: dict[str, Variant] = {}
    for v in variants:
        seen.setdefault(v.key, v)
    return list(seen.values())


def _variant_of(key: str, rows: Sequence[dict[str, Any]]) -> Variant:
    for r in rows:
        if r["key"] == key:
            return Variant.from_dict({k: r[k] for k in Variant.__dataclass_fields__})
    raise ConfigError(f"no variant {key!r} was scored.")


def evaluate_variants(
    fit: FitData,
    items: Sequence[BBQItem],
    variants: Sequence[Variant],
    *,
    progress: bool = False,
) -> tuple[dict[str, dict[str, Any]], VariantScorer, VariantScorer]:
    """Score base, the prompting baseline and ``variants`` once on ``items`` (the eval split).

    Returns ``({key: result}, plain scorer, instructed scorer)``; each result has the pooled
    metrics, gate rates by context condition, and ``vs_base``: for ambiguous and disambiguated
    items, Wilson intervals, the paired bootstrap interval of the gain and McNemar's p.
    """
    items = list(items)
    scorer = fit.build_scorer(items, desc="eval prefix pass")
    base_row, rows, preds, _ = score_variants(
        fit, items, variants, scorer=scorer, progress=progress
    )
    instructed = fit.build_scorer(
        items, instruction=DEBIAS_INSTRUCTION, keep_cache=False, desc="eval instructed pass"
    )
    base_preds = scorer.base_logits.argmax(-1).numpy()
    prompt_preds = instructed.base_logits.argmax(-1).numpy()
    out = {
        "base": _eval_entry(items, base_preds, base_preds, base_row),
        "prompt": _eval_entry(
            items,
            prompt_preds,
            base_preds,
            {**_row(items, prompt_preds, base_preds), "key": "prompt"},
        ),
    }
    for row in rows:
        out[row["key"]] = _eval_entry(items, preds[row["key"]], base_preds, row)
    return out, scorer, instructed


def _eval_entry(
    items: Sequence[BBQItem], preds: np.ndarray, base_preds: np.ndarray, row: dict[str, Any]
) -> dict[str, Any]:
    gold = np.array([it.label for it in items])
    amb = np.array([it.is_ambiguous for it in items])
    correct, base_correct = preds == gold, base_preds == gold
    return {
        **row,
        "vs_base": {
            "ambig": compare(base_correct[amb], correct[amb]),
            "disambig": compare(base_correct[~amb], correct[~amb]),
        },
        "metrics": bbq_metrics(items, preds).to_dict(),
    }


def gate_diagnostics(fit: FitData) -> dict[str, Any]:
    """Label composition of the BAD classes and the three gates' layer sweeps (or why not)."""
    from fairlens.detect.gates import GATES, label_composition

    sweeps: dict[str, Any] = {}
    for name in GATES:
        result = fit.gate_or_reason(name)
        sweeps[name] = {"unavailable": result} if isinstance(result, str) else result.to_dict()
    return {
        "composition": label_composition(fit.probe_items, fit.predictions),
        "gates": sweeps,
    }


def patching_ceiling(
    fit: FitData,
    items: Sequence[BBQItem],
    scorer: VariantScorer,
    *,
    instructed: VariantScorer | None = None,
) -> dict[str, Any]:
    """Per layer: write the instructed prompt's ``:`` residual into the plain prompt.

    The accuracy reached by patching at layer ``l`` is what any intervention on that single position
    at that layer could reach *by making the model's state there equal the instructed one*; it is a
    reference for how much of the instruction's effect one position at one layer carries.
    """
    items = list(items)
    hooks = [hook_name(fit.hook_kind, v) for v in fit.layers]
    instr: VariantScorer = (
        instructed
        if instructed is not None
        else fit.build_scorer(
            items, instruction=DEBIAS_INSTRUCTION, keep_cache=False, desc="instructed pass"
        )
    )
    check_scorer(scorer, items)
    check_scorer(instr, items)
    missing = [h for h in hooks if h not in scorer.base_acts or h not in instr.base_acts]
    if missing:
        raise ConfigError(f"patching needs the activations at {missing} in both scorers.")
    edits: list[Edit] = [{h: instr.base_acts[h] - scorer.base_acts[h]} for h in hooks]
    logits = scorer.logits(edits)
    base_preds = scorer.base_logits.argmax(-1).numpy()
    per_layer = []
    for layer, lg in zip(fit.layers, logits, strict=True):
        row = _row(items, lg.argmax(-1).numpy(), base_preds)
        per_layer.append({"layer": layer, **row})
    prompt = _row(items, instr.base_logits.argmax(-1).numpy(), base_preds)
    return {
        "n": len(items),
        "base": _row(items, base_preds, base_preds),
        "prompt": prompt,
        "per_layer": per_layer,
    }
