"""Markdown of a :class:`~fairlens.search.engine.SearchResult`: the protocol, the choice, the eval table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["search_markdown"]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _ci(c: Mapping[str, Any], key: str) -> str:
    lo, hi = c[f"{key}_ci"]
    return f"{100 * c[key]:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _gain(c: Mapping[str, Any]) -> str:
    lo, hi = c["gain_ci"]
    return f"{100 * c['gain']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _p(c: Mapping[str, Any]) -> str:
    p = c["mcnemar"]["p"]
    return "1" if p >= 0.9995 else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _label(key: str, names: Mapping[str, str]) -> str:
    return names.get(key, key)


def search_markdown(result: Any) -> str:
    """The protocol, the selection-split grid summary and the eval table with intervals."""
    s = result.settings
    space = result.space
    parts = [
        "### Protocol",
        "",
        f"- model {s.get('model')}; fit split: {s['n_fit_probe_items']} probe items "
        f"(hashes {s['fit_hashes']}); selection split n={s['n_select']} "
        f"({s['n_select_ambig']} ambiguous / {s['n_select'] - s['n_select_ambig']} disambiguated); "
        f"eval split n={s['n_eval']} ({s['n_eval_ambig']} ambiguous / {s['n_eval'] - s['n_eval_ambig']} "
        "disambiguated); all three disjoint by BBQ template",
        f"- grid: directions {', '.join(space.directions)}; layers "
        f"{'all fitted' if space.layers is None else list(space.layers)}; alpha {list(space.alphas)} "
        f"({space.alpha_unit}); scopes {', '.join(space.scopes)}"
        + (f" (band width {space.band_width})" if "band" in space.scopes else "")
        + f"; modes {', '.join(space.modes)}; gates {', '.join(space.gates)}; tau {list(space.taus)}; "
        f"{s['n_variants']} variants",
        f"- selection rule (declared before scoring): {result.rule.describe()}",
        *(
            [f"- gates left out (too few labels on the fit split): {s['skipped_gates']}"]
            if s.get("skipped_gates")
            else []
        ),
        f"- letter scoring, {s['prompt_format']} prompts, hook {s['hook_kind']}; timings {s['timings_s']}",
        "",
    ]
    names = {result.chosen: f"**chosen**: {result.chosen}"}
    for name, ref in result.references.items():
        names.setdefault(ref["row"]["key"], f"{name}: {ref['row']['key']}")
    for direction, modes in result.family_best.items():
        for mode, key in modes.items():
            if key:
                names.setdefault(key, f"best {mode} {direction}: {key}")
    # selection table
    rows = []
    sel = [("base", result.base)]
    seen = {"base"}
    for key in names:
        if key not in seen:
            sel.append((key, result.row(key)))
            seen.add(key)
    for key, r in sel:
        rows.append([
            _label(key, names), _pct(r["acc_ambig"]), _pct(r["acc_disambig"]),
            "–" if key == "base" else f"{r['strength']:.2f}",
            _pct(r.get("gate_rate_ambig")), _pct(r.get("gate_rate_disambig")),
        ])  # fmt: skip
    parts += [
        f"### Selection split (n={s['n_select']})",
        "",
        _table(["variant", "acc_amb %", "acc_dis %", "‖αv‖/‖h‖", "gate % amb", "gate % dis"], rows),
        "",
    ]
    if result.eval:
        rows = []
        for key, e in result.eval.items():
            va, vd = e["vs_base"]["ambig"], e["vs_base"]["disambig"]
            rows.append([
                _label(key, names), _ci(va, "method"), _gain(va), _p(va), _ci(vd, "method"), _gain(vd),
                _p(vd), f"{e['s_amb']:.2f}" if e.get("s_amb") is not None else "–",
                _pct(e.get("gate_rate_ambig")), _pct(e.get("gate_rate_disambig")),
            ])  # fmt: skip
        parts += [
            f"### Eval split (n={s['n_eval']}; scored once; 95 % Wilson intervals, paired bootstrap "
            "intervals of the gain over base, exact McNemar p)",
            "",
            _table(
                [
                    "method",
                    "acc_amb %",
                    "Δ amb",
                    "p",
                    "acc_dis %",
                    "Δ dis",
                    "p",
                    "s_AMB",
                    "gate % amb",
                    "gate % dis",
                ],
                rows,
            ),
            "",
        ]
    for split, patch in result.patching.items():
        best = max(patch["per_layer"], key=lambda p: p["acc_ambig"])
        parts += [
            f"### Instruction patching at ':' ({split} split, n={patch['n']})",
            "",
            f"base {_pct(patch['base']['acc_ambig'])} / {_pct(patch['base']['acc_disambig'])} "
            f"(amb / dis %), prompt {_pct(patch['prompt']['acc_ambig'])} / "
            f"{_pct(patch['prompt']['acc_disambig'])}; the best single layer (by ambiguous accuracy) "
            f"is {best['layer']}: {_pct(best['acc_ambig'])} / {_pct(best['acc_disambig'])}.",
            "",
            _table(
                ["layer", *(str(p["layer"]) for p in patch["per_layer"])],
                [
                    ["acc_amb %", *(_pct(p["acc_ambig"]) for p in patch["per_layer"])],
                    ["acc_dis %", *(_pct(p["acc_disambig"]) for p in patch["per_layer"])],
                ],
            ),
            "",
        ]
    diag = result.diagnostics
    if diag:
        comp = diag["composition"]["pooled"]
        parts += [
            "### Gate diagnostics (fit split)",
            "",
            f"BAD labels: {comp['unbiased']['n']} unbiased ({_pct(comp['unbiased']['share_ambig'])} % "
            f"ambiguous items), {comp['biased']['n']} biased ({_pct(comp['biased']['share_ambig'])} % "
            f"ambiguous); ambiguous share of all fit items "
            f"{_pct(diag['composition']['share_ambig_all_items'])} %.",
            "",
        ]
        rows = []
        for gate, sweep in diag["gates"].items():
            if "unavailable" in sweep:
                rows.append([gate, "–", "–", sweep["unavailable"]])
                continue
            best = max(sweep["scores"], key=lambda x: x["accuracy"])
            rows.append([
                gate, str(sweep["n"]), f"{100 * best['accuracy']:.1f} (layer {best['layer']})",
                f"mean over layers {100 * sum(x['accuracy'] for x in sweep['scores']) / len(sweep['scores']):.1f}",
            ])  # fmt: skip
        parts.append(_table(["gate", "n labels", "best val acc %", "note"], rows))
    return "\n".join(parts)
