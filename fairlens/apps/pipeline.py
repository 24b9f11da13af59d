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

import hashlib
import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from fairlens._version import __version__
from fairlens.data import (
    PromptFormat,
    few_shot_examples,
    load_bbq,
    resolve_data_dir,
    split_by_template,
    subsample,
)
from fairlens.data.corpus import NEUTRAL_CORPUS, load_neutral_texts
from fairlens.data.crows_pairs import load_crows_pairs, subsample_pairs, type_counts
from fairlens.directions import DIRECTION_METHODS
from fairlens.errors import ArtifactError, ConfigError
from fairlens.evaluate.panel import evaluate_panel
from fairlens.evaluate.panel_report import PanelReport
from fairlens.evaluate.suites import SUITES, PanelConfig
from fairlens.fairsteer.config import DEFAULT_ALPHAS, FairSteerConfig
from fairlens.fairsteer.estimator import FairSteer
from fairlens.runtime import set_threads
from fairlens.scoring.letters import ScoringMode
from fairlens.steer.interventions import DEBIAS_INSTRUCTION, PANEL_METHODS

DEFAULT_FRACTIONS = {"probe": 0.45, "dsv": 0.1, "select": 0.1, "shots": 0.05, "eval": 0.3}

PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        # FairSteer as the paper's reference code runs it (on template-disjoint splits)
        "probe_per_category": None,  # every BBQ item of the fit split ...
        "paper_few_shot": True,  # ... zero-shot and 8-shot
        "mmlu_anchors": 500,  # plus MMLU questions as unbiased anchors (3-option format)
        "dsv_per_category": 10,  # 110 pairs, zero-shot + 8-shot
        "selection": "bbq",  # layer by steered BBQ accuracy over all layers
        "alpha": 1.0,
        "alpha_unit": "absolute",
        "tau": 0.5,
        "direction": "dsv",
        "gate": "bad",
        "scope": "colon",
        "select_per_category": None,
        "eval_per_category": None,
    }
}
"""Named settings; ``fairlens run --preset paper`` (flags given beside it win)."""


@dataclass(frozen=True)
class RunConfig:
    """Settings of one pipeline run (every field is recorded in the report)."""

    name: str = "smollm2-demo"
    model: str = "smollm2-135m"
    data_dir: str | None = None
    categories: tuple[str, ...] | None = None
    probe_per_category: int | None = 40
    dsv_per_category: int = 10
    select_per_category: int | None = 10
    eval_per_category: int | None = 30
    limit: int | None = None  # cap on items per category for every split (CPU-sized presets)
    scoring: ScoringMode = "letter"
    prompt_format: PromptFormat = "zero_shot"
    hook_kind: str = "resid_post"
    layer: int | None = None
    direction: str = "dsv"
    gate: str = "bad"
    scope: Literal["colon", "band", "all"] = "colon"
    band_width: int = 3
    selection: Literal["search", "bbq", "probe"] = "search"
    alpha: float | None = None
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    alpha_unit: Literal["relative", "absolute"] = "relative"
    tau: float = 0.5
    margin: float = 0.02
    C: float = 1.0
    batch_size: int = 16
    # "hf": evaluate on the plain transformers model (fast path; same numbers, tested)
    eval_backend: Literal["tl", "hf"] = "hf"
    methods: tuple[str, ...] = PANEL_METHODS
    suites: tuple[str, ...] = tuple(SUITES)
    crows_per_type: int | None = 20  # CrowS-Pairs pairs per bias type (None: all 1,508)
    open_per_category: int = 2  # BBQ ambiguous eval items per category for open-ended generation
    open_crows_per_type: int = 2  # CrowS-Pairs prefixes per bias type for open-ended generation
    max_new_tokens: int = 20
    text_n: int | None = 40  # neutral-corpus paragraphs for perplexity / gate-on-text
    text_file: str | None = None  # a plain-text corpus instead of the default (see data.corpus)
    # the steering search over direction families (fairlens.search.engine), on the select split
    search: bool = False
    search_directions: tuple[str, ...] = tuple(DIRECTION_METHODS)
    search_layer_stride: int = 1
    search_alphas: tuple[float, ...] = DEFAULT_ALPHAS
    search_scopes: tuple[str, ...] = ("colon", "band")
    search_band_directions: tuple[str, ...] = ("dsv", "probe")
    search_gates: tuple[str, ...] = ("bad", "context", "ambig")
    search_taus: tuple[float, ...] = (0.5,)
    search_patching: tuple[str, ...] = ("select", "eval")  # splits with the patching ceiling
    paper_few_shot: bool = False  # BAD data and DSV pairs also built with 8-shot prompts
    mmlu_anchors: int = 0  # MMLU questions added to the BAD data as unbiased anchors
    preset: str | None = None
    threads: int | None = None
    seed: int = 42
    out_dir: str = "runs"
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))

    def __post_init__(self) -> None:
        for name in ("probe_per_category", "select_per_category", "eval_per_category", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or None (all), got {value}.")
        if set(self.fractions) != set(DEFAULT_FRACTIONS):
            raise ConfigError(
                f"fractions must name exactly the splits {sorted(DEFAULT_FRACTIONS)}."
            )
        for name in ("crows_per_type", "text_n"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1 or None (all), got {value}.")
        if self.open_per_category < 0 or self.open_crows_per_type < 0 or self.max_new_tokens < 1:
            raise ConfigError(
                "open_per_category and open_crows_per_type must be >= 0, max_new_tokens >= 1."
            )
        if self.mmlu_anchors < 0 or self.search_layer_stride < 1:
            raise ConfigError("mmlu_anchors must be >= 0 and search_layer_stride >= 1.")
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(
                f"unknown preset {self.preset!r}.", f"use one of: {', '.join(PRESETS)}."
            )
        PanelConfig(methods=tuple(self.methods), suites=tuple(self.suites))  # validates names
        if self.eval_backend not in ("tl", "hf"):
            raise ConfigError(f"eval_backend must be 'tl' or 'hf', got {self.eval_backend!r}.")
        if not self.name or "/" in self.name:
            raise ConfigError(f"Run name must be a non-empty folder name, got {self.name!r}.")
        self.fairsteer_config()  # validates the FairSteer fields
        if self.search:
            self.search_spaces(n_layers=64)  # validates the search fields

    @classmethod
    def from_preset(cls, preset: str | None = None, **overrides: Any) -> RunConfig:
        """A config with a preset's settings, then ``overrides`` (non-None) on top."""
        base: dict[str, Any] = {}
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(
                    f"unknown preset {preset!r}.", f"use one of: {', '.join(PRESETS)}."
                )
            base = {**PRESETS[preset], "preset": preset}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})

    def fairsteer_config(self) -> FairSteerConfig:
        return FairSteerConfig(
            hook_kind=self.hook_kind,
            layer=self.layer,
            direction=self.direction,
            gate=self.gate,
            scope=self.scope,
            band_width=self.band_width,
            selection=self.selection,
            alpha=self.alpha,
            alphas=tuple(self.alphas),
            alpha_unit=self.alpha_unit,
            tau=self.tau,
            margin=self.margin,
            C=self.C,
            n_dsv_per_category=self.dsv_per_category,
            scoring=self.scoring,
            prompt_format=self.prompt_format,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    def search_spaces(self, n_layers: int) -> tuple[Any, list[Any]]:
        """The search grid for a model of ``n_layers``: the main space and the band space."""
        from fairlens.search.space import SCOPES, SearchSpace

        bad = [s for s in self.search_scopes if s not in SCOPES]
        if bad:
            raise ConfigError(f"unknown search scopes {bad}.", f"use some of: {', '.join(SCOPES)}.")
        layers = tuple(range(0, n_layers, self.search_layer_stride))
        space = SearchSpace(
            directions=tuple(self.search_directions),
            layers=layers,
            alphas=tuple(self.search_alphas),
            scopes=tuple(s for s in self.search_scopes if s != "band") or ("colon",),
            taus=tuple(self.search_taus),
            gates=tuple(self.search_gates),
        )
        extra = []
        if "band" in self.search_scopes:
            band_dirs = tuple(d for d in self.search_band_directions if d in self.search_directions)
            extra.append(
                SearchSpace(
                    directions=band_dirs or (self.search_directions[0],),
                    layers=tuple(v for v in layers if v + self.band_width <= n_layers) or (0,),
                    alphas=tuple(self.search_alphas),
                    scopes=("band",),
                    band_width=self.band_width,
                    taus=tuple(self.search_taus),
                    gates=tuple(self.search_gates),
                )
            )
        return space, extra

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a JSON config file; ``overrides`` (non-None) win over the file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"Could not read config file {str(path)!r}: {exc}", "Pass a JSON file."
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{str(path)!r} must hold a JSON object of RunConfig fields.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown keys in {str(path)!r}: {unknown}.", f"Valid keys: {sorted(known)}."
            )
        data.update({k: v for k, v in overrides.items() if v is not None})
        for key in (
            "categories",
            "methods",
            "suites",
            "alphas",
            "search_directions",
            "search_alphas",
            "search_scopes",
            "search_band_directions",
            "search_gates",
            "search_taus",
            "search_patching",
        ):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        preset = data.pop("preset", None)
        return cls.from_preset(preset, **data)


def _split_summary(items: list[Any]) -> dict[str, Any]:
    return {
        "n": len(items),
        "n_ambig": sum(it.is_ambiguous for it in items),
        "n_templates": len({it.template_id for it in items}),
        "per_category": dict(sorted(Counter(it.category for it in items).items())),
    }


_RESUME_KEYS = (
    "model",
    "data_dir",
    "categories",
    "probe_per_category",
    "dsv_per_category",
    "select_per_category",
    "eval_per_category",
    "limit",
    "scoring",
    "prompt_format",
    "hook_kind",
    "layer",
    "direction",
    "gate",
    "scope",
    "band_width",
    "selection",
    "alpha",
    "alphas",
    "alpha_unit",
    "tau",
    "margin",
    "C",
    "seed",
    "fractions",
    "paper_few_shot",
    "mmlu_anchors",
)
"""Settings that define the fitted state: a resumed run must share all of them."""


class _RunDir:
    """The run folder: what each finished stage left, and a guard against mixing settings."""

    def __init__(self, cfg: RunConfig, restart: bool) -> None:
        self.path = Path(cfg.out_dir) / cfg.name
        if restart and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        ident = {k: getattr(cfg, k) for k in _RESUME_KEYS}
        digest = hashlib.sha256(
            json.dumps(ident, sort_keys=True, default=list).encode()
        ).hexdigest()
        state = self.path / "run_state.json"
        if state.exists():
            old = json.loads(state.read_text()).get("fit_settings_sha")
            if old != digest:
                raise ConfigError(
                    f"{str(self.path)!r} holds a run with other fit settings, so it cannot be resumed.",
                    "use another --name, or pass --restart to start it again.",
                )
        state.write_text(
            json.dumps({"fit_settings_sha": digest, "fit_settings": ident}, indent=2, default=list)
        )

    def panel_done(self) -> dict[str, dict[str, Any]]:
        folder = self.path / "panel"
        done: dict[str, dict[str, Any]] = {}
        if folder.is_dir():
            for f in folder.glob("*.json"):
                suite, method = f.stem.split("__")
                try:
                    done[f"{suite}/{method}"] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    f.unlink()  # cut by an interruption: compute it again
        return done

    def save_panel(self, suite: str, method: str, result: dict[str, Any]) -> None:
        folder = self.path / "panel"
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{suite}__{method}.tmp"
        tmp.write_text(json.dumps(result))
        tmp.replace(folder / f"{suite}__{method}.json")


@dataclass
class _Prepared:
    """What every command shares: inputs checked, model loaded, splits drawn, fit done."""

    cfg: RunConfig
    rundir: _RunDir
    data_dir: Path
    items: list[Any]
    splits: dict[str, Any]
    chosen: dict[str, list[Any]]
    shots: Any
    anchors: list[tuple[str, int]]
    hf_model: Any
    tokenizer: Any
    timings: dict[str, float]
    threads: int
    fit: Any = None
    fs: Any = None


def _prepare(cfg: RunConfig, progress: bool, say: Any, restart: bool) -> _Prepared:
    """Check every input, load the model and data, draw the splits; then fit (or resume it)."""
    from fairlens.models import load_hf
    from fairlens.steer.fit_data import FitData

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    threads = set_threads(cfg.threads)
    data_dir = resolve_data_dir(cfg.data_dir)  # every input is checked before the model loads
    items = load_bbq(data_dir / "bbq", cfg.categories)
    anchors = _mmlu_anchors(cfg, data_dir)
    rundir = _RunDir(cfg, restart)

    say(f"loading model {cfg.model!r}")
    hf_model, tokenizer, _ = load_hf(cfg.model)
    timings["load_model"] = time.perf_counter() - t0

    t = time.perf_counter()
    splits = split_by_template(items, cfg.fractions, seed=cfg.seed)
    caps: dict[str, int | None] = {
        "probe": cfg.probe_per_category,
        "dsv": None,
        "select": cfg.select_per_category,
        "shots": None,
        "eval": cfg.eval_per_category,
    }
    if cfg.limit is not None:
        # the DSV split only feeds dsv_per_category pairs, the shots split 8 examples: uncapped
        for k in ("probe", "select", "eval"):
            cap = caps[k]
            caps[k] = cfg.limit if cap is None else min(cap, cfg.limit)

    def pick(name: str) -> list[Any]:
        cap = caps[name]
        items_ = splits[name].items
        return list(items_) if cap is None else subsample(items_, cap, seed=cfg.seed)

    chosen = {name: pick(name) for name in splits}
    needs_shots = cfg.prompt_format == "few_shot" or cfg.paper_few_shot
    shots = few_shot_examples(chosen["shots"], 8, seed=cfg.seed) if needs_shots else None
    timings["load_data"] = time.perf_counter() - t
    say(
        f"BBQ: {len(items)} items; splits: " + ", ".join(f"{k}={len(v)}" for k, v in chosen.items())
    )
    if cfg.preset is not None:
        say(_cost_note(cfg, chosen, anchors))
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
    fcfg = cfg.fairsteer_config()
    fit_kwargs = prep_fit_kwargs(prep, progress)
    fit_path, fs_path = rundir.path / "fit_data", rundir.path / "fairsteer"
    fit = None
    if fit_path.is_dir():
        try:
            fit = FitData.load(fit_path, hf_model, chosen["probe"], chosen["dsv"], **fit_kwargs)
            say("fit data: loaded from the run folder (resumed)")
        except ArtifactError as exc:
            say(f"fit data in the run folder not usable ({exc.cause}); recomputing")
    if fit is None:
        say("fitting: BAD pass over the probe items")
        fit = FitData(hf_model, chosen["probe"], chosen["dsv"], **fit_kwargs)
    fs = None
    if fs_path.is_dir():
        fs = FairSteer.load(fs_path, model=hf_model)
        if fs.config != fcfg:
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
        fs.save(fs_path)
        fit.save(fit_path)
    else:
        say("FairSteer: loaded from the run folder (resumed)")
    timings["fit"] = time.perf_counter() - t
    prep.fit, prep.fs = fit, fs
    return prep


def prep_fit_kwargs(prep: _Prepared, progress: bool) -> dict[str, Any]:
    cfg = prep.cfg
    return {
        "tokenizer": prep.tokenizer,
        "hook_kind": cfg.hook_kind,
        "layers": None,
        "prompt_format": cfg.prompt_format,
        "shots": prep.shots if cfg.prompt_format == "few_shot" else None,
        "batch_size": cfg.batch_size,
        "n_dsv_per_category": cfg.dsv_per_category,
        "C": cfg.C,
        "seed": cfg.seed,
        "progress": progress,
        "scoring": cfg.scoring,
        "extra_bad": prep.anchors,
        "few_shot_too": prep.shots if cfg.paper_few_shot else None,
    }


def search_pipeline(
    cfg: RunConfig, *, progress: bool = True, log: Any = None, restart: bool = False
) -> Any:
    """``fairlens search``: fit on the fit split, search on the select split, score on eval.

    Writes ``<out_dir>/<name>/search/`` (``search.json``, ``search.md``, heatmaps as HTML, and the
    resumable per-variant predictions) and the fitted FairSteer; returns the
    :class:`~fairlens.search.engine.SearchResult`.
    """
    say = log or (lambda _msg: None)
    prep = _prepare(cfg, progress, say, restart)
    result = _run_search(cfg, prep.fs, prep.fit, prep.chosen, prep.rundir, {}, progress, say)
    prep.fit.save(prep.rundir.path / "fit_data")
    return result


def run_pipeline(
    cfg: RunConfig, *, progress: bool = True, log: Any = None, restart: bool = False
) -> dict[str, Any]:
    """Run everything and write ``<out_dir>/<name>/``; returns the report dict.

    A run folder left by an interrupted run with the same fit settings is resumed (finished stages
    are loaded, not recomputed); ``restart=True`` deletes it first.
    """
    from fairlens.models import get_model_info, load_model

    say = log or (lambda _msg: None)
    t0 = time.perf_counter()
    prep = _prepare(cfg, progress, say, restart)
    fs, fit, chosen, rundir, timings = prep.fs, prep.fit, prep.chosen, prep.rundir, prep.timings
    hf_model, tokenizer, data_dir = prep.hf_model, prep.tokenizer, prep.data_dir

    # ---------------------------------------------------------------- search
    search_result = None
    scorers: dict[str, Any] = {}
    if cfg.search:
        t = time.perf_counter()
        search_result = _run_search(cfg, fs, fit, chosen, rundir, scorers, progress, say)
        fit.save(rundir.path / "fit_data")  # keeps the directions the search fitted
        timings["search"] = time.perf_counter() - t
    fit.release()

    # ---------------------------------------------------------------- panel
    t = time.perf_counter()
    crows, open_crows, texts = [], [], {}
    if "crows" in cfg.suites or "open_ended" in cfg.suites:
        all_pairs = load_crows_pairs(data_dir)
        crows = subsample_pairs(all_pairs, cfg.crows_per_type, seed=cfg.seed)
        if cfg.open_crows_per_type:
            open_crows = subsample_pairs(all_pairs, cfg.open_crows_per_type, seed=cfg.seed + 1)
    if "utility" in cfg.suites and cfg.text_n != 0:
        texts["neutral"] = load_neutral_texts(cfg.text_file, n=cfg.text_n, seed=cfg.seed)
    ambiguous = [it for it in chosen["eval"] if it.is_ambiguous and it.bias_target_loc is not None]
    open_bbq = (
        subsample(ambiguous, cfg.open_per_category, seed=cfg.seed) if cfg.open_per_category else []
    )
    timings["load_eval_data"] = time.perf_counter() - t

    t = time.perf_counter()
    tl_model = load_model(cfg.model) if cfg.eval_backend == "tl" else None
    eval_model = tl_model if tl_model is not None else hf_model
    suites = tuple(s for s in cfg.suites if s != "utility" or texts)
    if suites != tuple(cfg.suites):
        say("utility suite skipped: no text corpus (text_n is 0)")
    say(
        f"panel: {', '.join(cfg.methods)} on {', '.join(suites)} "
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
        config=PanelConfig(
            methods=tuple(cfg.methods),
            suites=suites,
            scoring=cfg.scoring,
            prompt_format=cfg.prompt_format,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
        ),
        shots=prep.shots if cfg.prompt_format == "few_shot" else None,
        gen_model=hf_model,
        bbq_scorers=scorers if tl_model is None else None,
        progress=progress,
        log=say,
        done=rundir.panel_done(),
        on_result=rundir.save_panel,
    )
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = timings.get("load_model", 0) + time.perf_counter() - t0

    full = {
        "fairlens_version": __version__,
        "config": cfg.to_dict(),
        "threads": prep.threads,
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
                    "source": cfg.text_file or NEUTRAL_CORPUS["description"],
                }
            },
        },
        "fairsteer": {**fs.summary(), "dsv_pairs": fs.dsv_.n_pos},
        "prompt_baseline_instruction": DEBIAS_INSTRUCTION,
        "search": None if search_result is None else search_result.to_dict(),
        "panel": panel.to_dict(),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    (rundir.path / "report.json").write_text(json.dumps(full, indent=2))
    markdown = summary_text(full, panel, search_result)
    (rundir.path / "report.md").write_text(markdown + "\n")
    full["_markdown"] = markdown
    return full


def _mmlu_anchors(cfg: RunConfig, data_dir: Path) -> list[tuple[str, int]]:
    if not cfg.mmlu_anchors:
        return []
    from fairlens.data.mmlu import load_mmlu, mmlu_anchor_prompts

    questions = load_mmlu(data_dir, "val")
    return [(p, 1) for p in mmlu_anchor_prompts(questions, cfg.mmlu_anchors, seed=cfg.seed)]


def _cost_note(cfg: RunConfig, chosen: dict[str, list[Any]], anchors: list[Any]) -> str:
    """How many prompts the preset runs, and what that costs on this machine's CPU."""
    n_fit = len(chosen["probe"]) * (2 if cfg.paper_few_shot else 1) + len(anchors)
    n_select = len(chosen["select"])
    n_eval = len(chosen["eval"])
    prompts = n_fit + n_select + 2 * n_eval  # the eval split runs plain and instructed prompts
    # measured on 2 CPU cores (docs/results.md): ~0.15 s per SmolLM2 prompt, ~1.3 s per Qwen-1.5B
    # prompt, 8-shot prompts ~9x longer; a 7B model is ~5x Qwen-1.5B.
    return (
        f"preset {cfg.preset!r}: about {prompts:,} prompt passes ({n_fit:,} fit, {n_select:,} "
        f"selection, {n_eval:,} x 2 eval) plus the panel; on 2 CPU cores that is ~"
        f"{prompts * 1.3 * (5 if cfg.paper_few_shot else 1) / 3600:.1f} h for a 1.5B model and "
        "~5x that for a 7B one: meant for a GPU (pass --limit N to cap items per category)"
    )


def _run_search(
    cfg: RunConfig,
    fs: FairSteer,
    fit: Any,
    chosen: dict[str, list[Any]],
    rundir: _RunDir,
    scorers: dict[str, Any],
    progress: bool,
    say: Any,
) -> Any:
    """The direction-family search on the select split, its winners scored on the eval split."""
    from fairlens.plots.search import write_search
    from fairlens.search.engine import SearchResult, run_search
    from fairlens.search.space import SelectionRule, Variant

    folder = rundir.path / "search"
    done = folder / "search.json"
    if done.is_file():
        say("search: loaded from the run folder (resumed)")
        return SearchResult.from_dict(json.loads(done.read_text()))
    space, extra = cfg.search_spaces(fit.n_layers)
    width = cfg.band_width if cfg.scope == "band" else 1
    selected = Variant(
        cfg.direction,
        fs.layer_,
        fs.alpha_,
        cfg.alpha_unit,
        cfg.scope,
        "dynamic",
        cfg.gate,
        cfg.tau,
        width,
    )
    from dataclasses import replace

    result = run_search(
        fit,
        chosen["select"],
        space=space,
        extra_spaces=extra,
        eval_items=chosen["eval"],
        rule=SelectionRule(margin=cfg.margin),
        patching=tuple(cfg.search_patching),
        out_dir=folder / "grid",
        progress=progress,
        log=say,
        scorers_out=scorers,
        checkpoint=lambda: fit.save(rundir.path / "fit_data"),  # a resume skips the fitting
        extra_eval={
            "fairsteer": selected,
            "static": replace(selected, mode="static", gate=None, tau=None),
        },
    )
    write_search(result, folder)
    return result


def summary_text(report: dict[str, Any], panel: PanelReport, search: Any = None) -> str:
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
