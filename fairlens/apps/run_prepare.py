"""A run's first stages: load data and model, split by template, fit FitData and FairSteer (each
resumable from the run folder).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fairlens.apps.run_config import RunConfig
from fairlens.apps.run_dir import _RunDir
from fairlens.data import (
    BBQItem,
    few_shot_examples,
    load_bbq,
    resolve_data_dir,
    split_by_template,
    subsample,
)
from fairlens.distributed import decided, launched, on_main
from fairlens.errors import ArtifactError, ConfigError
from fairlens.fairsteer.estimator import FairSteer
from fairlens.model_types import HFModel, Tokenizer
from fairlens.runtime import set_threads
from fairlens.steer.fit_data import FitData


@dataclass
class _Prepared:
    """What every command shares: inputs checked, model loaded, splits drawn, fit done."""

    cfg: RunConfig
    rundir: _RunDir
    data_dir: Path
    items: list[Any]
    splits: dict[str, Any]
    chosen: dict[str, list[Any]]
    shots: tuple[BBQItem, ...] | None
    anchors: list[tuple[str, int]]
    hf_model: HFModel
    tokenizer: Tokenizer
    timings: dict[str, float]
    threads: int
    fit: FitData = field(init=False)  # set by the fit stage of _prepare
    fs: FairSteer = field(init=False)


def _prepare(
    cfg: RunConfig, progress: bool, say: Callable[[str], None], restart: bool
) -> _Prepared:
    """Check every input, load the model and data, draw the splits; then fit (or resume it)."""
    from fairlens.models import load_hf

    timings: dict[str, float] = {}
    threads = set_threads(cfg.threads)
    data_dir = resolve_data_dir(cfg.data_dir)  # every input is checked before the model loads
    items = load_bbq(data_dir / "bbq", cfg.data.categories, official_counts=True)
    anchors = _mmlu_anchors(cfg, data_dir)
    rundir = _RunDir(cfg, restart)

    t = time.perf_counter()
    splits, chosen = choose_splits(cfg, items)
    needs_shots = (
        cfg.fit.prompt_format == "few_shot"
        or cfg.data.paper_few_shot
        or cfg.panel.bbq_protocol == "fairsteer-8shot"
    )
    shots = few_shot_examples(chosen["shots"], 8, seed=cfg.fit.seed) if needs_shots else None
    timings["load_data"] = time.perf_counter() - t
    say(
        f"BBQ: {len(items)} items; splits: " + ", ".join(f"{k}={len(v)}" for k, v in chosen.items())
    )
    processes = launched().size
    check_processes(chosen, processes, cfg)
    if processes > 1:
        say(f"{processes} processes share the scoring, extraction and generation batches")
    if cfg.preset is not None:
        say(_cost_note(cfg, chosen, anchors))
    t = time.perf_counter()
    say(f"loading model {cfg.model!r}")
    hf_model, tokenizer, info = load_hf(cfg.model, dtype=cfg.dtype, device_map=cfg.device_map)
    timings["load_model"] = time.perf_counter() - t
    asked = [*([cfg.fit.layer] if cfg.fit.layer is not None else []), *(cfg.fit.layers or ())]
    outside = [layer for layer in asked if not 0 <= layer < info.n_layers]
    if outside:  # before any pass over the data
        raise ConfigError(
            f"layer {outside[0]} is out of range for {cfg.model!r}, which has {info.n_layers} "
            f"layers (0..{info.n_layers - 1}).",
            f"pass --layer / --layers between 0 and {info.n_layers - 1}.",
        )
    prep = _Prepared(
        cfg,
        rundir,
        data_dir,
        items,
        splits,
        chosen,
        shots,
        anchors,
        hf_model,
        tokenizer,
        timings,
        threads,
    )

    t = time.perf_counter()
    fcfg = cfg.fit
    fit_kwargs = prep_fit_kwargs(prep, progress)
    fit_path, fs_path = rundir.path / "fit_data", rundir.path / "fairsteer"
    fit = None
    if decided(fit_path.is_dir()):
        try:
            fit = FitData.load(fit_path, hf_model, chosen["probe"], chosen["dsv"], **fit_kwargs)
            say("fit data: loaded from the run folder (resumed)")
        except ArtifactError as exc:
            say(f"fit data in the run folder not usable ({exc.cause}); recomputing")
    if fit is None:
        say("fitting: BAD pass over the probe items")
        fit = FitData(hf_model, chosen["probe"], chosen["dsv"], **fit_kwargs)
    fs = None
    if decided(fs_path.is_dir()):
        try:
            fs = FairSteer.load(fs_path, model=hf_model)
        except ArtifactError as exc:  # damaged or edited: fitted again below
            say(f"FairSteer in the run folder not usable ({exc.cause}); refitting")
        if fs is not None and fs.config != fcfg:
            fs = None
    if fs is None:
        say("fitting FairSteer (gates, direction, layer and strength)")
        fs = FairSteer(fcfg).fit(
            hf_model,
            chosen["probe"],
            chosen["dsv"],
            chosen["select"] if fcfg.selection in ("search", "bbq") else None,
            tokenizer=tokenizer,
            shots=fit_kwargs["shots"],
            fit_data=fit,
            progress=progress,
            log=say,
        )
        fitted, data = fs, fit
        on_main(lambda: _save_fit(fitted, fs_path, data, fit_path))
    else:
        say("FairSteer: loaded from the run folder (resumed)")
    timings["fit"] = time.perf_counter() - t
    prep.fit, prep.fs = fit, fs
    return prep


def prep_fit_kwargs(prep: _Prepared, progress: bool) -> dict[str, Any]:
    cfg = prep.cfg
    return {
        "tokenizer": prep.tokenizer,
        "hook_kind": cfg.fit.hook_kind,
        "layers": cfg.fit.layers,
        "prompt_format": cfg.fit.prompt_format,
        "shots": prep.shots if cfg.fit.prompt_format == "few_shot" else None,
        "batch_size": cfg.fit.batch_size,
        "n_dsv_per_category": cfg.fit.n_dsv_per_category,
        "C": cfg.fit.C,
        "seed": cfg.fit.seed,
        "progress": progress,
        "scoring": cfg.fit.scoring,
        "extra_bad": prep.anchors,
        "few_shot_too": prep.shots if cfg.data.paper_few_shot else None,
    }


def _mmlu_anchors(cfg: RunConfig, data_dir: Path) -> list[tuple[str, int]]:
    if not cfg.data.mmlu_anchors:
        return []
    from fairlens.data.mmlu import load_mmlu, mmlu_anchor_prompts

    questions = load_mmlu(data_dir, "val")
    return [
        (p, 1) for p in mmlu_anchor_prompts(questions, cfg.data.mmlu_anchors, seed=cfg.fit.seed)
    ]


def _cost_note(cfg: RunConfig, chosen: dict[str, list[Any]], anchors: list[Any]) -> str:
    """How many prompts the preset runs, and what that costs on this machine's CPU."""
    n_fit = len(chosen["probe"]) * (2 if cfg.data.paper_few_shot else 1) + len(anchors)
    n_select = len(chosen["select"])
    n_eval = len(chosen["eval"])
    prompts = n_fit + n_select + 2 * n_eval  # the eval split runs plain and instructed prompts
    # measured on 2 CPU cores (docs/results.md): ~0.15 s per SmolLM2 prompt, ~1.3 s per Qwen-1.5B
    # prompt, 8-shot prompts ~9x longer; a 7B model is ~5x Qwen-1.5B.
    return (
        f"preset {cfg.preset!r}: about {prompts:,} prompt passes ({n_fit:,} fit, {n_select:,} "
        f"selection, {n_eval:,} x 2 eval) plus the panel; on 2 CPU cores that is ~"
        f"{prompts * 1.3 * (5 if cfg.data.paper_few_shot else 1) / 3600:.1f} h for a 1.5B model and "
        "~5x that for a 7B one: meant for a GPU (pass --limit N to cap items per category)"
    )


def _save_fit(fs: FairSteer, fs_path: Path, fit: FitData, fit_path: Path) -> None:
    fs.save(fs_path)
    fit.save(fit_path)


def choose_splits(
    cfg: RunConfig, items: list[BBQItem]
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """The template-disjoint splits of ``items`` and each split's per-category subsample."""
    splits = split_by_template(items, cfg.data.fractions, seed=cfg.fit.seed)
    caps = cfg.data.caps()

    def pick(name: str) -> list[Any]:
        cap = caps[name]
        items_ = splits[name].items
        return list(items_) if cap is None else subsample(items_, cap, seed=cfg.fit.seed)

    return splits, {name: pick(name) for name in splits}


def check_processes(chosen: dict[str, list[Any]], processes: int, cfg: RunConfig) -> None:
    """Refuse more processes than the items of the smallest split a run scores, and several
    processes for a model that ``device_map`` spreads over the machine's devices."""
    if processes > 1 and cfg.device_map is not None:
        raise ConfigError(
            f"--device-map {cfg.device_map} spreads one model over every device of the machine, "
            f"so {processes} processes would each load a copy over the same devices.",
            "use --device-map with one process (it splits the model), or several processes "
            "without it (each holds the whole model).",
        )
    used = [k for k in ("probe", "select", "eval") if chosen[k]]
    if not used:
        return
    smallest = min(used, key=lambda k: len(chosen[k]))
    if processes > len(chosen[smallest]):
        raise ConfigError(
            f"{processes} processes for the {len(chosen[smallest])} items of the {smallest} split: "
            "some processes would have nothing to do.",
            f"use --num-processes {max(1, len(chosen[smallest]))} or fewer, or more items.",
        )
