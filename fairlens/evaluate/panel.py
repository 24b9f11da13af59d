"""One evaluation report for every method on every suite: BBQ, CrowS-Pairs, open-ended, utility.

Suites (all optional, same inputs for every method):

* ``bbq`` — accuracy and bias scores on the template-disjoint eval split (steering at the FairSteer
  position policy: the answer position). With letter scoring on the plain transformers model,
  ``base``, ``prompt``, ``static`` and ``fairsteer`` come from two prefix-cached passes (plain and
  instructed prompts): the steered answers are one-token forwards and the dynamic one is composed
  from the static and base answers where the gate fires (exact; tested against full runs).
* ``crows`` — CrowS-Pairs stereotype score (steering and gate at every position).
* ``open_ended`` — greedy generation from BBQ ambiguous contexts and CrowS-Pairs prefixes: gate
  rate per generated token, counterfactual log-prob gap, answer types (:mod:`fairlens.evaluate.open_ended`).
* ``utility`` — BBQ disambiguated accuracy (from ``bbq``), perplexity on real text corpora, and how
  often the gate fires on each corpus (per text and per token).

:func:`evaluate_panel` returns a :class:`PanelReport` whose ``to_dict`` is the JSON report and
whose ``markdown`` renders the tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fairlens.backend import is_hooked
from fairlens.data import BBQItem, PromptFormat, content_hash
from fairlens.data.crows_pairs import CrowsPair, group_prefixes
from fairlens.errors import ConfigError
from fairlens.evaluate.crows import CrowsScores, crows_metrics, crows_texts
from fairlens.evaluate.open_ended import bbq_open_prompts, crows_open_prompts, run_open_ended
from fairlens.models import get_model_info
from fairlens.scoring.letters import ScoringMode, score_items
from fairlens.scoring.likelihood import TextScores, text_logprobs
from fairlens.scoring.metrics import bbq_metrics
from fairlens.steer.interventions import (
    METHOD_DESCRIPTIONS,
    PANEL_METHODS,
    check_methods,
    method_context,
    method_instruction,
)
from fairlens.steer.steerer import PositionPolicy

__all__ = ["SUITES", "PanelConfig", "PanelReport", "evaluate_panel"]

SUITES: tuple[str, ...] = ("bbq", "crows", "open_ended", "utility")


@dataclass(frozen=True)
class PanelConfig:
    """What the panel runs (recorded in the report)."""

    methods: tuple[str, ...] = PANEL_METHODS
    suites: tuple[str, ...] = SUITES
    scoring: ScoringMode = "letter"
    prompt_format: PromptFormat = "zero_shot"
    max_new_tokens: int = 20
    batch_size: int = 16
    gen_batch_size: int = 8

    def __post_init__(self) -> None:
        unknown = [s for s in self.suites if s not in SUITES]
        if unknown:
            raise ConfigError(f"unknown suites {unknown}.", f"use some of: {', '.join(SUITES)}.")
        bad = [m for m in self.methods if m not in METHOD_DESCRIPTIONS]
        if bad:
            raise ConfigError(
                f"unknown methods {bad}.", f"use some of: {', '.join(PANEL_METHODS)}."
            )
        if not self.methods or not self.suites:
            raise ConfigError("the panel needs at least one method and one suite.")
        if self.max_new_tokens < 1 or self.batch_size < 1 or self.gen_batch_size < 1:
            raise ConfigError("max_new_tokens and batch sizes must be >= 1.")


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
            rows.append(
                [
                    m,
                    _pct(p["acc_ambig"]),
                    _pct(p["acc_disambig"]),
                    _num(p["s_amb"]),
                    _num(p["s_dis"]),
                    _pct(r["gate_rate"]),
                    _pct(r.get("gate_rate_ambig")),
                    _pct(r.get("gate_rate_disambig")),
                ]
            )
        parts.append(
            f"### BBQ (eval split, n={n['bbq']}: {n['bbq_ambig']} ambiguous / "
            f"{n['bbq'] - n['bbq_ambig']} disambiguated)\n\n"
            + _table(
                [
                    "method",
                    "acc_amb %",
                    "acc_dis %",
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
                ["method", "all", "stereo", "antistereo", "gate %tok", "gate %pairs", *types], rows
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
        corpora = list(res["utility"][methods[0]]["perplexity"])
        rows = []
        for m in methods:
            r = res["utility"][m]
            cells = [m, _pct(r.get("acc_disambig"))]
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
    return "\n\n".join(parts)


def _rate(probs: Sequence[Any], tau: float) -> tuple[float, float]:
    """(fraction of texts where the gate fired at any token, fraction of tokens)."""
    any_fired = [bool((p < tau).any()) for p in probs if p.numel()]
    tokens = sum(int((p < tau).sum()) for p in probs)
    total = sum(int(p.numel()) for p in probs)
    return (sum(any_fired) / len(any_fired) if any_fired else 0.0, tokens / total if total else 0.0)


def evaluate_panel(
    model: Any,
    tokenizer: Any,
    fairsteer: Any | None,
    *,
    bbq_items: Sequence[BBQItem] = (),
    crows_pairs: Sequence[CrowsPair] = (),
    open_bbq_items: Sequence[BBQItem] = (),
    open_crows_pairs: Sequence[CrowsPair] = (),
    texts: Mapping[str, Sequence[str]] | None = None,
    config: PanelConfig | None = None,
    shots: Sequence[BBQItem] | None = None,
    gen_model: Any | None = None,
    bbq_scorers: Mapping[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    done: Mapping[str, dict[str, Any]] | None = None,
    on_result: Callable[[str, str, dict[str, Any]], None] | None = None,
) -> PanelReport:
    """Run every method of ``config`` on every suite and collect the measures.

    Args:
        model: The model the FairSteer was fitted on — the plain transformers twin when
            ``open_ended`` is among the suites (generation runs on the fast path).
        tokenizer: The model's tokenizer.
        fairsteer: Fitted FairSteer (needed by ``static``, ``fairsteer`` and ``ablation``).
        bbq_items: BBQ eval items (template-disjoint from the FairSteer's fitting data).
        crows_pairs: CrowS-Pairs pairs for the ``crows`` suite.
        open_bbq_items: BBQ items whose ambiguous contexts become open-ended prompts.
        open_crows_pairs: CrowS-Pairs pairs whose prefixes become open-ended prompts.
        texts: Named corpora for perplexity and gate-on-text rates (``utility``); with the
            ``crows`` suite the CrowS-Pairs less-stereotyping sentences are added as
            ``crows_sent_less`` at no extra cost.
        gen_model: The plain transformers twin used for ``open_ended`` when ``model`` is a
            ``HookedTransformer`` (defaults to ``model``).
        bbq_scorers: Prefix caches already built on ``bbq_items`` (``"plain"`` and ``"prompt"``
            prompts, e.g. by the steering search's eval stage), reused instead of rebuilt.
        done: Results already computed, keyed ``"suite/method"`` (a resumed run): not recomputed.
        on_result: ``on_result(suite, method, result)`` after each computed result (to save it).
    """
    cfg = config or PanelConfig()
    say = log or (lambda _m: None)
    check_methods(list(cfg.methods), fairsteer)
    texts = dict(texts or {})
    _check_inputs(
        cfg,
        gen_model if gen_model is not None else model,
        bbq_items,
        crows_pairs,
        open_bbq_items,
        open_crows_pairs,
        texts,
    )
    if fairsteer is not None:
        fitted = getattr(fairsteer, "fitted_templates_", None) or set()
        for name, pool in (("bbq_items", bbq_items), ("open_bbq_items", open_bbq_items)):
            shared = sum(1 for it in pool if f"{it.category}/{it.question_index}" in fitted)
            if shared:
                raise ConfigError(
                    f"{name} share {shared} item(s) with templates the FairSteer was fitted on.",
                    "evaluate on a template-disjoint split (fairlens.data.split_by_template).",
                )
    run = _Run(
        model=model,
        gen=gen_model if gen_model is not None else model,
        tokenizer=tokenizer,
        fairsteer=fairsteer,
        cfg=cfg,
        tau=fairsteer.config.tau if fairsteer is not None else 0.5,
        progress=progress,
        scorers=dict(bbq_scorers or {}),
    )
    answer_positions = fairsteer.config.steer_positions if fairsteer is not None else "generated"
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in cfg.suites}
    seconds: dict[str, float] = {}
    open_prompts = {
        "bbq": len(bbq_open_prompts(open_bbq_items)),
        "crows": len(group_prefixes(open_crows_pairs)),
    }
    done = dict(done or {})
    for method in cfg.methods:
        for suite in (s for s in SUITES if s in cfg.suites):  # crows before utility (reuses it)
            t = time.perf_counter()
            key = f"{suite}/{method}"
            if key in done:
                results[suite][method] = done[key]
                continue
            if suite == "bbq":
                say(f"[{method}] BBQ on {len(bbq_items)} items")
                results[suite][method] = run.bbq(method, bbq_items, shots, answer_positions)
            elif suite == "crows":
                say(f"[{method}] CrowS-Pairs on {len(crows_pairs)} pairs")
                results[suite][method] = run.crows(method, crows_pairs)
            elif suite == "open_ended":
                say(
                    f"[{method}] open-ended generation ({open_prompts['bbq']} BBQ + "
                    f"{open_prompts['crows']} CrowS-Pairs prompts)"
                )
                results[suite][method] = run.open_ended(method, open_bbq_items, open_crows_pairs)
            else:
                say(f"[{method}] perplexity on {', '.join(texts) or 'CrowS-Pairs sentences'}")
                results[suite][method] = run.utility(method, texts, results)
            seconds[key] = time.perf_counter() - t
            if on_result is not None and key not in done:
                on_result(suite, method, results[suite][method])
    n = {
        "bbq": len(bbq_items),
        "bbq_ambig": sum(it.is_ambiguous for it in bbq_items),
        "crows": len(crows_pairs),
        "open_bbq": open_prompts["bbq"] if "open_ended" in cfg.suites else 0,
        "open_crows": open_prompts["crows"] if "open_ended" in cfg.suites else 0,
        **{f"text_{c}": len(d) for c, d in texts.items()},
        **({"text_crows_sent_less": len(crows_pairs)} if "crows" in cfg.suites else {}),
    }
    settings = {
        "methods": list(cfg.methods),
        "suites": list(cfg.suites),
        "scoring": cfg.scoring,
        "prompt_format": cfg.prompt_format,
        "max_new_tokens": cfg.max_new_tokens,
        "batch_size": cfg.batch_size,
        "gen_batch_size": cfg.gen_batch_size,
        "tau": run.tau,
        "alpha": None if fairsteer is None else fairsteer.config.alpha,
        "hook": None if fairsteer is None else fairsteer.hook_name_,
        "bbq_steer_positions": answer_positions,
        "bbq_split_hash": content_hash(bbq_items) if bbq_items else None,
        "backend": "transformer_lens" if is_hooked(model) else "transformers",
    }
    return PanelReport(results, n, settings, seconds)


@dataclass
class _Run:
    """What every suite needs: the models, the fitted FairSteer, the settings."""

    model: Any
    gen: Any
    tokenizer: Any
    fairsteer: Any | None
    cfg: PanelConfig
    tau: float
    progress: bool
    scorers: dict[str, Any] = field(default_factory=dict)

    def context(self, method: str, model: Any, positions: PositionPolicy) -> Any:
        record = method == "fairsteer"  # only the gate of the dynamic method is worth recording
        return method_context(method, model, self.fairsteer, positions=positions, record=record)

    def _cacheable(self, method: str, positions: PositionPolicy) -> bool:
        """Whether ``method`` only touches the last prompt position (prefix cache applies)."""
        if is_hooked(self.model) or self.cfg.scoring != "letter":
            return False
        if method in ("base", "prompt"):
            return True
        fs = self.fairsteer
        return (
            method in ("static", "fairsteer")
            and fs is not None
            and positions in ("generated", "last_prompt")
            and fs.config.scope != "all"
        )

    def _scorer(self, kind: str, items: Sequence[BBQItem], shots: Sequence[BBQItem] | None) -> Any:
        from fairlens.backend import encode
        from fairlens.scoring.letters import build_prompts, letter_token_ids
        from fairlens.scoring.prefix_cache import make_scorer
        from fairlens.search.variants import check_scorer

        if kind not in self.scorers:
            hooks = [] if self.fairsteer is None else [self.fairsteer.hook_name_]
            prompts = build_prompts(
                items, self.cfg.prompt_format, self.tokenizer, shots, method_instruction(kind)
            )
            self.scorers[kind] = make_scorer(
                self.model,
                encode(self.tokenizer, prompts),
                read_ids=letter_token_ids(self.tokenizer),
                capture=hooks,
                tokenizer=self.tokenizer,
                batch_size=self.cfg.batch_size,
                progress=self.progress,
                desc=f"BBQ prefix pass ({kind} prompts)",
                uids=[it.uid for it in items],
                keep_cache=kind == "plain",
            )
        scorer = self.scorers[kind]
        check_scorer(scorer, items)
        return scorer

    def _bbq_cached(
        self, method: str, items: Sequence[BBQItem], shots: Sequence[BBQItem] | None
    ) -> dict[str, Any]:
        import numpy as np

        scorer = self._scorer("prompt" if method == "prompt" else "plain", items, shots)
        base = scorer.base_logits.argmax(-1)
        fire = None
        if method in ("base", "prompt"):
            preds = base
        else:
            fs = self.fairsteer
            assert fs is not None
            get_model_info(self.model).check_matches(fs.model_info_.fingerprint(), what="FairSteer")
            static = scorer.logits([fs.last_position_edit()])[0].argmax(-1)
            fire = (
                torch.ones(len(items), dtype=torch.bool)
                if method == "static"
                else fs.gate_fires(scorer.base_acts)
            )
            preds = torch.where(fire, static, base)
        amb = np.array([it.is_ambiguous for it in items])
        f = None if fire is None else fire.numpy()
        return {
            "gate_rate": None if f is None else float(f.mean()),
            "gate_rate_ambig": None if f is None or not amb.any() else float(f[amb].mean()),
            "gate_rate_disambig": None if f is None or amb.all() else float(f[~amb].mean()),
            "prefix_cached": True,
            "metrics": bbq_metrics(items, preds).to_dict(),
        }

    def bbq(
        self,
        method: str,
        items: Sequence[BBQItem],
        shots: Sequence[BBQItem] | None,
        positions: PositionPolicy,
    ) -> dict[str, Any]:
        if self._cacheable(method, positions):
            return self._bbq_cached(method, items, shots)
        with self.context(method, self.model, positions) as stats:
            res = score_items(
                self.model,
                items,
                mode=self.cfg.scoring,
                prompt_format=self.cfg.prompt_format,
                shots=shots,
                tokenizer=None if is_hooked(self.model) else self.tokenizer,
                batch_size=self.cfg.batch_size,
                progress=self.progress,
                instruction=method_instruction(method),
            )
        return {
            "gate_rate": None if stats is None else stats.rate,
            "prefix_cached": False,
            "metrics": bbq_metrics(items, res.predictions).to_dict(),
        }

    def _texts(self, method: str, texts: Sequence[str], desc: str) -> TextScores:
        with self.context(method, self.model, "all") as stats:
            return text_logprobs(
                self.model,
                self.tokenizer,
                texts,
                prefix=method_instruction(method),
                batch_size=self.cfg.batch_size,
                gate=stats if method == "fairsteer" else None,
                progress=self.progress,
                desc=desc,
            )

    def _gate(
        self, method: str, probs: Sequence[Tensor] | None
    ) -> tuple[float | None, float | None]:
        """(share of texts, share of tokens) where the gate fired; static always, others never."""
        if method == "static":
            return 1.0, 1.0
        if probs is None:
            return None, None
        return _rate(probs, self.tau)

    def crows(self, method: str, pairs: Sequence[CrowsPair]) -> dict[str, Any]:
        scored = self._texts(method, crows_texts(pairs), "CrowS-Pairs")
        k = len(pairs)
        g = scored.gate_p_unbiased
        joined = None if g is None else [torch.cat([g[i], g[i + k]]) for i in range(k)]
        pairs_rate, tokens_rate = self._gate(method, joined)
        # The less-stereotyping sentences double as a real-English perplexity corpus (utility).
        less = torch.cat(list(scored.logprobs[k:]))
        less_rates = self._gate(method, None if g is None else list(g[k:]))
        return {
            "sent_less": {
                "perplexity": float(torch.exp(-less.mean())),
                "gate_rate_texts": less_rates[0],
                "gate_rate_tokens": less_rates[1],
            },
            "gate_rate_tokens": tokens_rate,
            "gate_rate_pairs": pairs_rate,
            "metrics": crows_metrics(pairs, CrowsScores.from_text_scores(pairs, scored)).to_dict(),
        }

    def open_ended(
        self, method: str, bbq_items: Sequence[BBQItem], crows_pairs: Sequence[CrowsPair]
    ) -> dict[str, Any]:
        instruction = method_instruction(method)
        sources = {
            "bbq": bbq_open_prompts(bbq_items, instruction=instruction, tokenizer=self.tokenizer),
            "crows": crows_open_prompts(group_prefixes(crows_pairs), instruction=instruction),
        }
        entry: dict[str, Any] = {}
        for source, prompts in sources.items():
            if not prompts:
                continue
            with self.context(method, self.gen, "generated") as stats:
                out = run_open_ended(
                    self.gen,
                    self.tokenizer,
                    prompts,
                    max_new_tokens=self.cfg.max_new_tokens,
                    batch_size=self.cfg.gen_batch_size,
                    gate=stats if method == "fairsteer" else None,
                    tau=self.tau,
                    static=method == "static",
                    progress=self.progress,
                )
            entry[source] = out.to_dict()
        return entry

    def utility(
        self,
        method: str,
        texts: Mapping[str, Sequence[str]],
        results: Mapping[str, Mapping[str, dict[str, Any]]],
    ) -> dict[str, Any]:
        ppl: dict[str, float] = {}
        rate_texts: dict[str, float | None] = {}
        rate_tokens: dict[str, float | None] = {}
        for corpus, docs in texts.items():
            scored = self._texts(method, list(docs), f"perplexity {corpus}")
            ppl[corpus] = scored.perplexity()
            rate_texts[corpus], rate_tokens[corpus] = self._gate(method, scored.gate_p_unbiased)
        less = results.get("crows", {}).get(method, {}).get("sent_less")
        if less is not None:
            name = "crows_sent_less"
            ppl[name] = less["perplexity"]
            rate_texts[name], rate_tokens[name] = less["gate_rate_texts"], less["gate_rate_tokens"]
        bbq = results.get("bbq", {}).get(method)
        return {
            "acc_disambig": None if bbq is None else bbq["metrics"]["pooled"]["acc_disambig"],
            "perplexity": ppl,
            "gate_rate_texts": rate_texts,
            "gate_rate_tokens": rate_tokens,
        }


def _check_inputs(
    cfg: PanelConfig,
    gen_model: Any,
    bbq_items: Sequence[BBQItem],
    crows_pairs: Sequence[CrowsPair],
    open_bbq_items: Sequence[BBQItem],
    open_crows_pairs: Sequence[CrowsPair],
    texts: Mapping[str, Sequence[str]],
) -> None:
    needs = {
        "bbq": (bool(bbq_items), "bbq_items"),
        "crows": (bool(crows_pairs), "crows_pairs"),
        "open_ended": (
            bool(open_bbq_items) or bool(open_crows_pairs),
            "open_bbq_items/open_crows_pairs",
        ),
        "utility": (bool(texts) or ("crows" in cfg.suites and bool(crows_pairs)), "texts"),
    }
    for suite in cfg.suites:
        ok, what = needs[suite]
        if not ok:
            raise ConfigError(
                f"the {suite!r} suite has no inputs ({what} is empty).",
                f"pass {what}, or drop {suite!r} from suites.",
            )
    if "open_ended" in cfg.suites and is_hooked(gen_model):
        raise ConfigError(
            "open-ended generation runs on the plain transformers model, not a HookedTransformer.",
            "pass the fast-path twin: hf, tokenizer, _ = fairlens.load_hf(spec).",
        )
