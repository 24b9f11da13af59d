"""One evaluation report for every method on every suite (:data:`fairlens.evaluate.suites.SUITES`).

Suites (all optional, same inputs for every method, independent of each other and of their order):

* ``bbq`` — accuracy and bias scores on the template-disjoint eval split
  (:mod:`fairlens.evaluate.suite_bbq`);
* ``crows`` — CrowS-Pairs stereotype score, steering and gate at every position;
* ``open_ended`` — greedy generation from BBQ ambiguous contexts and CrowS-Pairs prefixes
  (:mod:`fairlens.evaluate.suite_generation`);
* ``utility`` — perplexity on real text corpora and how often the gate fires there; the report
  puts it beside BBQ disambiguated accuracy and the CrowS-Pairs sentences' perplexity when those
  suites ran (:mod:`fairlens.evaluate.suite_text`).

:func:`evaluate_panel` returns a :class:`PanelReport` whose ``to_dict`` is the JSON report and
whose ``markdown`` renders the tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields
from typing import Any

from fairlens.backend import is_hooked
from fairlens.data import BBQItem, content_hash
from fairlens.data.crows_pairs import CrowsPair
from fairlens.data.mcqa import MCItem
from fairlens.data.unqover import UnqoverInstance
from fairlens.detect.condition_gate import ConditionGate
from fairlens.errors import ConfigError
from fairlens.evaluate.context import PanelContext, PanelInputs, PanelSettings, Suite
from fairlens.evaluate.panel_report import PanelReport
from fairlens.evaluate.suites import SUITES, PanelConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.model_types import Model, Tokenizer
from fairlens.steer.conditioned import ConditionedSteering
from fairlens.steer.fit_settings import check_disjoint
from fairlens.steer.interventions import METHODS, check_methods

__all__ = ["SUITES", "PanelConfig", "PanelReport", "evaluate_panel"]


def evaluate_panel(
    model: Model,
    tokenizer: Tokenizer,
    fairsteer: FairSteer | None,
    *,
    bbq_items: Sequence[BBQItem] = (),
    crows_pairs: Sequence[CrowsPair] = (),
    open_bbq_items: Sequence[BBQItem] = (),
    open_crows_pairs: Sequence[CrowsPair] = (),
    texts: Mapping[str, Sequence[str]] | None = None,
    mc: Mapping[str, Sequence[MCItem]] | None = None,
    mc_shots: Sequence[MCItem] = (),
    unqover: Sequence[UnqoverInstance] = (),
    bbq_calibration: Sequence[BBQItem] = (),
    mc_calibration: Mapping[str, Sequence[MCItem]] | None = None,
    condition_gate: ConditionGate | None = None,
    config: PanelConfig | None = None,
    shots: Sequence[BBQItem] | None = None,
    gen_model: Model | None = None,
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
        texts: Named corpora for perplexity and gate-on-text rates (``utility``).
        mc: Questions of each multiple-choice suite (``mmlu``, ``arc_easy``, ``arc_challenge``,
            ``openbookqa``; see :func:`fairlens.evaluate.suite_mcqa.load_mc_inputs`).
        mc_shots: MMLU's solved dev examples (5 per subject) for the 5-shot prompts.
        unqover: UNQOVER instances (:func:`fairlens.data.unqover.generate_unqover`).
        bbq_calibration: BBQ items the ``calibrated`` method's letter prior is fitted on (the
            selection split; template-disjoint from ``bbq_items``, refused otherwise).
        mc_calibration: Per multiple-choice suite, the questions its letter prior is fitted on
            (dev / validation splits; :func:`fairlens.evaluate.suite_mcqa.load_mc_calibration`).
        condition_gate: The fitted CAST-style gate of the ``cast`` method
            (:meth:`fairlens.steer.fit_data.FitData.condition_gate`).
        gen_model: The plain transformers twin used for ``open_ended`` when ``model`` is a
            ``HookedTransformer`` (defaults to ``model``).
        bbq_scorers: Prefix caches already built on ``bbq_items`` (``"plain"`` and ``"prompt"``
            prompts, e.g. by the steering search's eval stage), reused instead of rebuilt.
        done: Results already computed, keyed ``"suite/method"`` (a resumed run): not recomputed.
        on_result: ``on_result(suite, method, result)`` after each computed result (to save it).
    """
    cfg = config or PanelConfig()
    say = log or (lambda _m: None)
    check_methods(list(cfg.methods), fairsteer, condition_gate)
    gen = gen_model if gen_model is not None else model
    inputs = PanelInputs(
        tuple(bbq_items),
        tuple(crows_pairs),
        tuple(open_bbq_items),
        tuple(open_crows_pairs),
        dict(texts or {}),
        tuple(shots) if shots else None,
        dict(mc or {}),
        tuple(mc_shots),
        tuple(unqover),
        tuple(bbq_calibration),
        dict(mc_calibration or {}),
    )
    for name in cfg.suites:
        _check_suite(name, inputs, gen)
    if fairsteer is not None:
        _check_disjoint_from_fit(fairsteer, inputs)
    settings = PanelSettings(**{f.name: getattr(cfg, f.name) for f in fields(PanelSettings)})
    ctx = PanelContext(
        model=model,
        gen=gen,
        tokenizer=tokenizer,
        fairsteer=fairsteer,
        settings=settings,
        progress=progress,
        scorers=dict(bbq_scorers or {}),
        condition_gate=condition_gate,
    )
    if any(METHODS[m].letter_prior for m in cfg.methods):
        _check_calibration(ctx, cfg.suites, inputs)
    results: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in cfg.suites}
    seconds: dict[str, float] = {}
    done = dict(done or {})
    for method in cfg.methods:
        for name in cfg.suites:
            key = f"{name}/{method}"
            if key in done:
                results[name][method] = done[key]
                continue
            suite = SUITES[name]
            t = time.perf_counter()
            if METHODS[method].letter_prior and not _reads_letters(suite, ctx):
                base = results[name].get("base") or done.get(f"{name}/base")
                if base is None:
                    say(f"[base, for {method}] {suite.announce(inputs)}")
                    base = suite.run(ctx, "base", inputs)
                results[name][method] = {**base, "identical_to": "base", "note": _SAME_AS_BASE}
            else:
                say(f"[{method}] {suite.announce(inputs)}")
                results[name][method] = suite.run(ctx, method, inputs)
            seconds[key] = time.perf_counter() - t
            if on_result is not None:
                on_result(name, method, results[name][method])
    n: dict[str, int] = {}
    for name in cfg.suites:
        n.update(SUITES[name].sizes(inputs))
    report_settings = {
        "methods": list(cfg.methods),
        "suites": list(cfg.suites),
        "scoring": cfg.scoring,
        "prompt_format": cfg.prompt_format,
        "bbq_protocol": cfg.bbq_protocol,
        "max_new_tokens": cfg.max_new_tokens,
        "batch_size": cfg.batch_size,
        "gen_batch_size": cfg.gen_batch_size,
        "tau": None if fairsteer is None else fairsteer.config.tau,
        "alpha": None if fairsteer is None else fairsteer.alpha_,  # the fitted strength
        "alpha_unit": None if fairsteer is None else fairsteer.config.alpha_unit,
        "hook": None if fairsteer is None else fairsteer.hook_name_,
        "bbq_steer_positions": (
            fairsteer.config.steer_positions if fairsteer is not None else "generated"
        ),
        "bbq_split_hash": content_hash(bbq_items) if bbq_items else None,
        "calibration_n": {
            "bbq": len(inputs.bbq_calibration),
            **{k: len(v) for k, v in inputs.mc_calibration.items()},
        },
        "condition_gate": (
            ConditionedSteering(fairsteer, condition_gate).summary()
            if fairsteer is not None and condition_gate is not None
            else None
        ),
        "backend": "transformer_lens" if is_hooked(model) else "transformers",
    }
    return PanelReport(results, n, report_settings, seconds)


_SAME_AS_BASE = (
    "letter-prior calibration changes only answers read as letters; this suite reads none "
    "(under this protocol), so the model and the numbers are base's"
)


def _reads_letters(suite: Suite, ctx: PanelContext) -> bool:
    return suite.reads_letters is not None and bool(suite.reads_letters(ctx))


def _check_calibration(ctx: PanelContext, suites: Sequence[str], inputs: PanelInputs) -> None:
    """The calibration inputs the ``calibrated`` method needs, disjoint from the scored items."""
    for name in suites:
        suite = SUITES[name]
        if not _reads_letters(suite, ctx):
            continue
        what = suite.calibration_missing(inputs)
        if what is not None:
            raise ConfigError(
                f"the 'calibrated' method has no calibration items for the {name!r} suite "
                f"({what} is empty).",
                f"pass {what} (a split disjoint from the scored one), or drop 'calibrated'.",
            )
    check_disjoint({"bbq_items": inputs.bbq_items, "bbq_calibration": inputs.bbq_calibration})
    for name, calib in inputs.mc_calibration.items():
        scored = {it.uid for it in inputs.mc.get(name, ())}
        overlap = sum(1 for it in calib if it.uid in scored)
        if overlap:
            raise ConfigError(
                f"mc_calibration[{name!r}] shares {overlap} question(s) with the scored ones.",
                "fit the letter prior on the dev / validation split.",
            )


def _check_suite(name: str, inputs: PanelInputs, gen: Any) -> None:
    suite = SUITES[name]
    what = suite.missing(inputs)
    if what is not None:
        raise ConfigError(
            f"the {name!r} suite has no inputs ({what} is empty).",
            f"pass {what}, or drop {name!r} from suites.",
        )
    if suite.fast_path_only and is_hooked(gen):
        raise ConfigError(
            "open-ended generation runs on the plain transformers model, not a HookedTransformer.",
            "pass the fast-path twin: hf, tokenizer, _ = fairlens.load_hf(spec).",
        )


def _check_disjoint_from_fit(fairsteer: FairSteer, inputs: PanelInputs) -> None:
    fitted = getattr(fairsteer, "fitted_templates_", None) or set()
    for name, pool in (("bbq_items", inputs.bbq_items), ("open_bbq_items", inputs.open_bbq_items)):
        shared = sum(1 for it in pool if f"{it.category}/{it.question_index}" in fitted)
        if shared:
            raise ConfigError(
                f"{name} share {shared} item(s) with templates the FairSteer was fitted on.",
                "evaluate on a template-disjoint split (fairlens.data.split_by_template).",
            )
