"""Regenerate the paper figures: run every analysis on a small BBQ subset and write HTML + PNG/SVG.

:func:`regenerate_figures` is what ``fairlens figures`` runs. It extracts activations once (all
hook kinds and ``hook_z`` at the last prompt token of the labelled probe items), computes one DSV
per BBQ category from template-disjoint items, and scores a held-out evaluation subset under
steering and ablation. Static images are written with plotly's exporter (kaleido, which needs a
Chrome/Chromium: ``apt-get install chromium`` on Debian); ``formats=("html",)`` skips them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairlens.errors import ConfigError, FairlensError

if TYPE_CHECKING:
    from fairlens.scoring.letters import ScoringMode

__all__ = ["FigureSizes", "build_figures", "regenerate_figures", "write_figures"]

HOOK_KINDS_SWEPT = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class FigureSizes:
    """How much data the figures are computed on (per BBQ category unless noted).

    Attributes:
        probe_per_category: Probe items scored and (if labelled) used for separability.
        dsv_per_category: Contrastive pairs per category for the DSVs.
        eval_per_category: Items scored per steering/ablation setting.
        sweep_layers: Number of candidate layers in the steering sweep (best probe layers).
        alphas: Steering strengths swept.
        categories: BBQ categories (None = all 11).
    """

    probe_per_category: int = 10
    dsv_per_category: int = 5
    eval_per_category: int = 2
    sweep_layers: int = 2
    alphas: tuple[float, ...] = (1.0, 4.0)
    categories: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("probe_per_category", "dsv_per_category", "eval_per_category", "sweep_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if not self.alphas:
            raise ConfigError("alphas must have at least one value.")


SMALL = FigureSizes()
FULL = FigureSizes(40, 10, 10, 4, (0.5, 1.0, 2.0, 4.0))


def build_figures(
    model: Any,
    items: Sequence[Any],
    sizes: FigureSizes = SMALL,
    *,
    scoring: ScoringMode = "letter",
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the analyses and build every figure.

    Returns:
        ``(figures, summary)``: name -> plotly Figure, and a JSON-ready dict of the numbers behind
        them (sizes, label counts, best layers).
    """
    import torch

    import fairlens.analysis as an
    import fairlens.plots as plots
    from fairlens.activations.extraction import Activations, extract_activations
    from fairlens.backend import encode
    from fairlens.data import split_by_template, subsample
    from fairlens.detect.layer_sweep import probe_sweep
    from fairlens.directions import pca_direction
    from fairlens.scoring.letters import build_prompts, score_items
    from fairlens.scoring.metrics import probe_labels

    say = log or (lambda _m: None)
    cats = set(sizes.categories) if sizes.categories else None
    pool = [it for it in items if cats is None or it.category in cats]
    # the steering sweep and the ablations run on a held-out "select" split (the sweep is a
    # selection tool; nothing here is reported as an evaluation result)
    splits = split_by_template(pool, {"probe": 0.6, "dsv": 0.1, "select": 0.3}, seed=seed)
    probe_items = subsample(splits["probe"].items, sizes.probe_per_category, seed=seed)
    eval_items = subsample(splits["select"].items, sizes.eval_per_category, seed=seed)
    tok = model.tokenizer

    say(f"scoring {len(probe_items)} probe items ({scoring})")
    base = score_items(model, probe_items, mode=scoring, progress=progress)
    keep, y = probe_labels(probe_items, base.predictions)
    kept = [probe_items[i] for i in keep]
    groups = [f"{it.category}/{it.question_index}" for it in kept]
    say(f"labels: {int(y.sum())} unbiased / {int((y == 0).sum())} biased")
    seqs = encode(tok, build_prompts(kept, "zero_shot", tok, None))
    say("extracting activations (5 hook kinds + hook_z, all layers)")
    allacts = extract_activations(
        model, seqs, hooks=[*HOOK_KINDS_SWEPT, "z"], uids=[it.uid for it in kept],
        progress=progress, position="last_prompt_token",
    ).with_labels(torch.as_tensor(y))  # fmt: skip

    def subset(pred: Callable[[str], bool]) -> Activations:
        idx = [i for i, h in enumerate(allacts.hook_names) if pred(h)]
        names = tuple(allacts.hook_names[i] for i in idx)
        return Activations(
            allacts.acts[:, idx], names, allacts.uids, allacts.labels, "last_prompt_token"
        )

    res_acts = subset(lambda h: not h.endswith("hook_z"))
    z_acts = subset(lambda h: h.endswith("hook_z"))
    post = subset(lambda h: h.endswith("hook_resid_post"))

    say("probe sweeps and separability metrics")
    hts = an.hook_type_sweep(res_acts, groups=groups, cv_folds=3)
    sweep = probe_sweep(
        post.acts, y, layers=post.layers, hook_names=post.hook_names, groups=groups, cv_folds=3
    )
    metrics = an.separability_metrics(post, groups=groups, sweep=sweep)
    heads = an.head_sweep_from_acts(
        z_acts,
        y,
        n_heads=model.cfg.n_heads,
        n_kv_heads=getattr(model.cfg, "n_key_value_heads", None),
        groups=groups,
    )

    say("DSVs per category")
    dsvs = an.category_dsvs(
        model,
        splits["dsv"].items,
        hooks="resid_post",
        n_per_category=sizes.dsv_per_category,
        progress=progress,
    )
    dsv = an.pooled_dsv(dsvs)
    best = sweep.best_layer()
    best_hook = post.hook_names[post.layers.index(best)]

    figs: dict[str, Any] = {
        "01_probe_accuracy_heatmap": plots.hook_type_heatmap(hts),
        "02_probe_accuracy_curves": plots.layer_curves(hts),
        "03_separability_metrics": plots.metrics_curves(metrics),
        "04_pca_by_label": plots.pca_grid(an.layer_pca(post), items=kept),
        "05_pca_by_category": plots.pca_grid(
            an.layer_pca(post),
            categories=[it.category for it in kept],
            items=kept,
            colour_by="category",
        ),
        "06_dsv_projection_histograms": plots.projection_histograms(
            an.projections(post, dsv.vectors, hook_names=dsv.hook_names, name="DSV"), items=kept
        ),
        "07_probe_projection_histograms": plots.projection_histograms(
            an.projections(post, sweep.coef, name="probe"), items=kept
        ),
        "08_head_probe_accuracy": plots.head_heatmap(heads),
        "09_dsv_cosine_layers": plots.cosine_heatmap(an.layer_cosines(dsv)),
        "10_dsv_cosine_categories": plots.cosine_heatmap(an.category_cosines(dsvs, best_hook)),
        "11_direction_methods": plots.method_cosine_curves(
            an.method_cosines(
                {
                    "DSV": dsv.vectors,
                    "probe": sweep.coef.float(),
                    "PCA": pca_direction(post).vectors,
                },
                hook_names=post.hook_names,
            )
        ),
    }

    say(f"steering sweep on {len(eval_items)} eval items")
    source = an.SteererFactory(sweep, dsv)
    ranked = sorted(sweep.scores, key=lambda s: -s.accuracy)[: sizes.sweep_layers]
    layers = sorted(s.layer for s in ranked)
    ssweep = an.steering_sweep(
        model,
        eval_items,
        source,
        layers=layers,
        alphas=sizes.alphas,
        scoring=scoring,
        progress=progress,
    )
    figs["12_steering_heatmap_acc_ambig"] = plots.sweep_heatmap(ssweep, "acc_ambig")
    figs["13_steering_heatmap_s_amb"] = plots.sweep_heatmap(ssweep, "s_amb")
    figs["14_tradeoff"] = plots.tradeoff_scatter(ssweep)

    say("ablations")
    mlp = f"blocks.{best}.hook_mlp_out"
    mean = an.mean_activation(model, seqs[: min(len(seqs), 16)], mlp)
    effect = an.ablation_effect(
        model,
        eval_items,
        {
            f"DSV out @ L{best}": lambda: an.directional_ablation(
                model, best_hook, dsv.at(best_hook)
            ),
            f"mean MLP @ L{best}": lambda: an.mean_ablation(model, mlp, mean),
            f"zero MLP @ L{best}": lambda: an.zero_ablation(model, mlp),
        },
        scoring=scoring,
        progress=progress,
    )
    figs["15_ablation_effects"] = plots.ablation_bars(effect)
    item = next((it for it in eval_items if it.is_ambiguous), eval_items[0])
    figs["16_token_view"] = plots.token_figure(
        an.token_view(model, item, source.steerer(layer=best))
    )
    summary = {
        "sizes": asdict(sizes),
        "scoring": scoring,
        "n_probe_items": len(probe_items),
        "n_labelled": len(kept),
        "unbiased": int(y.sum()),
        "biased": int((y == 0).sum()),
        "n_eval_items": len(eval_items),
        "best_probe_layer": best,
        "hook_type_sweep": hts.to_dict(),
        "steering_sweep": ssweep.to_dict(),
        "ablation": effect.to_dict(),
    }
    return figs, summary


def write_figures(
    figs: dict[str, Any], out_dir: str | Path, formats: Sequence[str] = ("html", "png", "svg")
) -> list[Path]:
    """Write each figure as ``<name>.<fmt>``; static formats go through kaleido in one batch."""
    bad = sorted(set(formats) - {"html", "png", "svg"})
    if bad:
        raise ConfigError(f"Unknown figure formats {bad}; valid: html, png, svg.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "html" in formats:
        for name, fig in figs.items():
            path = out / f"{name}.html"
            fig.write_html(path, include_plotlyjs="cdn")
            written.append(path)
    static = [f for f in formats if f in ("png", "svg")]
    if static:
        import plotly.io as pio

        names = list(figs)
        try:
            for fmt in static:
                paths: list[str | Path] = [out / f"{n}.{fmt}" for n in names]
                pio.write_images(
                    [figs[n] for n in names],
                    paths,
                    format=fmt,
                    scale=2 if fmt == "png" else 1,
                    width=[figs[n].layout.width for n in names],
                    height=[figs[n].layout.height for n in names],
                )
                written.extend(Path(q) for q in paths)
        except Exception as exc:  # kaleido raises several unrelated types when Chrome is missing
            raise FairlensError(
                f"Static figure export failed ({type(exc).__name__}: {str(exc)[:200]}).",
                "Install kaleido and a Chromium (`pip install kaleido` and `apt-get install -y "
                "chromium`), or pass --formats html.",
            ) from exc
    return written


def regenerate_figures(
    out_dir: str | Path = "figures",
    model: str | Any = "smollm2-135m",
    *,
    data_dir: str | Path | None = None,
    small: bool = True,
    sizes: FigureSizes | None = None,
    scoring: ScoringMode = "letter",
    formats: Sequence[str] = ("html", "png", "svg"),
    threads: int | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load the model and BBQ, build every figure and write it to ``out_dir``.

    Args:
        out_dir: Output folder (created).
        model: Model spec for :func:`fairlens.load_model`, or an already loaded ``HookedTransformer``.
        data_dir: Folder holding ``bbq/`` (default: the usual search, ``$FAIRLENS_DATA_DIR`` first).
        small: Use the CPU-friendly :data:`SMALL` subset (else :data:`FULL`); ``sizes`` overrides.
        scoring: ``"letter"`` (paper) or ``"loglik"``.
        formats: Any of ``"html"``, ``"png"``, ``"svg"``.
        threads: CPU threads (default ``$FAIRLENS_THREADS`` or 1).
        seed: Split and subsample seed.
        progress: Progress bars.
        log: Called with one-line status messages.

    Returns:
        The summary dict (also written as ``summary.json``) with ``files`` and ``seconds`` added.
    """
    import json

    from fairlens.data import load_bbq, resolve_data_dir
    from fairlens.models import load_model
    from fairlens.runtime import set_threads

    if scoring not in ("letter", "loglik"):
        raise ConfigError(f"scoring must be 'letter' or 'loglik', got {scoring!r}.")
    start = time.perf_counter()
    set_threads(threads)
    say = log or (lambda _m: None)
    if isinstance(model, str):
        say(f"loading model {model!r}")
        model = load_model(model)
    chosen = sizes or (SMALL if small else FULL)
    items = load_bbq(resolve_data_dir(data_dir) / "bbq", chosen.categories)
    figs, summary = build_figures(
        model, items, chosen, scoring=scoring, seed=seed, progress=progress, log=say
    )
    say(f"writing {len(figs)} figures to {out_dir}")
    files = write_figures(figs, out_dir, formats)
    summary["files"] = [str(f) for f in files]
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (Path(out_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
