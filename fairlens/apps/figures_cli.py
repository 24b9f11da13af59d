"""The ``fairlens figures`` command: the figures of a run, from the run's own fit."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from fairlens.apps.figures import FULL, SMALL, FigureSizes, regenerate_figures


def _cmd_figures(args: argparse.Namespace) -> int:
    from fairlens.apps.cli_flags import _run_config
    from fairlens.apps.config_keys import flag_values, section_keys

    cfg = _run_config(args)
    base = FULL if args.full else SMALL
    sizes = replace(base, **flag_values(args, section_keys(FigureSizes, None)))

    def log(msg: str) -> None:
        sys.stderr.write(f"[figures] {msg}\n")

    summary = regenerate_figures(
        cfg, args.figures_dir, sizes, formats=args.formats, progress=not args.quiet, log=log
    )
    sys.stdout.write(
        f"wrote {len(summary['files'])} files to {args.figures_dir} in {summary['seconds']} s "
        f"(run {summary['run']['folder']}: layer {summary['fairsteer']['layer']}, best probe "
        f"layer {summary['best_probe_layer']})\n"
    )
    return 0


def register_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``figures`` subcommand to an ``argparse`` subparsers object; returns its parser."""
    from fairlens.apps.cli_flags import _add_run_flags
    from fairlens.apps.config_keys import add_flags, section_keys

    p = subparsers.add_parser(
        "figures",
        help="the paper figures of a run (HTML + PNG/SVG), from the run's own fit",
        description="Resume the fit of the run named by the flags (the same flags and --config as "
        "`fairlens run`; a run folder with the same data and fit settings is reused, otherwise "
        "FairSteer is fitted and saved there), run the separability, geometry, steering and "
        "ablation analyses on it and write every figure to --figures-dir.",
    )
    p.add_argument("--figures-dir", default="figures", help="output folder (default: figures)")
    p.add_argument(
        "--formats", nargs="+", choices=["html", "png", "svg"], default=["html", "png", "svg"],
        help="files to write per figure",
    )  # fmt: skip
    p.add_argument("--full", action="store_true", help="larger analysis sizes (slow on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_flags(p.add_argument_group("figure sizes"), section_keys(FigureSizes, None))
    _add_run_flags(p, (None, "data", "fit"), restart=False)
    p.set_defaults(func=_cmd_figures)
    return p
