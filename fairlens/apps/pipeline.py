"""``fairlens run``: the whole FairSteer pipeline from one config, written to ``runs/<name>/``.

Stages: load the model (the plain transformers fast path; the TransformerLens twin only for
``eval_backend="tl"``) -> load BBQ -> template-disjoint splits (probe / dsv / select / shots /
eval) -> per-category subsample of each split -> **fit** (the BAD pass, gates, direction, then
layer and strength chosen on the select split) -> optional **steering search** over direction
families on the select split, the winners scored once on the eval split -> the baselines **panel**
(:mod:`fairlens.evaluate.panel`) -> ``report.json`` (every number and setting), ``report.md`` and the
fitted ``fairsteer/`` artifact.

Every stage writes its result into the run folder as it finishes (``fit_data/``, ``fairsteer/``,
``search/``, ``panel/``), so a run that is interrupted and started again with the same settings
resumes after the last finished stage (and, inside the search, after the last scored variant).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fairlens._version import __version__
from fairlens.apps.run_config import RunConfig
from fairlens.apps.run_dir import _RunDir, _split_summary
from fairlens.apps.run_prepare import _prepare
from fairlens.data import (
    content_hash,
    resolve_data_dir,
    subsample,
)
from fairlens.data.corpus import NEUTRAL_CORPUS, load_neutral_texts
from fairlens.data.crows_pairs import load_crows_pairs, subsample_pairs, type_counts
from fairlens.detect.condition_gate import ConditionGate
from fairlens.distributed import decided, launched, on_main
from fairlens.errors import ArtifactError, ConfigError
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.panel_report import PanelReport
from fairlens.evaluate.suite_mcqa import load_mc_calibration, load_mc_inputs
from fairlens.evaluate.suite_unqover import load_unqover_inputs
from fairlens.fairsteer.estimator import FairSteer
from fairlens.runtime import write_atomic
from fairlens.search.engine import SearchResult
from fairlens.steer.fit_data import FitData
from fairlens.steer.interventions import DEBIAS_INSTRUCTION, METHODS

"""Named settings; ``fairlens run --preset paper`` (flags given beside it win)."""


"""Settings that define the fitted state: a resumed run must share all of them."""


def search_pipeline(
    cfg: RunConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    restart: bool = False,
) -> Any:
    """``fairlens search``: fit on the fit split, search on the select split, score on eval.

    Writes ``<out_dir>/<name>/search/`` (``search.json``, ``search.md``, heatmaps as HTML, and the
    resumable per-variant predictions) and the fitted FairSteer; returns the
    :class:`~fairlens.search.engine.SearchResult`.
    """
    say = log or (lambda _msg: None)
    prep = _prepare(cfg, progress, say, restart)
    result = _run_search(cfg, prep.fs, prep.fit, prep.chosen, prep.rundir, {}, progress, say)
    on_main(lambda: prep.fit.save(prep.rundir.path / "fit_data"))
    return result


def run_pipeline(
    cfg: RunConfig,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Run everything and write ``<out_dir>/<name>/``; returns the report dict.

    A run folder left by an interrupted run with the same fit settings is resumed (finished stages
    are loaded, not recomputed); ``restart=True`` deletes it first.
    """
    from fairlens.models import get_model_info, hooked_twin

    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    data_dir = resolve_data_dir(cfg.data_dir)
    mc, mc_shots = load_mc_inputs(  # read and checked before the model loads
        data_dir,
        cfg.panel.suites,
        mmlu_per_subject=cfg.panel.mmlu_per_subject,
        questions=cfg.panel.mc_questions,
        seed=cfg.fit.seed,
    )
    calibrate = any(METHODS[m].letter_prior for m in cfg.panel.methods)
    mc_calibration = (
        load_mc_calibration(
            data_dir,
            cfg.panel.suites,
            mmlu_per_subject=cfg.panel.mmlu_per_subject,
            questions=cfg.panel.mc_questions,
            seed=cfg.fit.seed,
        )
        if calibrate
        else {}
    )
    unqover = (
        load_unqover_inputs(data_dir, cfg.panel.unqover_per_dataset, seed=cfg.fit.seed)
        if "unqover" in cfg.panel.suites
        else []
    )
    crows, open_crows, texts = [], [], {}
    if "crows" in cfg.panel.suites or "open_ended" in cfg.panel.suites:
        all_pairs = load_crows_pairs(data_dir)
        crows = subsample_pairs(all_pairs, cfg.panel.crows_per_type, seed=cfg.fit.seed)
        if cfg.panel.open_crows_per_type:
            open_crows = subsample_pairs(
                all_pairs, cfg.panel.open_crows_per_type, seed=cfg.fit.seed + 1
            )
    if "utility" in cfg.panel.suites and cfg.panel.text_n != 0:
        texts["neutral"] = load_neutral_texts(
            cfg.panel.text_file, n=cfg.panel.text_n, seed=cfg.fit.seed
        )
    prep = _prepare(cfg, progress, say, restart)
    fs, fit, chosen, rundir, timings = prep.fs, prep.fit, prep.chosen, prep.rundir, prep.timings
    hf_model, tokenizer = prep.hf_model, prep.tokenizer

    # ---------------------------------------------------------------- search
    search_result = None
    scorers: dict[str, Any] = {}
    if cfg.search.enabled:
        t = time.perf_counter()
        search_result = _run_search(cfg, fs, fit, chosen, rundir, scorers, progress, say)
        on_main(lambda: fit.save(rundir.path / "fit_data"))  # keeps the directions it fitted
        timings["search"] = time.perf_counter() - t
    fit.release()
    condition_gate, skipped = None, {}
    methods = tuple(cfg.panel.methods)
    gated = [m for m in methods if METHODS[m].needs_condition_gate]
    if gated:
        t = time.perf_counter()
        try:
            condition_gate = _condition_gate(fs, fit, chosen["select"], rundir, say)
        except ConfigError as exc:  # too few BAD labels on a small split: the rest still runs
            say(f"{', '.join(gated)} skipped: {exc.cause}")
            skipped = {m: f"condition gate not fitted: {exc.cause}" for m in gated}
            methods = tuple(m for m in methods if m not in skipped)
        timings["condition_gate"] = time.perf_counter() - t

    # ---------------------------------------------------------------- panel
    t = time.perf_counter()
    ambiguous = [it for it in chosen["eval"] if it.is_ambiguous and it.bias_target_loc is not None]
    open_bbq = (
        subsample(ambiguous, cfg.panel.open_per_category, seed=cfg.fit.seed)
        if cfg.panel.open_per_category
        else []
    )
    timings["load_eval_data"] = time.perf_counter() - t

    t = time.perf_counter()
    tl = cfg.panel.eval_backend == "tl"
    tl_model = hooked_twin(hf_model, tokenizer, dtype=cfg.dtype) if tl else None
    eval_model = tl_model if tl_model is not None else hf_model
    suites = tuple(s for s in cfg.panel.suites if s != "utility" or texts)
    if suites != tuple(cfg.panel.suites):
        say("utility suite skipped: no text corpus (text_n is 0)")
    say(
        f"panel: {', '.join(methods)} on {', '.join(suites)} "
        f"({len(chosen['eval'])} BBQ eval items, {len(crows)} CrowS pairs)"
    )
    panel = evaluate_panel(
        eval_model,
        tokenizer,
        fs,
        bbq_items=chosen["eval"],
        crows_pairs=crows,
        open_bbq_items=open_bbq,
        open_crows_pairs=open_crows,
        texts=texts,
        mc=mc,
        mc_shots=mc_shots,
        unqover=unqover,
        bbq_calibration=chosen["select"] if calibrate else (),
        mc_calibration=mc_calibration,
        condition_gate=condition_gate,
        config=replace(cfg.panel_config(), suites=suites, methods=methods),
        shots=prep.shots
        if cfg.fit.prompt_format == "few_shot" or cfg.panel.bbq_protocol == "fairsteer-8shot"
        else None,
        gen_model=hf_model,
        # the search's prefix caches hold the fit's prompts: reused under that protocol only
        bbq_scorers=scorers if tl_model is None and cfg.panel.bbq_protocol == "fairsteer" else None,
        progress=progress,
        log=say,
        done=rundir.panel_done(cfg.panel_settings(), say),
        on_result=rundir.save_panel,
    )
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = timings.get("load_model", 0) + time.perf_counter() - t0

    full = {
        "fairlens_version": __version__,
        "config": cfg.to_dict(),
        "threads": prep.threads,
        "processes": launched().size,
        "model": get_model_info(hf_model).fingerprint(),
        "data": {
            "data_dir": str(data_dir),
            "n_items_loaded": len(prep.items),
            "note": "Splits are disjoint by BBQ template (category, question_index); "
            "Race_ethnicity, SES, Race_x_SES, Race_x_gender are regenerated files (see the data README).",
            "split_hashes": {k: s.content_hash for k, s in prep.splits.items()},
            "used": {k: _split_summary(v) for k, v in chosen.items()},
            "eval_templates": sorted(
                {f"{it.category}/{it.question_index}" for it in chosen["eval"]}
            ),
            "mmlu_anchors": len(prep.anchors),
            "crows_pairs": {"n": len(crows), "per_type": type_counts(crows)},
            "open_ended": {
                "bbq_ambiguous_eval_items": len(open_bbq),
                "crows_pairs": len(open_crows),
            },
            "texts": {
                "neutral": {
                    "n": len(texts.get("neutral", [])),
                    "source": cfg.panel.text_file or NEUTRAL_CORPUS["description"],
                }
            },
        },
        "fairsteer": {**fs.summary(), "dsv_pairs": fs.dsv_.n_pos},
        "prompt_baseline_instruction": DEBIAS_INSTRUCTION,
        "search": None if search_result is None else search_result.to_dict(),
        "panel": {**panel.to_dict(), "skipped_methods": skipped},
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    markdown = summary_text(full, panel, search_result)
    on_main(lambda: _write_report(rundir, full, markdown))
    full["_markdown"] = markdown
    return full


def _write_report(rundir: _RunDir, full: dict[str, Any], markdown: str) -> None:
    write_atomic(rundir.path / "report.json", json.dumps(full, indent=2))
    write_atomic(rundir.path / "report.md", markdown + "\n")


def _run_search(
    cfg: RunConfig,
    fs: FairSteer,
    fit: FitData,
    chosen: dict[str, list[Any]],
    rundir: _RunDir,
    scorers: dict[str, Any],
    progress: bool,
    say: Callable[[str], None],
) -> Any:
    """The direction-family search on the select split, its winners scored on the eval split."""
    from fairlens.plots.search import write_search
    from fairlens.search.engine import SearchResult, run_search
    from fairlens.search.space import SelectionRule, Variant

    folder = rundir.path / "search"
    done = folder / "search.json"
    if decided(done.is_file()):
        say("search: loaded from the run folder (resumed)")
        return SearchResult.from_dict(json.loads(done.read_text()))
    space, extra = cfg.search_spaces(fit.n_layers)
    width = cfg.fit.band_width if cfg.fit.scope == "band" else 1
    selected = Variant(
        cfg.fit.direction,
        fs.layer_,
        fs.alpha_,
        cfg.fit.alpha_unit,
        cfg.fit.scope,
        "dynamic",
        cfg.fit.gate,
        cfg.fit.tau,
        width,
    )
    result = run_search(
        fit,
        chosen["select"],
        space=space,
        extra_spaces=extra,
        eval_items=chosen["eval"],
        rule=SelectionRule(margin=cfg.fit.margin),
        patching=tuple(cfg.search.patching),
        out_dir=folder / "grid",
        progress=progress,
        log=say,
        scorers_out=scorers,
        checkpoint=lambda: on_main(lambda: fit.save(rundir.path / "fit_data")),  # resume skips it
        extra_eval={
            "fairsteer": selected,
            "static": replace(selected, mode="static", gate=None, tau=None),
        },
    )
    on_main(lambda: write_search(result, folder))
    return result


def _condition_gate(
    fs: FairSteer,
    fit: FitData,
    select: list[Any],
    rundir: _RunDir,
    say: Callable[[str], None],
) -> ConditionGate:
    """The ``cast`` baseline's gate at FairSteer's hook: direction on the fit split's BAD rows,
    threshold on the selection split (saved in the run folder; reused while both are the same)."""
    path = rundir.path / "condition_gate"
    identity = {"hook": fs.hook_name_, "select_split_hash": content_hash(select)}
    if decided(path.is_dir()):
        try:
            gate, provenance = ConditionGate.load(path)
            if provenance == identity:
                say("condition gate: loaded from the run folder (resumed)")
                return gate
        except ArtifactError as exc:
            say(f"condition gate in the run folder not usable ({exc.cause}); refitting")
    say(f"condition gate (cast baseline): threshold on {len(select)} selection items")
    gate = fit.condition_gate(fs.hook_name_, select)
    on_main(lambda: gate.save(path, **identity))
    return gate


def _baseline_lines(settings: dict[str, Any]) -> list[str]:
    """How the calibration and CAST baselines were fitted (when they ran)."""
    lines = []
    calib = {k: v for k, v in (settings.get("calibration_n") or {}).items() if v}
    if calib:
        lines.append(
            "- calibrated: letter prior fitted on "
            + ", ".join(f"{k} n={v}" for k, v in calib.items())
            + " (BBQ: the selection split; multiple choice: dev / validation splits)"
        )
    gate = settings.get("condition_gate")
    if gate:
        sel = gate["selection"]
        lines.append(
            f"- cast: condition direction on {gate['n_fit']['steer']} biased / "
            f"{gate['n_fit']['leave']} unbiased fit rows (cosine with the DSV "
            f"{gate['direction_cosine_with_dsv']:.2f}); threshold "
            f"{'-inf' if gate['threshold'] is None else format(gate['threshold'], '.3g')} on the "
            f"selection split (n={sel['n']}: balanced accuracy {100 * sel['balanced_accuracy']:.1f}%, "
            f"fires on {100 * sel['fires_on_steer']:.0f}% of biased / "
            f"{100 * sel['fires_on_leave']:.0f}% of unbiased rows), rule: {sel['rule']}"
        )
    return lines


def summary_text(
    report: dict[str, Any], panel: PanelReport, search: SearchResult | None = None
) -> str:
    """The markdown report: settings, n per split, the fitted steerer, the search, every suite."""
    cfg = report["config"]
    used = report["data"]["used"]
    fsr = report["fairsteer"]
    bad = fsr["gates"].get("bad")
    best = max(bad["scores"], key=lambda s: s["accuracy"]) if bad else None
    sel = fsr["selection"]
    lines = [
        f"## FairSteer panel on {report['model']['name']}",
        "",
        f"- settings: {cfg['scoring']} scoring, {cfg['prompt_format']} prompts, direction "
        f"{fsr['direction']}, gate {fsr['gate']}, scope {fsr['scope']}, tau={fsr['tau']}, hook "
        f"{fsr['hook_name']}, evaluated on {panel.settings.get('backend')}, seed {cfg['seed']}"
        + (f", preset {cfg['preset']}" if cfg.get("preset") else ""),
        "- splits (disjoint by BBQ template): "
        + ", ".join(f"{k} n={v['n']}" for k, v in used.items() if k != "dsv")
        + f"; DSV: {fsr.get('dsv_pairs', '?')} contrastive pairs from a {used['dsv']['n']}-item split",
        f"- BAD probe labels: {fsr['probe_counts']['unbiased']} unbiased / "
        f"{fsr['probe_counts']['biased']} biased"
        + (
            f"; best probe val acc {100 * best['accuracy']:.1f}% at layer {best['layer']}"
            if best
            else ""
        ),
        f"- steering: layer {fsr['layer']}, alpha {fsr['alpha']:g} ({fsr['alpha_unit']}; "
        f"‖αv‖/‖h‖ = {fsr['relative_strength']:.3f}), chosen by {sel['selection']}: {sel.get('rule')}",
        "- methods: " + "; ".join(f"{k} = {v}" for k, v in panel.to_dict()["methods"].items()),
        *_baseline_lines(panel.settings),
        "",
    ]
    if search is not None:
        lines += ["## Steering search", "", search.markdown(), ""]
    lines += [
        panel.markdown(),
        "",
        "timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()),
    ]
    return "\n".join(lines)
