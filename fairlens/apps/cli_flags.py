"""The command line's shared flags: data and model, FairSteer fitting and the steering search."""

from __future__ import annotations

import argparse


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding bbq/ (default: $FAIRLENS_DATA_DIR, ./data, ../shared/data, the cache)",
    )


def _add_model(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="embedded name, .gguf path, HF model dir or TL model name",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: $FAIRLENS_THREADS or 1)"
    )


def _floats(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _add_fit_flags(p: argparse.ArgumentParser) -> None:
    """Flags shared by ``run`` and ``search``: data, splits, the fit and the selection."""
    from fairlens.apps.run_config import PRESETS
    from fairlens.detect.gates import GATES
    from fairlens.directions import DIRECTION_METHODS

    p.add_argument(
        "--config", default=None, help="JSON file with RunConfig fields (flags override it)"
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="named settings: 'paper' = the FairSteer paper's recipe (BAD data zero- and 8-shot "
        "plus MMLU anchors, DSV, layer by BBQ accuracy over all layers, alpha=1 absolute); "
        "meant for a GPU, use --limit on a CPU",
    )
    p.add_argument("--name", default=None, help="run folder name (default smollm2-demo)")
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=None)
    _add_data_dir(p)
    p.add_argument("--categories", nargs="*", default=None)
    p.add_argument("--probe-per-category", type=int, default=None)
    p.add_argument(
        "--dsv-per-category", type=int, default=None, help="contrastive pairs per category"
    )
    p.add_argument("--select-per-category", type=int, default=None)
    p.add_argument("--eval-per-category", type=int, default=None)
    p.add_argument(
        "--limit", type=int, default=None, help="cap on items per category in every split"
    )
    p.add_argument("--scoring", choices=["letter", "loglik"], default=None)
    p.add_argument(
        "--format", dest="prompt_format", choices=["zero_shot", "few_shot", "chat"], default=None
    )
    p.add_argument(
        "--layer", type=int, default=None, help="fixed steering layer (skip layer selection)"
    )
    p.add_argument(
        "--selection",
        choices=["search", "bbq", "probe"],
        default=None,
        help="how layer and alpha are chosen on the select split: search (default: highest "
        "ambiguous accuracy with disambiguated accuracy >= base - margin), bbq (the reference: "
        "overall accuracy at a fixed alpha), probe (best probe accuracy; comparison only)",
    )
    p.add_argument("--direction", choices=list(DIRECTION_METHODS), default=None)
    p.add_argument("--gate", choices=list(GATES), default=None)
    p.add_argument("--scope", choices=["colon", "band", "all"], default=None)
    p.add_argument("--band-width", type=int, default=None)
    p.add_argument(
        "--alpha", type=_floats, default=None, help="fixed strength (skips the alpha search)"
    )
    p.add_argument("--alphas", nargs="+", type=_floats, default=None, help="strengths searched")
    p.add_argument("--alpha-unit", choices=["relative", "absolute"], default=None)
    p.add_argument("--tau", type=_floats, default=None)
    p.add_argument(
        "--margin",
        type=_floats,
        default=None,
        help="largest drop of disambiguated accuracy below base accepted (fraction, default 0.02)",
    )
    p.add_argument(
        "--mmlu-anchors",
        type=int,
        default=None,
        help="MMLU questions added as unbiased BAD anchors",
    )
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out-dir", default=None)
    p.add_argument(
        "--restart",
        action="store_true",
        help="delete the run folder first (default: resume a run with the same fit settings)",
    )


def _add_search_flags(p: argparse.ArgumentParser) -> None:
    from fairlens.detect.gates import GATES
    from fairlens.directions import DIRECTION_METHODS
    from fairlens.search.space import SCOPES

    p.add_argument(
        "--search-directions",
        nargs="+",
        choices=list(DIRECTION_METHODS),
        default=None,
        help="direction methods in the grid (default: all)",
    )
    p.add_argument(
        "--search-layer-stride", type=int, default=None, help="every k-th layer (default 1)"
    )
    p.add_argument(
        "--search-alphas", nargs="+", type=_floats, default=None, help="relative strengths"
    )
    p.add_argument("--search-scopes", nargs="+", choices=list(SCOPES), default=None)
    p.add_argument(
        "--search-band-directions",
        nargs="+",
        choices=list(DIRECTION_METHODS),
        default=None,
        help="directions also searched as bands (default: dsv probe)",
    )
    p.add_argument("--search-gates", nargs="+", choices=list(GATES), default=None)
    p.add_argument("--search-taus", nargs="+", type=_floats, default=None)
    p.add_argument(
        "--search-patching",
        nargs="*",
        choices=["select", "eval"],
        default=None,
        help="splits with the instruction-patching ceiling (default both; each costs one "
        "instructed pass over the split)",
    )
