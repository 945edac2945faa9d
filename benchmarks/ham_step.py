"""Time one HAM(Adam) step against one plain foreach-Adam step (not a test).

    .venv/bin/python benchmarks/ham_step.py --device cpu --sizes 1M,10M,50M --repeats 10

For each size, the "model" is 8 weight matrices with biases (~N parameters in total), with fixed
random gradients (30% exact zeros, as with dropout). For each HAM kernel path (foreach, fused =
torch.compile) it prints the median step time of Adam and of HAM(Adam) over `--repeats` timed
steps after warm-up steps, the extra cost (ham - adam) / adam, and memory: on CUDA the peak
allocated memory during a step, on CPU the bytes of optimizer state (equal for Adam and HAM:
HAM keeps no state). The first fused step includes compiling; that time is printed separately.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from hamgraph.optim import HAM


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def make_params(size: int, device: torch.device, layers: int = 8) -> list[nn.Parameter]:
    hidden = max(1, round(math.sqrt(size / layers)))
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(layers):
        for shape in ((hidden, hidden), (hidden,)):
            p = nn.Parameter((0.05 * torch.randn(shape, generator=gen)).to(device))
            g = torch.randn(shape, generator=gen)
            g[torch.rand(shape, generator=gen) < 0.3] = 0.0
            p.grad = g.to(device)
            params.append(p)
    return params


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(opt: torch.optim.Optimizer, device: torch.device, warmup: int, repeats: int):
    """(median ms per step, first step ms, peak CUDA bytes during a step or None)."""
    sync(device)
    start = time.perf_counter()
    opt.step()
    sync(device)
    first = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        opt.step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        opt.step()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        opt.step()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
    return statistics.median(times), first, peak


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of tensors in the optimizer's state dict (per-parameter state and group values)."""
    sd = opt.state_dict()
    total = 0
    for entry in sd["state"].values():
        total += sum(v.numel() * v.element_size() for v in entry.values() if torch.is_tensor(v))
    for group in sd["param_groups"]:
        total += sum(v.numel() * v.element_size() for v in group.values() if torch.is_tensor(v))
    return total


def fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="1M,10M,50M", help="comma-separated, e.g. 1M,10M")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--paths", default="foreach,fused", help="HAM kernels: foreach,fused")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = sorted(set(paths) - {"foreach", "fused"})
    if unknown:
        parser.error(f"unknown --paths {unknown}; choose from foreach, fused")

    header = (
        f"{'params':>8} | {'path':<7} | {'adam ms':>8} | {'ham ms':>8} | {'extra':>6} | "
        f"{'compile s':>9} | {'adam mem':>10} | {'ham mem':>10}"
    )
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()}")
    memory = "peak allocated during a step" if device.type == "cuda" else "optimizer state bytes"
    print(f"memory = {memory}")
    print(header)
    print("-" * len(header))
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        params = make_params(size, device)
        n = sum(p.numel() for p in params)
        adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
        adam_ms, _, adam_peak = time_steps(adam, device, args.warmup, args.repeats)
        adam_mem = adam_peak if device.type == "cuda" else state_bytes(adam)
        del adam
        for path in paths:
            ham = HAM(
                params, base=torch.optim.Adam, alpha=200.0, beta=0.01, lr=1e-3, foreach=True,
                fused=path == "fused",
            )  # fmt: skip
            ham_ms, first_ms, ham_peak = time_steps(ham, device, args.warmup, args.repeats)
            ham_mem = ham_peak if device.type == "cuda" else state_bytes(ham)
            compile_s = f"{(first_ms - ham_ms) / 1e3:9.1f}" if path == "fused" else f"{'-':>9}"
            print(
                f"{n / 1e6:7.1f}M | {path:<7} | {adam_ms:8.2f} | {ham_ms:8.2f} | "
                f"{(ham_ms - adam_ms) / adam_ms:6.2f} | {compile_s} | "
                f"{fmt_bytes(adam_mem):>10} | {fmt_bytes(ham_mem):>10}",
                flush=True,
            )
            if device.type != "cuda" and ham_mem != adam_mem:
                print(f"  !! HAM state ({ham_mem} B) differs from Adam's ({adam_mem} B)")
            del ham
        del params
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
