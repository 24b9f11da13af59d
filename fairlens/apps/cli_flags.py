"""The command line's shared flags: data and model, and a run's settings (generated from
RunConfig's stage configs)."""

from __future__ import annotations

import argparse
from typing import Any


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


def _add_run_flags(
    p: argparse.ArgumentParser, sections: tuple[str | None, ...], *, restart: bool = True
) -> None:
    """``--config``, ``--restart`` and one flag per RunConfig key of ``sections`` (generated from
    the stage config dataclasses: :mod:`fairlens.apps.config_keys`)."""
    from fairlens.apps.config_keys import add_flags
    from fairlens.apps.run_config import RunConfig

    p.add_argument("--config", default=None, help="JSON file of RunConfig keys (flags override it)")
    p.add_argument(
        "--num-processes",
        type=int,
        default=1,
        help="share the scoring, extraction and generation batches among N processes on this "
        "machine (started with torch.distributed.run; the results equal one process's). Under "
        "accelerate launch / torchrun leave it at 1: their processes are used",
    )
    if restart:
        p.add_argument(
            "--restart",
            action="store_true",
            help="delete the run folder first (default: resume a run with the same fit settings)",
        )
    for section in sections:
        group = p.add_argument_group(f"{section or 'run'} settings")
        specs = RunConfig.config_keys((section,))
        if section == "search" and "panel" not in sections:
            specs = [s for s in specs if s.key != "search"]  # `fairlens search` always searches
        add_flags(group, specs)


def _run_config(args: argparse.Namespace, **fixed: Any) -> Any:
    """A RunConfig from ``--config``, ``--preset`` and the flags (flags win)."""
    from fairlens.apps.config_keys import flag_values
    from fairlens.apps.flag_conflicts import check_flags
    from fairlens.apps.run_config import RunConfig

    typed = flag_values(args, RunConfig.config_keys())
    overrides = {**typed, **fixed}
    if args.config:
        cfg = RunConfig.from_file(args.config, **overrides)
    else:
        cfg = RunConfig.from_preset(overrides.pop("preset", None), **overrides)
    check_flags(cfg, set(typed) - set(fixed))
    return cfg
