"""Packed training vs single runs: time per run and peak memory for M runs of one preset.

    .venv/bin/python benchmarks/packed.py [--device auto] [--epochs 10] [--sizes 1,5,25,125]
        [--cases cora/gcn,chameleon/gcn,minesweeper/gcn,squirrel/sage] [--threads 1]

M = 1 is today's single-run trainer (`train_node_run`); M > 1 is `train_node_pack` with M runs
(seeds 0..M-1, runs 0..M-1: different splits where the dataset has several), Adam and HAM
alternating. Each (case, M) runs in a fresh subprocess: 1 epoch untimed (warm-up), then
`epochs` and `2 * epochs` epochs.
Reported per run:

    setup s   the fixed cost per run in a warm process (model build, data to the device), from
              the two lengths: t(E) - E * epoch
    ms/epoch  the marginal cost of one epoch of one run: (t(2E) - t(E)) / E / M
    runs/h    for a run of the preset's full length: 3600 / (setup + preset epochs * epoch)
    speedup   runs/h over the single trainer's runs/h
    peak MiB  CUDA: peak allocated during training (both lengths); CPU: peak RSS of the
              subprocess minus its RSS after loading the data, i.e. what training added
    sys %     CPU only: the kernel's share of the CPU time (page faults: glibc hands tensors
              over 32 MiB out as fresh mmap'ed pages, which the kernel zeroes at first touch)

On the CPU the clock is the process's CPU time (robust to other processes on a shared machine);
on CUDA wall time. Needs the dataset mirror ($HAMGRAPH_MIRROR, default ../shared/datasets).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from hamgraph.data.node import load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import resolve_dataset
from hamgraph.presets import default_params
from hamgraph.specs import HamSettings, OptimizerSpec, RunSpec
from hamgraph.train import resolve_device
from hamgraph.train.node import train_node_run
from hamgraph.train.packed import pack_footprint, train_node_pack

CASES = "cora/gcn,chameleon/gcn,minesweeper/gcn,squirrel/sage"
HAM = HamSettings(alpha=200.0, beta=0.1)


def _paths() -> DataPaths:
    mirror = os.environ.get("HAMGRAPH_MIRROR") or str(Path(__file__).parents[2] / "shared/datasets")
    cache = Path(os.environ.get("HAMGRAPH_BENCH_CACHE", "/tmp/hamgraph-bench-cache"))
    return DataPaths(cache=cache, mirror=Path(mirror))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _too_big(case: str, size: int) -> bool:
    """CPU: whether `pack_footprint` x size exceeds half of MemAvailable."""
    dataset, model = case.split("/")
    info = resolve_dataset(dataset)
    spec = RunSpec(dataset, model, default_params(info, model), OptimizerSpec("adam"), 0, 0)
    per_run = pack_footprint(spec, info, _paths(), torch.device("cpu"))
    with open("/proc/meminfo") as f:
        free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    return per_run * size > free // 2


def child(case: str, size: int, epochs: int, device_name: str, threads: int) -> dict:
    """One measurement in this (fresh) process: both lengths, time and peak memory."""
    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    dataset, model = case.split("/")
    info = resolve_dataset(dataset)
    paths = _paths()
    load_node_dataset(info, paths)  # processed once into the cache, and warm
    preset = default_params(info, model)
    baseline = _rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_alloc = torch.cuda.memory_allocated(device)
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    seconds = {}
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # an untimed 1-epoch warm-up first: otherwise the first timed length alone pays for growing
    # the heap and warming up, and the marginal epoch (the difference) comes out too small
    for warmup, length in ((True, 1), (False, epochs), (False, 2 * epochs)):
        params = dataclasses.replace(preset, epochs=length)
        specs = [
            RunSpec(dataset, model, params, OptimizerSpec("adam", ham=HAM if i % 2 else None),
                    run=i, seed=i)
            for i in range(size)
        ]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = clock()
        if size == 1:
            train_node_run(specs[0], info, paths, device)
        else:
            train_node_pack(specs, info, paths, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if warmup:
            usage = resource.getrusage(resource.RUSAGE_SELF)
        else:
            seconds[length] = clock() - t0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - base_alloc
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    epoch = (seconds[2 * epochs] - seconds[epochs]) / epochs / size  # per run
    setup = max(0.0, seconds[epochs] / size - epochs * epoch)
    after = resource.getrusage(resource.RUSAGE_SELF)
    system = after.ru_stime - usage.ru_stime
    total = system + after.ru_utime - usage.ru_utime
    return {
        "epoch": epoch,
        "setup": setup,
        "peak": max(0, peak),
        "full": preset.epochs,
        "sys": system / total if device.type == "cpu" and total > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sizes", default="1,5,25,125")
    parser.add_argument("--cases", default=CASES)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, size = args.child.rsplit(":", 1)
        print(json.dumps(child(case, int(size), args.epochs, args.device, args.threads)))
        return
    device = resolve_device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    clock = "CPU time" if device.type == "cpu" else "wall time"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, torch threads {args.threads}, {args.epochs} and {2 * args.epochs} "
          f"epochs, {clock}")
    header = (f"{'case':<18}{'M':>5}{'setup s':>9}{'ms/epoch':>10}{'runs/h':>10}"
              f"{'speedup':>9}{'peak MiB':>10}{'sys %':>7}")
    print(header)
    print("-" * len(header))
    for case in args.cases.split(","):
        single_rate = None
        for size in sizes:
            if device.type == "cpu" and size > 1 and _too_big(case, size):
                print(f"{case:<18}{size:>5}  skipped: estimated memory above half the free RAM")
                continue
            command = [sys.executable, __file__, "--child", f"{case}:{size}",
                       "--epochs", str(args.epochs), "--device", args.device,
                       "--threads", str(args.threads)]
            try:
                done = subprocess.run(command, capture_output=True, text=True,
                                      timeout=args.timeout, check=False)
            except subprocess.TimeoutExpired:
                print(f"{case:<18}{size:>5}  timed out after {args.timeout:.0f} s")
                continue
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                oom = "out of memory" in done.stderr.lower()
                print(f"{case:<18}{size:>5}  {'out of memory' if oom else 'failed: ' + tail[0]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            per_run = row["setup"] + row["full"] * row["epoch"]
            rate = 3600.0 / per_run
            if size == 1:
                single_rate = rate
            speedup = f"{rate / single_rate:.2f}x" if single_rate else "-"
            system = "-" if row["sys"] is None else f"{100 * row['sys']:.0f}"
            print(f"{case:<18}{size:>5}{row['setup']:>9.2f}{1000 * row['epoch']:>10.2f}"
                  f"{rate:>10.0f}{speedup:>9}{row['peak'] / 2**20:>10.0f}{system:>7}", flush=True)


if __name__ == "__main__":
    main()
