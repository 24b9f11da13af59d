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

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fairlens.data import BBQItem, content_hash
from fairlens.errors import ConfigError
from fairlens.scoring.prefix_cache import PrefixCache
from fairlens.search.diagnostics import (
    evaluate_variants,
    gate_diagnostics,
    patching_ceiling,
)
from fairlens.search.space import (
    MODES,
    SearchSpace,
    SelectionRule,
    Variant,
    expand,
)
from fairlens.search.variants import (
    _EditStore,
    score_variants,
)
from fairlens.steer.fit_data import FitData
from fairlens.steer.fit_settings import check_disjoint, model_id

__all__ = ["SearchResult", "reference_variants", "run_search"]


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
        raise ConfigError(
            f"no variant {key!r} in this search.",
            "pass the key of one of this result's rows or references.",
        )

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
    log: Callable[[str], None] | None = None,
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
            "model": model_id(fit.model),
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
        raise ConfigError(
            f"patching splits must be 'select' and/or 'eval'; got {bad_splits}.",
            "pass patching=('select', 'eval'), a subset of it, or () to skip it.",
        )
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
        "model": model_id(fit.model),
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
    raise RuntimeError(f"no variant {key!r} was scored (a bug: keys come from the scored rows).")
