"""``fairlens run``: the whole FairSteer pipeline from one config, written to ``runs/<name>/``.

Stages: load model -> load BBQ -> template-disjoint splits (probe / dsv / select / shots / eval) ->
per-category subsample of each split (CPU-sized runs) -> fit FairSteer -> the baselines panel
(:mod:`fairlens.panel`: base, prompt, static, FairSteer, ablation on BBQ, CrowS-Pairs, open-ended
generation and utility) -> ``report.json`` (every number and setting), ``report.md`` (the tables)
and the fitted ``fairsteer/`` artifact.
"""

from __future__ import annotations

import json
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
from fairlens.errors import ConfigError
from fairlens.fairsteer import FairSteer, FairSteerConfig
from fairlens.methods import DEBIAS_INSTRUCTION, PANEL_METHODS
from fairlens.models import get_model_info, load_hf, load_model
from fairlens.panel import SUITES, PanelConfig, PanelReport, evaluate_panel
from fairlens.runtime import set_threads
from fairlens.scoring import ScoringMode

DEFAULT_FRACTIONS = {"probe": 0.45, "dsv": 0.1, "select": 0.1, "shots": 0.05, "eval": 0.3}


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
    scoring: ScoringMode = "letter"
    prompt_format: PromptFormat = "zero_shot"
    hook_kind: str = "resid_post"
    layer: int | None = None
    selection: Literal["probe", "bbq"] = "probe"
    top_k: int = 3
    alpha: float = 1.0
    tau: float = 0.5
    C: float = 1.0
    dsv_position: Literal["answer", "colon"] = "answer"
    batch_size: int = 16
    # "hf": evaluate on the plain transformers twin (fast path; same numbers, tested)
    eval_backend: Literal["tl", "hf"] = "hf"
    methods: tuple[str, ...] = PANEL_METHODS
    suites: tuple[str, ...] = SUITES
    crows_per_type: int | None = 20  # CrowS-Pairs pairs per bias type (None: all 1,508)
    open_per_category: int = 2  # BBQ ambiguous eval items per category for open-ended generation
    open_crows_per_type: int = 2  # CrowS-Pairs prefixes per bias type for open-ended generation
    max_new_tokens: int = 20
    text_n: int | None = 40  # neutral-corpus paragraphs for perplexity / gate-on-text
    text_file: str | None = None  # a plain-text corpus instead of the default (see data.corpus)
    threads: int | None = None
    seed: int = 42
    out_dir: str = "runs"
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))

    def __post_init__(self) -> None:
        for name in ("probe_per_category", "select_per_category", "eval_per_category"):
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
        PanelConfig(methods=tuple(self.methods), suites=tuple(self.suites))  # validates names
        if self.eval_backend not in ("tl", "hf"):
            raise ConfigError(f"eval_backend must be 'tl' or 'hf', got {self.eval_backend!r}.")
        if not self.name or "/" in self.name:
            raise ConfigError(f"Run name must be a non-empty folder name, got {self.name!r}.")

    def fairsteer_config(self) -> FairSteerConfig:
        return FairSteerConfig(
            hook_kind=self.hook_kind,
            layer=self.layer,
            selection=self.selection,
            top_k=self.top_k,
            alpha=self.alpha,
            tau=self.tau,
            C=self.C,
            dsv_position=self.dsv_position,
            n_dsv_per_category=self.dsv_per_category,
            scoring=self.scoring,
            prompt_format=self.prompt_format,
            batch_size=self.batch_size,
            seed=self.seed,
        )

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a JSON config file; ``overrides`` (non-None) win over the file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(
                f"Could not read config file {str(path)!r}: {exc}", "Pass a JSON file."
            ) from exc
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"Unknown keys in {str(path)!r}: {unknown}.", f"Valid keys: {sorted(known)}."
            )
        data.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("categories", "methods", "suites"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        return cls(**data)


def _split_summary(items: list[Any]) -> dict[str, Any]:
    return {
        "n": len(items),
        "n_ambig": sum(it.is_ambiguous for it in items),
        "n_templates": len({it.template_id for it in items}),
        "per_category": dict(sorted(Counter(it.category for it in items).items())),
    }


def run_pipeline(cfg: RunConfig, *, progress: bool = True, log: Any = None) -> dict[str, Any]:
    """Run everything and write ``<out_dir>/<name>/``; returns the report dict."""
    say = log or (lambda _msg: None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    threads = set_threads(cfg.threads)

    say(f"loading model {cfg.model!r}")
    model = load_model(cfg.model)
    timings["load_model"] = time.perf_counter() - t0

    t = time.perf_counter()
    data_dir = resolve_data_dir(cfg.data_dir)
    items = load_bbq(data_dir / "bbq", cfg.categories)
    splits = split_by_template(items, cfg.fractions, seed=cfg.seed)
    caps = {
        "probe": cfg.probe_per_category,
        "dsv": None,
        "select": cfg.select_per_category,
        "shots": None,
        "eval": cfg.eval_per_category,
    }
    chosen = {
        name: (
            list(split.items)
            if caps[name] is None
            else subsample(split.items, caps[name], seed=cfg.seed)
        )
        for name, split in splits.items()
    }
    shots = (
        few_shot_examples(chosen["shots"], 8, seed=cfg.seed)
        if cfg.prompt_format == "few_shot"
        else None
    )
    timings["load_data"] = time.perf_counter() - t
    say(
        f"BBQ: {len(items)} items; splits: " + ", ".join(f"{k}={len(v)}" for k, v in chosen.items())
    )

    t = time.perf_counter()
    say("fitting FairSteer (BAD probes, DSV, layer)")
    fs = FairSteer(cfg.fairsteer_config()).fit(
        model,
        chosen["probe"],
        chosen["dsv"],
        chosen["select"] if cfg.selection == "bbq" else None,
        shots=shots,
        progress=progress,
    )
    timings["fit"] = time.perf_counter() - t

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
    hf_model, hf_tok = None, None
    if cfg.eval_backend == "hf" or "open_ended" in cfg.suites:
        hf_model, hf_tok, _ = load_hf(cfg.model)
    eval_model = hf_model if cfg.eval_backend == "hf" else model
    tokenizer = hf_tok if hf_tok is not None else model.tokenizer
    say(
        f"panel: {', '.join(cfg.methods)} on {', '.join(cfg.suites)} "
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
            suites=tuple(cfg.suites),
            scoring=cfg.scoring,
            prompt_format=cfg.prompt_format,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
        ),
        shots=shots,
        gen_model=hf_model,
        progress=progress,
        log=say,
    )
    timings["evaluate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    out = Path(cfg.out_dir) / cfg.name
    out.mkdir(parents=True, exist_ok=True)
    fs.save(out / "fairsteer")
    full = {
        "fairlens_version": __version__,
        "config": {**asdict(cfg), "categories": list(cfg.categories) if cfg.categories else None},
        "threads": threads,
        "model": get_model_info(model).fingerprint(),
        "data": {
            "data_dir": str(data_dir),
            "n_items_loaded": len(items),
            "note": "Splits are disjoint by BBQ template (category, question_index); "
            "Race_ethnicity, SES, Race_x_SES, Race_x_gender are regenerated files (see the data README).",
            "split_hashes": {k: s.content_hash for k, s in splits.items()},
            "used": {k: _split_summary(v) for k, v in chosen.items()},
            "eval_templates": sorted(
                {f"{it.category}/{it.question_index}" for it in chosen["eval"]}
            ),
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
        "fairsteer": {
            "layer": fs.layer_,
            "hook_name": fs.hook_name_,
            "probe_counts": fs.probe_counts_,
            "base_accuracy_on_probe_items": fs.base_probe_accuracy_,
            "sweep": fs.sweep_.to_dict(),
            "dsv": fs.dsv_.to_dict(),
            "selection_scores": fs.selection_scores_,
            "direction_cosines": fs.direction_cosines_,
            "dsv_pairs": fs.dsv_.n_pos,
        },
        "prompt_baseline_instruction": DEBIAS_INSTRUCTION,
        "panel": panel.to_dict(),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    (out / "report.json").write_text(json.dumps(full, indent=2))
    markdown = summary_text(full, panel)
    (out / "report.md").write_text(markdown + "\n")
    full["_markdown"] = markdown
    return full


def summary_text(report: dict[str, Any], panel: PanelReport) -> str:
    """The markdown report: settings, n per split, chosen layer, every suite's table, timings."""
    cfg = report["config"]
    used = report["data"]["used"]
    fsr = report["fairsteer"]
    best = max(fsr["sweep"]["scores"], key=lambda s: s["accuracy"])
    lines = [
        f"## FairSteer panel on {report['model']['name']}",
        "",
        f"- settings: {cfg['scoring']} scoring, {cfg['prompt_format']} prompts, alpha={cfg['alpha']}, "
        f"tau={cfg['tau']}, hook {fsr['hook_name']}, evaluated on "
        f"{panel.settings.get('backend')}, seed {cfg['seed']}",
        "- splits (disjoint by BBQ template): "
        + ", ".join(f"{k} n={v['n']}" for k, v in used.items() if k != "dsv")
        + f"; DSV: {fsr.get('dsv_pairs', '?')} contrastive pairs from a {used['dsv']['n']}-item split",
        f"- BAD probe labels: {fsr['probe_counts']['unbiased']} unbiased / "
        f"{fsr['probe_counts']['biased']} biased; best probe val acc {100 * best['accuracy']:.1f}% "
        f"at layer {best['layer']}; steering layer {fsr['layer']}",
        "- methods: " + "; ".join(f"{k} = {v}" for k, v in panel.to_dict()["methods"].items()),
        "",
        panel.markdown(),
        "",
        "timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()),
    ]
    return "\n".join(lines)
