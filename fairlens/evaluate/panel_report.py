"""The panel's report: one frozen PanelReport per run, with its markdown (a table per suite, n and
settings beside every number).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fairlens.steer.interventions import (
    METHOD_DESCRIPTIONS,
)


@dataclass(frozen=True)
class PanelReport:
    """Per suite, per method: the measures (plain dicts, JSON-ready), plus settings and n."""

    results: dict[str, dict[str, dict[str, Any]]]
    n: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "n": self.n,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "methods": {m: METHOD_DESCRIPTIONS[m] for m in self.settings.get("methods", [])},
            "results": self.results,
        }

    def markdown(self) -> str:
        """Every suite as a markdown table (methods as rows)."""
        return _markdown(self)


def _pct(x: float | None, scale: float = 100.0) -> str:
    return "–" if x is None else f"{x * scale:.1f}"


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _markdown(report: PanelReport) -> str:
    res, n = report.results, report.n
    parts: list[str] = []
    methods = report.settings.get("methods", [])
    if "bbq" in res:
        rows = []
        for m in methods:
            r = res["bbq"][m]
            p = r["metrics"]["pooled"]
            iv = r.get("intervals") or {}
            rows.append(
                [
                    m,
                    _acc_cell(p["acc_ambig"], iv.get("ambig")),
                    _gain_cell(iv.get("ambig")),
                    _acc_cell(p["acc_disambig"], iv.get("disambig")),
                    _gain_cell(iv.get("disambig")),
                    _num(p["s_amb"]),
                    _num(p["s_dis"]),
                    _pct(r["gate_rate"]),
                    _pct(r.get("gate_rate_ambig")),
                    _pct(r.get("gate_rate_disambig")),
                ]
            )
        protocol = report.settings.get("bbq_protocol", "fairsteer")
        reading = (
            "lm-eval answer likelihood"
            if protocol == "lm-eval"
            else (
                f"{report.settings.get('scoring')} scoring, "
                f"{'few_shot' if protocol == 'fairsteer-8shot' else report.settings.get('prompt_format')} prompts"
            )
        )
        parts.append(
            f"### BBQ (protocol {protocol}: {reading}; eval split, n={n['bbq']}: "
            f"{n['bbq_ambig']} ambiguous / {n['bbq'] - n['bbq_ambig']} disambiguated)\n\n"
            + _table(
                [
                    "method",
                    "acc_amb % [95% CI]",
                    "Δ amb [CI], p",
                    "acc_dis % [95% CI]",
                    "Δ dis [CI], p",
                    "s_AMB",
                    "s_DIS",
                    "gate %",
                    "gate % amb",
                    "gate % dis",
                ],
                rows,
            )
        )
    if "crows" in res:
        types = sorted(res["crows"][methods[0]]["metrics"]["by_type"])
        rows = []
        for m in methods:
            r = res["crows"][m]
            mm = r["metrics"]
            rows.append(
                [
                    m,
                    _num(mm["pooled"]["stereotype_score"], 1),
                    _gain_cell(r),
                    _num(mm["by_direction"].get("stereo", {}).get("stereotype_score"), 1),
                    _num(mm["by_direction"].get("antistereo", {}).get("stereotype_score"), 1),
                    _pct(r["gate_rate_tokens"]),
                    _pct(r["gate_rate_pairs"]),
                ]
                + [_num(mm["by_type"][t]["stereotype_score"], 1) for t in types]
            )
        parts.append(
            f"### CrowS-Pairs (n={n['crows']} pairs; stereotype score %, ideal 50)\n\n"
            + _table(
                [
                    "method",
                    "all",
                    "Δ all [CI], p",
                    "stereo",
                    "antistereo",
                    "gate %tok",
                    "gate %pairs",
                    *types,
                ],
                rows,
            )
        )
    if "open_ended" in res:
        rows = []
        for m in methods:
            b = res["open_ended"][m].get("bbq")
            c = res["open_ended"][m].get("crows")
            rates = (b or {}).get("answer_rates") or {}
            rows.append(
                [
                    m,
                    _pct(rates.get("unknown")),
                    _pct(rates.get("biased")),
                    _pct(rates.get("anti_biased")),
                    _pct(rates.get("none")),
                    _num((b or {}).get("counterfactual_gap"), 3),
                    _num((c or {}).get("counterfactual_gap"), 3),
                    _pct((b or {}).get("gate_rate_tokens")),
                    _pct((c or {}).get("gate_rate_tokens")),
                ]
            )
        parts.append(
            f"### Open-ended generation (greedy, {report.settings.get('max_new_tokens')} new "
            f"tokens; BBQ ambiguous prompts n={n.get('open_bbq', 0)}, CrowS prefixes "
            f"n={n.get('open_crows', 0)})\n\n"
            + _table(
                [
                    "method",
                    "unknown %",
                    "biased %",
                    "anti-biased %",
                    "none %",
                    "BBQ cf gap",
                    "CrowS cf gap",
                    "BBQ gate %tok",
                    "CrowS gate %tok",
                ],
                rows,
            )
        )
    if "utility" in res:
        utility = {m: _utility_row(res, m) for m in methods}
        corpora = list(utility[methods[0]]["perplexity"])
        rows = []
        for m in methods:
            r = utility[m]
            cells = [m, _pct(r["acc_disambig"])]
            for c in corpora:
                cells += [
                    _num(r["perplexity"][c], 2),
                    _pct(r["gate_rate_texts"].get(c)),
                    _pct(r["gate_rate_tokens"].get(c)),
                ]
            rows.append(cells)
        head = ["method", "BBQ acc_dis %"]
        for c in corpora:
            head += [f"ppl {c}", f"gate %texts {c}", f"gate %tok {c}"]
        sizes = ", ".join(f"{c} n={n.get('text_' + c, 0)}" for c in corpora)
        parts.append(f"### Utility ({sizes})\n\n" + _table(head, rows))
    if "unqover" in res:
        datasets = [d for d in res["unqover"][methods[0]]["metrics"] if d != "pooled"]
        rows = []
        for m in methods:
            r = res["unqover"][m]
            cells = [m] + [_mu_cell(r["metrics"][d]) for d in datasets]
            cells += [_num(r["metrics"]["pooled"].get("mu"), 3), _pct(r.get("gate_rate_tokens"))]
            rows.append(cells)
        per = ", ".join(
            f"{d} {res['unqover'][methods[0]]['metrics'][d]['n_instances']}" for d in datasets
        )
        parts.append(
            f"### UNQOVER (bias intensity mu [95% bootstrap CI over instances], 0 = unbiased; "
            f"Δ = paired change from base; instances x 4 questions: {per})\n\n"
            + _table(["method", *datasets, "mean", "gate %tok"], rows)
        )
    mc = [s for s in _MC_TITLES if s in res]
    if mc:
        head = ["method"]
        for s in mc:
            head += [f"{_MC_TITLES[s]} acc % [95% CI]", "changed % / gate %", "p"]
        rows = []
        for m in methods:
            cells = [m]
            for s in mc:
                r = res[s][m]
                ci = r.get("ci") or [None, None]
                p = (r.get("vs_base") or {}).get("mcnemar", {}).get("p")
                cells += [
                    f"{_pct(r['accuracy'])} [{_pct(ci[0])}, {_pct(ci[1])}]",
                    f"{_pct(r.get('side_effect_rate'))} / {_pct(r.get('gate_rate'))}",
                    "–" if p is None else f"{p:.3g}",
                ]
            rows.append(cells)
        sizes = ", ".join(f"{_MC_TITLES[s]} n={n.get(s, 0)}" for s in mc)
        parts.append(
            f"### Multiple-choice utility (test splits; {sizes}; changed = answers that differ "
            "from base; p = McNemar vs base)\n\n" + _table(head, rows)
        )
    copies = sorted(
        {m for suite in res.values() for m, r in suite.items() if r.get("identical_to")}
    )
    if copies:
        parts.append(
            f"({', '.join(copies)}: on suites that read no answer letters the model is unchanged, "
            "so those rows repeat base's numbers.)"
        )
    return "\n\n".join(parts)


_MC_TITLES = {
    "mmlu": "MMLU 5-shot",
    "arc_easy": "ARC-E",
    "arc_challenge": "ARC-C",
    "openbookqa": "OBQA",
}


def _acc_cell(acc: float | None, iv: dict[str, Any] | None) -> str:
    ci = (iv or {}).get("ci")
    return _pct(acc) + ("" if not ci else f" [{_pct(ci[0])}, {_pct(ci[1])}]")


def _gain_cell(iv: dict[str, Any] | None) -> str:
    vs = (iv or {}).get("vs_base")
    if not vs:
        return "–"
    low, high = vs["gain_ci"]
    p = vs["mcnemar"]["p"]
    return f"{100 * vs['gain']:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}], {p:.2g}"


def _mu_cell(m: dict[str, Any]) -> str:
    ci = m.get("mu_ci")
    cell = _num(m["mu"], 3) + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]")
    if m.get("delta_mu") is not None:
        cell += f" Δ {m['delta_mu']:+.3f}"
    return cell


def _utility_row(res: dict[str, dict[str, dict[str, Any]]], method: str) -> dict[str, Any]:
    """The utility table's row: the utility suite's corpora, plus BBQ disambiguated accuracy and
    the CrowS-Pairs less-stereotyping sentences' perplexity when those suites ran."""
    own = res.get("utility", {}).get(method, {})
    row: dict[str, Any] = {
        "perplexity": dict(own.get("perplexity", {})),
        "gate_rate_texts": dict(own.get("gate_rate_texts", {})),
        "gate_rate_tokens": dict(own.get("gate_rate_tokens", {})),
    }
    less = res.get("crows", {}).get(method, {}).get("sent_less")
    if less is not None:
        row["perplexity"]["crows_sent_less"] = less["perplexity"]
        row["gate_rate_texts"]["crows_sent_less"] = less["gate_rate_texts"]
        row["gate_rate_tokens"]["crows_sent_less"] = less["gate_rate_tokens"]
    bbq = res.get("bbq", {}).get(method)
    row["acc_disambig"] = None if bbq is None else bbq["metrics"]["pooled"]["acc_disambig"]
    return row
