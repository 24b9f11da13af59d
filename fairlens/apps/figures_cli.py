"""The fairlens figures command: regenerate the paper figures from the CLI."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from fairlens.apps.figures import FULL, SMALL, FigureSizes, regenerate_figures


def _cmd_figures(args: argparse.Namespace) -> int:
    import sys

    sizes = FigureSizes(
        probe_per_category=args.probe_per_category
        or (SMALL if args.small else FULL).probe_per_category,
        dsv_per_category=args.dsv_per_category or (SMALL if args.small else FULL).dsv_per_category,
        eval_per_category=args.eval_per_category
        or (SMALL if args.small else FULL).eval_per_category,
        sweep_layers=args.sweep_layers or (SMALL if args.small else FULL).sweep_layers,
        alphas=tuple(args.alphas) if args.alphas else (SMALL if args.small else FULL).alphas,
        categories=tuple(args.categories) if args.categories else None,
    )

    def log(msg: str) -> None:
        sys.stderr.write(f"[figures] {msg}\n")

    summary = regenerate_figures(
        args.out_dir, args.model, data_dir=args.data_dir, sizes=sizes, scoring=args.scoring,
        formats=args.formats, threads=args.threads, seed=args.seed, progress=not args.quiet, log=log,
    )  # fmt: skip
    sys.stdout.write(
        f"wrote {len(summary['files'])} files to {args.out_dir} in {summary['seconds']} s "
        f"(best probe layer {summary['best_probe_layer']})\n"
    )
    return 0


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``figures`` subcommand to an ``argparse`` subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "figures",
        help="regenerate the paper figures (HTML + PNG/SVG) on a small BBQ subset",
        description="Run the separability, geometry, steering and ablation analyses on a small BBQ "
        "subset and write every figure to --out-dir as HTML and static PNG/SVG.",
    )
    p.add_argument("--out-dir", default="figures", help="output folder (default: figures)")
    p.add_argument(
        "--model", default="smollm2-135m", help="embedded name, .gguf path, HF dir or TL name"
    )
    p.add_argument(
        "--data-dir", default=None, help="folder holding bbq/ (default: $FAIRLENS_DATA_DIR, ...)"
    )
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: $FAIRLENS_THREADS or 1)"
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--small", dest="small", action="store_true", default=True, help="CPU subset (default)"
    )
    size.add_argument(
        "--full", dest="small", action="store_false", help="larger subset (slow on CPU)"
    )
    p.add_argument("--probe-per-category", type=int, default=None, help="probe items per category")
    p.add_argument("--dsv-per-category", type=int, default=None, help="DSV pairs per category")
    p.add_argument("--eval-per-category", type=int, default=None, help="eval items per category")
    p.add_argument("--sweep-layers", type=int, default=None, help="layers in the steering sweep")
    p.add_argument("--alphas", type=float, nargs="+", default=None, help="steering strengths swept")
    p.add_argument("--categories", nargs="+", default=None, help="BBQ categories (default: all)")
    p.add_argument(
        "--scoring", choices=["letter", "loglik"], default="letter", help="answer scoring"
    )
    p.add_argument(
        "--formats", nargs="+", choices=["html", "png", "svg"], default=["html", "png", "svg"],
        help="files to write per figure",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="split/subsample seed")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_figures)
    return p
