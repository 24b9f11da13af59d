"""Scoring steering variants exactly on the prefix cache: each variant's vectors and strength, the
gate's decisions on the unsteered activations, and BBQ metrics of the resulting answers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from fairlens.backend import hook_name
from fairlens.data import BBQItem
from fairlens.distributed import launched, on_main
from fairlens.errors import ConfigError
from fairlens.runtime import write_atomic
from fairlens.scoring.metrics import bbq_metrics
from fairlens.scoring.variant_scorer import Edit, VariantScorer
from fairlens.search.space import (
    Variant,
)
from fairlens.steer.fit_data import FitData


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
            f"the scorer did not capture {missing}.",
            "pass scorer=None, or build it with capture= those hooks (fit.scorer_for(items) does).",
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


class _EditStore:
    """Per-edit predictions appended to ``edits.jsonl`` beside a ``meta.json`` that must match."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.path = folder / "edits.jsonl"
        self._cache: dict[str, np.ndarray] | None = None
        on_main(lambda: self._open(meta))  # one process reads and writes the store

    def _open(self, meta: dict[str, Any]) -> None:
        folder = self.folder
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
            write_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True))

    def load(self) -> dict[str, np.ndarray]:
        if self._cache is None:
            self._cache = on_main(self._read)
        return self._cache

    def _read(self) -> dict[str, np.ndarray]:
        cache: dict[str, np.ndarray] = {}
        if not self.path.exists():
            return cache
        good: list[str] = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
                cache[rec["key"]] = np.asarray(rec["pred"], dtype=np.int64)
                good.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                break  # a line cut by an interruption: drop it and what follows
        write_atomic(self.path, "".join(g + "\n" for g in good))
        return cache

    def append(self, key: str, preds: np.ndarray) -> None:
        """Record one edit's predictions (in memory on every process; on disk by the main one)."""
        self.load()
        assert self._cache is not None
        self._cache[key] = preds
        if launched().is_main:
            with self.path.open("a") as fh:
                fh.write(json.dumps({"key": key, "pred": preds.tolist()}) + "\n")
                fh.flush()


def check_scorer(scorer: VariantScorer, items: Sequence[BBQItem]) -> None:
    """Refuse a scorer built on other prompts than ``items`` (silent misalignment otherwise)."""
    uids = tuple(it.uid for it in items)
    if scorer.n != len(uids) or (scorer.uids is not None and scorer.uids != uids):
        raise ConfigError(
            f"the scorer holds {scorer.n} prompts that are not these {len(uids)} items (in order).",
            "build the scorer from exactly these items (pass uids=...).",
        )
