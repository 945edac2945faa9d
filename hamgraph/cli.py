"""The `hamgraph` command. The only place that turns typed errors into one line and an exit code."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hamgraph import __version__
from hamgraph.errors import HamgraphError, UserInputError
from hamgraph.preemption import EXIT_PREEMPTED, Preempted, handle_signals

EXIT_USAGE = 2  # bad input: config, names, values, missing files
EXIT_FAILURE = 1  # anything else hamgraph reports on purpose
# EXIT_PREEMPTED (75): SIGTERM / SIGUSR1 made `run` / `sweep` checkpoint and stop; rerun it

log = logging.getLogger("hamgraph")


def _execution_options(command: argparse.ArgumentParser) -> None:
    """Options shared by `run` and `sweep`: how runs are executed, not what they compute."""
    command.add_argument(
        "--pack", default="auto",
        help="train runs that share dataset, model and params as one vectorized model: "
        "auto (sized from free memory) | off | N runs per pack (default: auto)",
    )
    command.add_argument(
        "--rerun-stale", action="store_true",
        help="retrain finished runs that were recorded by another hamgraph version",
    )
    command.add_argument(
        "--deterministic", action="store_true",
        help="deterministic CUDA kernels (identical reruns, slower; CPU is always deterministic)",
    )
    command.add_argument(
        "--track", action="append", default=[], metavar="NAME",
        help="log every run to an experiment tracker: tensorboard | wandb (repeat or comma "
        "list; W&B runs offline unless WANDB_MODE=online)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hamgraph",
        description="Benchmark GNNs with Adam, HAM and nHAM: grids, sweeps and paper tables.",
    )
    parser.add_argument("--version", action="version", version=f"hamgraph {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="train every run of a YAML grid (resumes by default)")
    run.add_argument("config", type=Path, help="grid YAML, e.g. configs/quickstart.yaml")
    run.add_argument("--out", type=Path, help="result dir (default: results/<name>/)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run.add_argument(
        "--fresh", action="store_true", help="start over; old results are moved aside, not deleted"
    )
    _execution_options(run)
    run.add_argument(
        "--devices", metavar="LIST",
        help="one worker process per device, e.g. cuda:0,cuda:1 (instead of --device)",
    )
    run.add_argument(
        "--workers", default="1", metavar="N",
        help="worker processes per device (or on the CPU), cores/N threads each (default: 1)",
    )
    run.add_argument(
        "--shard", metavar="I/N",
        help="train only shard I of N (0 <= I < N) of the grid, e.g. one Slurm array task",
    )

    datasets = sub.add_parser(
        "datasets", help="list every registered dataset (and installed dataset plug-ins)"
    )
    datasets.add_argument("names", nargs="*", help="only these datasets")

    sub.add_parser("models", help="list the built-in models and installed model plug-ins")

    report = sub.add_parser(
        "report", help="tables (CSV / LaTeX / Markdown), verdict, figures, report.html"
    )
    report.add_argument("paths", nargs="+", type=Path, help="result or sweep output dirs")
    report.add_argument(
        "--format", default="csv,latex,md,html",
        help="comma list of csv,latex,md,html (default: all)",
    )
    report.add_argument("--out", type=Path, help="output dir (default: <first path>/report/)")
    report.add_argument(
        "--metric", choices=("test", "val"), default="test",
        help="what the main tables show: test = the test metric at the best-validation epoch "
        "(default); val = the best validation metric (as the HAM paper's graph tables)",
    )
    report.add_argument(
        "--compare", metavar="SOURCE",
        help="put published results beside ours: a shipped source (ham-paper) or the path of a "
        "CSV in the same format",
    )
    report.add_argument(
        "--verdict", action="store_true",
        help="add the verdict across workloads: every HAM / nHAM setting against its baseline "
        "(win/tie/loss, Wilcoxon, bootstrap CIs, P(improvement), ranks, tuning budget, "
        "time-to-target); needs >= 3 comparable workloads",
    )
    report.add_argument(
        "--figures", choices=("none", "png", "all"), default="png",
        help="none: tables only (fast) | png: PNG figures for report.html (default) | all: PNG "
        "and PDF",
    )

    check = sub.add_parser(
        "check", help="read every file of result dirs; report damaged, stale, orphaned, "
        "duplicated files (exit 0: clean, 1: findings, 2: bad input)",
    )
    check.add_argument("paths", nargs="+", type=Path, help="result dirs of run or sweep")
    check.add_argument(
        "--storage", metavar="URL",
        help="the sweep's Optuna RDB storage to check too, once, with the first dir (default: "
        "each dir's optuna-journal.log, if any)",
    )
    check.add_argument(
        "--repair", action="store_true",
        help="set damaged and orphaned files aside under <dir>/damaged/, rebuild derived files, "
        "remove dead temp files and claims, fail trials of dead workers (run it while nothing "
        "else writes the dir)",
    )

    sweep = sub.add_parser("sweep", help="Optuna sweep over alpha, beta, any setting (resumable)")
    sweep.add_argument("sweep_file", type=Path, help="sweep YAML, e.g. sweeps/smoke.yaml")
    sweep.add_argument("--storage", help="Optuna RDB URL or journal:PATH (default: under --out)")
    sweep.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    sweep.add_argument("--trials", type=int, help="stop after this many trials (per study)")
    sweep.add_argument("--out", type=Path, help="output dir (default: results/<sweep name>/)")
    sweep.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    sweep.add_argument(
        "--batch", type=int,
        help="trials asked at once per worker, their runs trained together "
        "(default: search.batch, else 8 for tpe, the cells left / workers for grid)",
    )
    _execution_options(sweep)
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    if getattr(args, "deterministic", False):
        from hamgraph.train import use_deterministic_algorithms

        use_deterministic_algorithms(True)
    if args.command == "run":
        from hamgraph.cells import format_summary
        from hamgraph.grid import run_grid
        from hamgraph.runner import parse_pack
        from hamgraph.scaleout import parse_shard, parse_workers

        outcome = run_grid(
            args.config, out=args.out, device=args.device, fresh=args.fresh,
            pack=parse_pack(args.pack), rerun_stale=args.rerun_stale, track=args.track,
            shard=None if args.shard is None else parse_shard(args.shard),
            devices=args.devices, workers=parse_workers(args.workers),
        )
        sys.stdout.write(format_summary(outcome.summary))
        return EXIT_FAILURE if outcome.failed else 0
    if args.command == "datasets":
        from hamgraph.data.catalog import format_datasets

        sys.stdout.write(format_datasets(args.names))
        if not args.names:
            from hamgraph.plugins import format_installed

            sys.stdout.write(format_installed("dataset"))
        return 0
    if args.command == "models":
        from hamgraph.models import MODEL_DISPLAY, MODEL_TASK
        from hamgraph.plugins import format_installed

        lines = ["model    task   display"]
        lines += [f"{name:<8} {task:<6} {MODEL_DISPLAY[name]}" for name, task in MODEL_TASK.items()]
        sys.stdout.write("\n".join(lines) + "\n" + format_installed("model"))
        return 0
    if args.command == "report":
        from hamgraph.report import write_report

        formats = [f.strip() for f in args.format.split(",") if f.strip()]
        report = write_report(
            args.paths, formats=formats, out=args.out, metric=args.metric, compare=args.compare,
            verdict=args.verdict, figures=args.figures,
        )
        compared = f", beside {report.compare_source}" if report.compare_source else ""
        print(
            f"report: {report.runs} runs ({report.ok} ok, {report.failed} failed) from "
            f"{len(report.inputs)} dir(s){compared} -> {report.out}"
        )
        for path in report.written:
            print(f"  wrote {path}")
        for note in report.notes:
            print(f"  note: {note}")
        return 0
    if args.command == "check":
        return _check(args.paths, args.storage, args.repair)
    if args.command == "sweep":
        from hamgraph.runner import parse_pack
        from hamgraph.sweep import format_best, run_sweep

        swept = run_sweep(
            args.sweep_file,
            storage=args.storage,
            workers=args.workers,
            trials=args.trials,
            out=args.out,
            device=args.device,
            pack=parse_pack(args.pack),
            batch=args.batch,
            rerun_stale=args.rerun_stale,
            track=args.track,
            deterministic=args.deterministic,
        )
        sys.stdout.write(format_best(swept.best))
        return 0 if swept.finished else EXIT_FAILURE
    raise AssertionError(args.command)  # argparse only accepts the commands above


def _check(paths: Sequence[Path], storage: str | None, repair: bool) -> int:
    """`hamgraph check`: one line per finding, one summary line per dir. Exit 0 when clean (or,
    with --repair, when everything found was repaired), 1 when something is left."""
    from hamgraph.check import check_dir

    # the storage is shared by the dirs: checked (and repaired) once, with the first
    outcomes = [check_dir(path, storage=storage if i == 0 else None, repair=repair)
                for i, path in enumerate(paths)]
    for outcome in outcomes:
        for f in outcome.findings:
            done = f" [repaired: {f.repaired}]" if f.repaired else ""
            print(f"{f.kind}: {f.path}: {f.problem}{done}")
        counts = ", ".join(f"{n} {kind}" for kind, n in outcome.counts().items() if n)
        if outcome.clean:
            print(f"check: {outcome.root}: clean ({outcome.files} files read)")
        else:
            left = len(outcome.unrepaired)
            tail = f"; {len(outcome.findings) - left} repaired, {left} left" if repair else ""
            print(f"check: {outcome.root}: {len(outcome.findings)} finding(s) ({counts}) in "
                  f"{outcome.files} files read{tail}")
    return EXIT_FAILURE if any(o.unrepaired for o in outcomes) else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command in ("run", "sweep"):  # SIGTERM / SIGUSR1: checkpoint, exit 75
            with handle_signals():
                return _dispatch(args)
        return _dispatch(args)
    except Preempted:
        print(
            f"hamgraph: stopped on request (SIGTERM/SIGUSR1) after checkpointing; exit code "
            f"{EXIT_PREEMPTED}; rerun the same command to continue",
            file=sys.stderr,
        )
        return EXIT_PREEMPTED
    except UserInputError as exc:
        print(f"hamgraph: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except HamgraphError as exc:
        print(f"hamgraph: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("hamgraph: interrupted; finished results are kept, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
