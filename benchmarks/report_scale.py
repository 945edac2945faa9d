"""Time `hamgraph report` on synthetic result stores of about 100 / 1,000 / 5,000 runs.

    .venv/bin/python benchmarks/report_scale.py [--sizes 100,1000,5000] [--dir DIR]
        [--figures none,png] [--processes 1] [--epochs 50]

Each store is written through `ResultStore.add` (records, histories with `train_seconds`,
runs.csv), like `hamgraph run` leaves it: workloads (dataset x model) x (Adam + 12 HAM + 12 nHAM
(alpha, beta) cells) x 5 runs; 100 runs: 4 workloads x (Adam + 2 + 2 cells) x 5 runs; 1,000: 8
workloads; the 5,000-run store is the paper's size (13 datasets x 3 models x 25 cells x 5 runs
= 4,875 runs). Stores are kept under --dir (default: a folder in the system temp
dir) and reused by later calls, since writing 5,000 runs through the store takes minutes.
Every report goes to a fresh output dir (no figure cache), in this process (`--processes 1`:
one core, as the issue's target says), and prints the seconds per stage (read, tables,
verdict, render, figures) as a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
import zlib
from pathlib import Path

from hamgraph.report import write_report
from hamgraph.specs import (
    EpochStats,
    HamSettings,
    NodeParams,
    OptimizerSpec,
    RunResult,
    RunSpec,
)
from hamgraph.store import ResultStore

DATASETS = ("cora", "citeseer", "pubmed", "wikics", "coauthor-cs", "coauthor-physics",
            "amazon-computer", "amazon-photo", "amazon-ratings", "squirrel", "chameleon",
            "roman-empire", "tolokers")  # fmt: skip
MODELS = ("gcn", "gat", "sage")
ALPHAS = (1.0, 10.0, 50.0, 100.0)
BETAS = (0.0, 0.01, 0.1)
RUNS = 5


def _optimizers(small: bool) -> list[OptimizerSpec]:
    """Adam and the HAM / nHAM (alpha, beta) grid (2 + 2 cells for a small store)."""
    out = [OptimizerSpec(base="adam")]
    alphas, betas = ((10.0, 100.0), (0.1,)) if small else (ALPHAS, BETAS)
    for sign in (1, -1):
        for alpha in alphas:
            for beta in betas:
                out.append(OptimizerSpec(base="adam",
                                         ham=HamSettings(alpha=sign * alpha, beta=beta)))
    return out


def _plan(size: int) -> tuple[list[tuple[str, str]], list[OptimizerSpec]]:
    """Workloads and optimizers of a store of about `size` runs (at least 4 workloads)."""
    small = size < 25 * RUNS * 4
    optimizers = _optimizers(small)
    count = max(4, round(size / (len(optimizers) * RUNS)))
    pairs = [(d, m) for m in MODELS for d in DATASETS]
    return pairs[:count], optimizers


def _result(spec: RunSpec, level: float, epochs: int) -> RunResult:
    """A run whose validation rises to `level`; HAM a little faster per epoch than Adam."""
    per_epoch = 0.02 if spec.optimizer.ham is None else 0.015
    noise = 0.003 * math.sin(7 * spec.run + zlib.crc32(spec.key().encode()) % 11)
    final = level + noise
    history = [
        EpochStats(epoch=e, loss=1.0 / e, train=final, val=final * (1 - 0.5 ** (e / 5)),
                   test=final * (1 - 0.5 ** (e / 5)) - 0.01, lr=0.01, sign_flips=100 // e,
                   mean_abs_weight=0.1, train_seconds=per_epoch * e)
        for e in range(1, epochs + 1)
    ]  # fmt: skip
    best = max(range(epochs), key=lambda i: history[i].val)
    return RunResult(spec=spec, metric="accuracy", status="ok", val=history[best].val,
                     test=history[best].test, best_epoch=best + 1, epochs=epochs,
                     seconds=per_epoch * epochs, history=history,
                     provenance={"hamgraph_version": "bench", "device": "cpu"})  # fmt: skip


def write_store(root: Path, size: int, epochs: int) -> int:
    """A synthetic store of about `size` runs (kept when it exists); -> its run count."""
    store = ResultStore(root)
    if (root / "COMPLETE").is_file():
        return len(store.finished_keys())
    shutil.rmtree(root, ignore_errors=True)
    store.prepare()
    params = NodeParams(lr=0.01, hidden=16, layers=2, dropout=0.5, weight_decay=5e-4,
                        epochs=epochs)  # fmt: skip
    count = 0
    workloads, optimizers = _plan(size)
    for w, (dataset, model) in enumerate(workloads):
        base = 0.6 + 0.01 * (w % 20)
        for opt in optimizers:
            gain = 0.0 if opt.ham is None else 0.004 * math.log10(abs(opt.ham.alpha) + 1) - 0.1 * (
                opt.ham.beta)  # fmt: skip
            for run in range(RUNS):
                spec = RunSpec(dataset, model, params, opt, run=run, seed=run)
                store.add(_result(spec, base + gain, epochs))
                count += 1
    (root / "COMPLETE").write_text(str(count))
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "hamgraph-scale")
    parser.add_argument("--figures", default="none,png", help="comma list of none,png,all")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        root = args.dir / f"store-{size}"
        start = time.perf_counter()
        runs = write_store(root, size, args.epochs)
        print(f"store of {runs} runs at {root} ({time.perf_counter() - start:.1f} s)", flush=True)
        for figures in args.figures.split(","):
            for verdict in (False, True):
                out = args.dir / f"report-{size}-{figures}-{int(verdict)}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.perf_counter()
                outcome = write_report([root], out=out, verdict=verdict, figures=figures,
                                       processes=args.processes)  # fmt: skip
                total = time.perf_counter() - start
                stages = outcome.seconds
                rows.append((runs, figures, verdict, stages, len(outcome.figures), total))
                print(f"  {runs} runs, figures={figures}, verdict={verdict}: {total:.1f} s",
                      flush=True)  # fmt: skip
    names = ("read", "tables", "verdict", "render", "figures")
    print("\n| runs | --figures | --verdict | " + " | ".join(f"{n} (s)" for n in names)
          + " | figure files | total (s) |")  # fmt: skip
    print("|---:|---|---|" + "---:|" * (len(names) + 2))
    for runs, figures, verdict, stages, drawn, total in rows:
        cells = [f"{stages[n]:.2f}" if n in stages else "–" for n in names]
        print(f"| {runs} | {figures} | {'yes' if verdict else 'no'} | " + " | ".join(cells)
              + f" | {drawn} | {total:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
