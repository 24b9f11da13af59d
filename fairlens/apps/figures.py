"""The paper figures of a run: every analysis on the run's own fit, written as HTML + PNG/SVG.

:func:`regenerate_figures` is what ``fairlens figures`` runs. It takes the run's settings
(:class:`~fairlens.apps.run_config.RunConfig`: the same flags and ``--config`` as ``fairlens run``),
resumes the run folder's FitData and FairSteer (or fits them with ``FairSteer.fit`` and saves them,
exactly as ``fairlens run`` would), so the figures show the fit the report describes: its BAD
labels (the model's own answers from the fit pass; nothing is scored twice), its probe sweep, its
DSV, its layer and strength. On top it extracts the other hook kinds and ``hook_z`` of the
labelled probe items (one analysis pass), per-category DSVs, and scores the selection split under
the steering sweep and the ablations (the eval split is never touched). Static images are written
with plotly's exporter (kaleido, which needs a Chrome/Chromium: ``apt-get install chromium`` on
Debian); ``formats=("html",)`` skips them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fairlens.errors import ConfigError, FairlensError
from fairlens.model_types import HookedModel
from fairlens.runtime import write_atomic

if TYPE_CHECKING:
    from fairlens.apps.run_config import RunConfig
    from fairlens.data import BBQItem
    from fairlens.fairsteer.estimator import FairSteer
    from fairlens.steer.fit_data import FitData

__all__ = ["FigureSizes", "build_figures", "figures_for_run", "regenerate_figures", "write_figures"]

HOOK_KINDS_SWEPT = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")


@dataclass(frozen=True)
class FigureSizes:
    """How much the figures compute on top of the run's fit.

    Attributes:
        steer_items_per_category: Selection-split items per category scored under every steering
            sweep setting and ablation.
        category_pairs: Contrastive pairs per category for the per-category DSVs (their cosines).
        sweep_layers: Best probe layers in the steering sweep (the run's layer is always added).
        sweep_alphas: Strengths of the steering sweep, in the run's alpha unit (None: the run's
            alphas).
    """

    steer_items_per_category: int = 2
    category_pairs: int = 5
    sweep_layers: int = 2
    sweep_alphas: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        for name in ("steer_items_per_category", "category_pairs", "sweep_layers"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name} must be >= 1, got {getattr(self, name)}.",
                    f"pass --{name.replace('_', '-')} 1 or more.",
                )
        if self.sweep_alphas is not None and not self.sweep_alphas:
            raise ConfigError(
                "sweep_alphas must have at least one value.",
                "pass one or more strengths to --sweep-alphas, or leave it unset.",
            )


SMALL = FigureSizes()
FULL = FigureSizes(10, 10, 4, None)


def build_figures(
    model: HookedModel,
    fs: FairSteer,
    fit: FitData,
    select_items: Sequence[BBQItem],
    dsv_items: Sequence[BBQItem],
    sizes: FigureSizes = SMALL,
    *,
    seed: int = 42,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the analyses on a fitted FairSteer and its fit data, and build every figure.

    Args:
        model: The ``HookedTransformer`` of the model ``fs`` was fitted on (e.g.
            :func:`fairlens.models.hooked_twin` of the run's model).
        fs: The fitted FairSteer (its gate sweep, DSV, layer and strength are shown).
        fit: Its fit data (probe items, the model's answers to them, prompt format and shots).
        select_items: The selection split (the steering sweep and ablations run on a subsample).
        dsv_items: The DSV split (per-category DSVs).
        sizes: What is computed on top of the fit.
        seed: Subsample seed (the run's).

    Returns:
        ``(figures, summary)``: name -> plotly Figure, and a JSON-ready dict of the numbers behind
        them (sizes, label counts, layers, the sweeps).
    """
    import torch

    import fairlens.analysis as an
    import fairlens.plots as plots
    from fairlens.activations.extraction import Activations, extract_activations
    from fairlens.backend import resolve_tokenizer
    from fairlens.data import subsample
    from fairlens.detect.gates import gate_labels
    from fairlens.directions import pca_direction
    from fairlens.scoring.letters import prompt_tokens

    say = log or (lambda _m: None)
    if not hasattr(fs, "layer_"):
        raise ConfigError("the FairSteer is not fitted.", "fit it first (FairSteer.fit).")
    if not select_items:
        raise ConfigError("no selection items for the steering sweep.", "give the select split.")
    eval_items = subsample(list(select_items), sizes.steer_items_per_category, seed=seed)
    tok = resolve_tokenizer(model)
    cfg = fs.config
    keep, y = gate_labels("bad", fit.probe_items, fit.predictions)  # the fit's BAD labels
    kept = [fit.probe_items[i] for i in keep]
    if len(set(y.tolist())) < 2:
        raise ConfigError(
            f"the BAD labels of the {len(kept)} labelled probe items have one class only.",
            "use more probe items (--probe-per-category).",
        )
    groups = ["/".join(it.template_id) for it in kept]
    say(f"BAD labels of the fit: {int(y.sum())} unbiased / {int((y == 0).sum())} biased")
    seqs = prompt_tokens(model, kept, fit.prompt_format, shots=fit.shots, tokenizer=tok)
    say("extracting activations (5 hook kinds + hook_z, all layers)")
    allacts = extract_activations(
        model, seqs, hooks=[*HOOK_KINDS_SWEPT, "z"], uids=[it.uid for it in kept],
        progress=progress, position="last_prompt_token",
    ).with_labels(torch.as_tensor(y))  # fmt: skip
    sweep = fs.gates_[cfg.gate]  # the run's probe of every layer

    def subset(pred: Callable[[str], bool]) -> Activations:
        idx = [i for i, h in enumerate(allacts.hook_names) if pred(h)]
        names = tuple(allacts.hook_names[i] for i in idx)
        return Activations(
            allacts.acts[:, idx], names, allacts.uids, allacts.labels, "last_prompt_token"
        )

    res_acts = subset(lambda h: not h.endswith("hook_z"))
    z_acts = subset(lambda h: h.endswith("hook_z"))
    post = subset(lambda h: h in sweep.hook_names)

    say("probe sweeps over hook kinds and separability metrics")
    hts = an.hook_type_sweep(res_acts, groups=groups, cv_folds=3)
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
        dsv_items,
        hooks=cfg.hook_kind,
        n_per_category=sizes.category_pairs,
        progress=progress,
    )
    dsv = fs.dsv_  # the run's steering direction, every fitted layer
    layer = fs.layer_
    hook = fs.hook_name_

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
        "10_dsv_cosine_categories": plots.cosine_heatmap(an.category_cosines(dsvs, hook)),
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

    best = sweep.best_layer()
    ranked = [best] + [s.layer for s in sorted(sweep.scores, key=lambda s: -s.accuracy)]
    layers = sorted({*list(dict.fromkeys(ranked))[: sizes.sweep_layers], layer})
    alphas = sizes.sweep_alphas or cfg.alphas
    say(f"steering sweep on {len(eval_items)} selection items (layers {layers}, alphas {alphas})")
    ssweep = an.steering_sweep(
        model,
        eval_items,
        fs,
        layers=layers,
        alphas=alphas,
        scoring=cfg.scoring,
        prompt_format=fit.prompt_format,
        progress=progress,
    )
    figs["12_steering_heatmap_acc_ambig"] = plots.sweep_heatmap(ssweep, "acc_ambig")
    figs["13_steering_heatmap_s_amb"] = plots.sweep_heatmap(ssweep, "s_amb")
    figs["14_tradeoff"] = plots.tradeoff_scatter(ssweep)

    say("ablations")
    mlp = f"blocks.{layer}.hook_mlp_out"
    mean = an.mean_activation(model, seqs[: min(len(seqs), 16)], mlp)
    effect = an.ablation_effect(
        model,
        eval_items,
        {
            f"DSV out @ L{layer}": lambda: an.directional_ablation(model, hook, dsv.at(hook)),
            f"mean MLP @ L{layer}": lambda: an.mean_ablation(model, mlp, mean),
            f"zero MLP @ L{layer}": lambda: an.zero_ablation(model, mlp),
        },
        scoring=cfg.scoring,
        progress=progress,
    )
    figs["15_ablation_effects"] = plots.ablation_bars(effect)
    item = next((it for it in eval_items if it.is_ambiguous), eval_items[0])
    figs["16_token_view"] = plots.token_figure(an.token_view(model, item, fs.steerer()))
    summary = {
        "sizes": asdict(sizes),
        "fairsteer": {
            "layer": layer,
            "alpha": fs.alpha_,
            "alpha_unit": cfg.alpha_unit,
            "direction": cfg.direction,
            "gate": cfg.gate,
            "tau": cfg.tau,
            "scoring": cfg.scoring,
            "seed": cfg.seed,
        },
        "n_probe_items": len(fit.probe_items),
        "n_labelled": len(kept),
        "unbiased": int(y.sum()),
        "biased": int((y == 0).sum()),
        "n_steer_items": len(eval_items),
        "best_probe_layer": sweep.best_layer(),
        "hook_type_sweep": hts.to_dict(),
        "steering_sweep": ssweep.to_dict(),
        "ablation": effect.to_dict(),
    }
    return figs, summary


def figures_for_run(
    cfg: RunConfig,
    sizes: FigureSizes = SMALL,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures of run ``cfg``: its fit resumed from the run folder (or fitted and saved there,
    as ``fairlens run`` does), then :func:`build_figures`. The summary records the run."""
    from fairlens.apps.run_prepare import _prepare
    from fairlens.models import hooked_twin

    say = log or (lambda _m: None)
    prep = _prepare(cfg, progress, say, restart=False)
    say("building the HookedTransformer twin for the analyses")
    model = hooked_twin(prep.hf_model, prep.tokenizer)
    figs, summary = build_figures(
        model,
        prep.fs,
        prep.fit,
        prep.chosen["select"],
        prep.chosen["dsv"],
        sizes,
        seed=cfg.fit.seed,
        progress=progress,
        log=say,
    )
    summary["run"] = {"folder": str(prep.rundir.path), "config": cfg.flat()}
    return figs, summary


def _check_formats(formats: Sequence[str]) -> None:
    bad = sorted(set(formats) - {"html", "png", "svg"})
    if bad:
        raise ConfigError(f"Unknown figure formats {bad}.", "use some of: html, png, svg.")


def write_figures(
    figs: dict[str, Any], out_dir: str | Path, formats: Sequence[str] = ("html", "png", "svg")
) -> list[Path]:
    """Write each figure as ``<name>.<fmt>``; static formats go through kaleido in one batch."""
    _check_formats(formats)
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
    cfg: RunConfig,
    out_dir: str | Path = "figures",
    sizes: FigureSizes = SMALL,
    *,
    formats: Sequence[str] = ("html", "png", "svg"),
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Build the figures of run ``cfg`` (:func:`figures_for_run`) and write them to ``out_dir``.

    Returns:
        The summary dict (also written as ``summary.json``) with ``files`` and ``seconds`` added.
    """
    import json

    start = time.perf_counter()
    _check_formats(formats)  # before any model work
    say = log or (lambda _m: None)
    figs, summary = figures_for_run(cfg, sizes, progress=progress, log=say)
    say(f"writing {len(figs)} figures to {out_dir}")
    files = write_figures(figs, out_dir, formats)
    summary["files"] = sorted(f.name for f in files)  # in out_dir
    summary["seconds"] = round(time.perf_counter() - start, 1)
    write_atomic(Path(out_dir) / "summary.json", json.dumps(summary, indent=2))
    return summary
