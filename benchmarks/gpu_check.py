"""The GPU check of the packed-training issue, as one table (run it through gpu_check.sh).

Checks, on `--device` (CUDA by default; `--device cpu` is the dry run CI can afford):
  ham-kernel      HAM's fused (compiled) kernel against foreach: same weights after 20 steps
  single / packed cora GCN, GAT, SAGE trained single and packed (M = 5, Adam + HAM + nHAM on
                  the protocol's runs): time per run, and that a packed run equals its single
                  run (same best epoch and metrics; max |loss difference| over the epochs)
  molhiv          one GCN+ epoch on ogbg-molhiv (AdamW + HAM)
  determinism     two identical GAT runs: identical numbers? and with --deterministic kernels
                  (torch.use_deterministic_algorithms), and what that costs

Prints one markdown table (check | result | detail) for docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

from hamgraph.data.paths import data_paths_from_env
from hamgraph.data.registry import resolve_dataset
from hamgraph.grid import specs_for
from hamgraph.optim.functional import hyperbolic_step_
from hamgraph.specs import HamSettings, RunResult, RunSpec
from hamgraph.train import use_deterministic_algorithms

ROWS: list[tuple[str, str, str]] = []


def row(check: str, result: str, detail: str) -> None:
    ROWS.append((check, result, detail))
    print(f"  {check}: {result} ({detail})", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_ham_kernel(device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(512, 512)] * 4 + [(512,)] * 4 + [(1024, 256)]
    start = [torch.randn(s, generator=gen).to(device) for s in shapes]
    grads = [[torch.randn(s, generator=gen).to(device) for s in shapes] for _ in range(20)]
    out = {}
    for fused in (False, True):
        params = [p.clone() for p in start]
        sync(device)
        t0 = time.perf_counter()
        for g in grads:
            hyperbolic_step_(params, g, lr=1e-3, alpha=200.0, beta=0.01, clamp=5.0,
                             mask_beta=True, fused=fused)
        sync(device)
        out[fused] = (params, time.perf_counter() - t0)
    pairs = list(zip(out[False][0], out[True][0], strict=True))
    diff = max(((a - b).abs() / b.abs().clamp(min=1e-3)).max().item() for a, b in pairs)
    ok = diff <= 1e-4  # float32: the compiled kernel may fuse and round in another order
    row("ham-kernel fused vs foreach", "ok" if ok else "MISMATCH",
        f"max rel. diff {diff:.1e} after 20 steps; foreach {1000 * out[False][1] / 20:.2f} "
        f"ms/step, fused {1000 * out[True][1] / 20:.2f} ms/step (incl. compiling)")


def _specs(dataset: str, model: str, epochs: int) -> list[RunSpec]:
    overrides = {"epochs": epochs}
    cells = [None, HamSettings(200.0, 0.1), HamSettings(-10.0, 0.01)]
    specs: list[RunSpec] = []
    for ham in cells:
        specs += specs_for(dataset, model, ham, overrides=overrides, runs=2)
    return specs[:5]


EARLY_EPOCHS = 20  # float32 rounding differences grow over training: compare the first epochs


def _same(a: RunResult, b: RunResult) -> tuple[bool, float]:
    """(same status and best epoch, max relative loss difference over the first epochs)."""
    losses = [abs(x.loss - y.loss) / max(abs(y.loss), 1e-12)
              for x, y in zip(a.history[:EARLY_EPOCHS], b.history[:EARLY_EPOCHS], strict=True)]
    worst = max(losses) if losses else 0.0
    return a.best_epoch == b.best_epoch and a.status == b.status, worst


def check_node(device: torch.device, epochs: int) -> None:
    from hamgraph.train.node import train_node_run
    from hamgraph.train.packed import train_node_pack

    paths = data_paths_from_env()
    info = resolve_dataset("cora")
    for model in ("gcn", "gat", "sage"):
        specs = _specs("cora", model, epochs)
        train_node_run(dataclasses.replace(specs[0], params=dataclasses.replace(
            specs[0].params, epochs=2)), info, paths, device)  # warm-up (kernels, data cache)
        sync(device)
        t0 = time.perf_counter()
        singles = [train_node_run(s, info, paths, device) for s in specs]
        sync(device)
        single_s = (time.perf_counter() - t0) / len(specs)
        t0 = time.perf_counter()
        packed = train_node_pack(specs, info, paths, device)
        sync(device)
        packed_s = (time.perf_counter() - t0) / len(specs)
        same = [_same(p, s) for p, s in zip(packed, singles, strict=True)]
        worst = max(w for _, w in same)
        same_best = sum(ok for ok, _ in same)
        tests = ", ".join(f"{100 * s.test:.1f}/{100 * p.test:.1f}"
                          for s, p in zip(singles, packed, strict=True))
        row(f"cora {model} single vs packed (M=5, {epochs} epochs)",
            "ok" if worst < 1e-3 else "DIFFERS",
            f"{single_s:.2f} s/run single, {packed_s:.2f} s/run packed "
            f"({single_s / packed_s:.1f}x); max rel. loss diff over the first {EARLY_EPOCHS} "
            f"epochs {worst:.1e}; same best epoch {same_best} of 5; test single/packed {tests}")


def check_molhiv(device: torch.device) -> None:
    from hamgraph.train.graph import train_graph_run

    paths = data_paths_from_env()
    info = resolve_dataset("ogbg-molhiv")
    (spec,) = specs_for("ogbg-molhiv", "gcnplus", HamSettings(200.0, 0.1),
                        overrides={"epochs": 1, "warmup_epochs": 1}, runs=1)
    t0 = time.perf_counter()
    result = train_graph_run(spec, info, paths, device)
    sync(device)
    row("molhiv GCN+ one epoch (HAM)", result.status,
        f"{time.perf_counter() - t0:.1f} s incl. loading; val ROC-AUC {100 * result.val:.1f}")


def check_determinism(device: torch.device, epochs: int) -> None:
    from hamgraph.train.node import train_node_run

    paths = data_paths_from_env()
    info = resolve_dataset("cora")
    spec = _specs("cora", "gat", epochs)[2]
    timings = {}
    for deterministic in (False, True):
        use_deterministic_algorithms(deterministic)
        results, t0 = [], time.perf_counter()
        for _ in range(2):
            results.append(train_node_run(spec, info, paths, device))
        sync(device)
        timings[deterministic] = (time.perf_counter() - t0) / 2
        a, b = results
        identical = [x.loss for x in a.history] == [x.loss for x in b.history]
        label = "--deterministic" if deterministic else "default kernels"
        row(f"determinism, cora GAT, {label}", "identical" if identical else "differs",
            f"{timings[deterministic]:.2f} s/run; test {100 * a.test:.2f} vs {100 * b.test:.2f}")
    use_deterministic_algorithms(False)
    row("cost of --deterministic", f"{timings[True] / timings[False]:.2f}x",
        "time per run, deterministic / default")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=200, help="epochs of the cora runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"gpu_check on {name}, torch {torch.__version__}", file=sys.stderr)
    torch.manual_seed(0)
    check_ham_kernel(device)
    check_node(device, args.epochs)
    check_molhiv(device)
    check_determinism(device, args.epochs)
    print(f"\n| check ({name}) | result | detail |\n|---|---|---|")
    for check, result, detail in ROWS:
        print(f"| {check} | {result} | {detail} |")
    bad = [r for r in ROWS if r[1] in ("MISMATCH", "DIFFERS", "failed")]
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
