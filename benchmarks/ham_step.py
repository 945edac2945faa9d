"""Time one HAM(Adam) step against one plain foreach-Adam step (not a test).

    .venv/bin/python benchmarks/ham_step.py --sizes 1M,10M,50M --threads 1,2 --layout square,wide
    .venv/bin/python benchmarks/ham_step.py --sizes 1M --packed 25 --threads 1,2

Layouts of the ~N parameters of the "model" (fixed random gradients, set once):

- square: 8 square weight matrices with biases, weights 0.05 * N(0, 1), gradients N(0, 1) with
  30% exact zeros (as with dropout);
- wide: as many 1024 x 1024 matrices (with 1024 biases) as fit in N, weights N(0, 1), dense
  gradients N(0, 1).

`--packed M` stacks M models of the first layout (each of `--sizes` parameters) into weights of
shape [M, ...], as the packed trainer does, and times `hyperbolic_step_` with per-model alpha
and beta tensors of shape [M, 1, ...] after the Adam step on the stacked weights.

Adam and HAM(Adam) run on the same weights and are timed alternately in one loop (Adam step,
HAM step, Adam step, ...), so both see the same cache and machine state; the table gives the
median of `--repeats` steps each after `--warmup` untimed ones, and the extra cost
(ham - adam) / adam. For each HAM kernel path (foreach = eager, fused = torch.compile) it also
prints the first fused step's excess over the median (the compile time; with inductor's on-disk
cache warm this is tracing plus loading) and memory: on CUDA the peak allocated memory during a
step, on CPU the bytes of optimizer state (equal for Adam and HAM: HAM keeps no state).

Two floors, as fractions of the Adam step, show what no eager kernel can go below: "mem floor"
is one pass that reads the weights and gradients and writes the weights (`w += 0 * g`: HAM's
minimal memory traffic, 3 of the 7 tensor passes of Adam), "exp floor" the exponential alone
over as many elements (chunk by chunk into one reused buffer, i.e. from cache). Eager ops run
one after the other, so the eager kernel's extra cost is at least about their sum; only a fused
(compiled) kernel overlaps the two.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from hamgraph.optim import HAM
from hamgraph.optim.functional import _CHUNK, hyperbolic_step_

LAYOUTS = ("square", "wide")
PATHS = ("foreach", "fused")


def parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 10**3, "M": 10**6, "G": 10**9}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * scale)


def layout_shapes(layout: str, size: int) -> list[tuple[tuple[int, ...], float, float]]:
    """(shape, weight scale, fraction of zero gradients) of each weight of a layout."""
    if layout == "square":
        hidden = max(1, round(math.sqrt(size / 8)))
        return [
            s for _ in range(8) for s in (((hidden, hidden), 0.05, 0.3), ((hidden,), 0.05, 0.3))
        ]
    width = 1024
    count = max(1, round(size / (width * width + width)))
    return [s for _ in range(count) for s in (((width, width), 1.0, 0.0), ((width,), 1.0, 0.0))]


def make_params(
    layout: str, size: int, device: torch.device, models: int = 0
) -> list[nn.Parameter]:
    """The weights of a layout with gradients set; stacked as [models, ...] when models > 0."""
    gen = torch.Generator().manual_seed(0)
    params = []
    for shape, scale, zeros in layout_shapes(layout, size):
        full = (models, *shape) if models else shape
        p = nn.Parameter((scale * torch.randn(full, generator=gen)).to(device))
        g = torch.randn(full, generator=gen)
        if zeros:
            g[torch.rand(full, generator=gen) < zeros] = 0.0
        p.grad = g.to(device)
        params.append(p)
    return params


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return (time.perf_counter() - start) * 1e3


def alternate(
    adam_step: Callable[[], object],
    ham_step: Callable[[], object],
    params: list[nn.Parameter],
    device: torch.device,
    warmup: int,
    repeats: int,
) -> tuple[float, float, float]:
    """(median Adam ms, median HAM ms, first HAM step ms), steps timed alternately.

    The weights are restored after each pair of steps (untimed): with fixed gradients, repeated
    HAM steps would otherwise shrink some weights towards subnormal floats, which are slow on
    x86 and not what training looks like."""
    start = [p.detach().clone() for p in params]

    def restore() -> None:
        with torch.no_grad():
            torch._foreach_copy_([p.detach() for p in params], start)

    first = timed(ham_step, device)
    restore()
    for _ in range(warmup):
        adam_step()
        ham_step()
        restore()
    adam_ms, ham_ms = [], []
    for _ in range(repeats):
        adam_ms.append(timed(adam_step, device))
        ham_ms.append(timed(ham_step, device))
        restore()
    return statistics.median(adam_ms), statistics.median(ham_ms), first


def memory_floor_step(params: list[nn.Parameter]) -> Callable[[], None]:
    """One pass reading every weight and gradient and writing the weight (values unchanged)."""
    weights = [p.detach() for p in params]
    grads = [p.grad for p in params]
    return lambda: torch._foreach_add_(weights, grads, alpha=0.0)


def exp_floor_step(params: list[nn.Parameter], device: torch.device) -> Callable[[], None]:
    """`exp` over every weight's element count, chunk by chunk into one reused buffer (CPU), or
    one `_foreach_exp` over copies of the gradients (CUDA): the one op HAM cannot avoid."""
    grads = [p.grad for p in params if p.grad is not None]
    if device.type == "cuda":
        scratch = [g.clone() for g in grads]
        return lambda: torch._foreach_exp_(scratch)
    chunks = [c for g in grads for c in g.detach().reshape(-1).split(_CHUNK)]
    buffer = torch.empty(_CHUNK, dtype=grads[0].dtype)

    def step() -> None:
        for chunk in chunks:
            torch.exp(chunk, out=buffer[: chunk.numel()])

    return step


def peak_bytes(step: Callable[[], object], device: torch.device) -> int | None:
    if device.type != "cuda":
        return None
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device)


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


def packed_ham(
    params: list[nn.Parameter], models: int, path: str
) -> tuple[torch.optim.Optimizer, Callable[[], None]]:
    """Adam on stacked weights plus the hyperbolic step with per-model alpha and beta."""
    base = torch.optim.Adam(params, lr=1e-3, foreach=True)
    alphas = torch.linspace(100.0, 300.0, models, device=params[0].device)
    betas = torch.linspace(0.001, 0.01, models, device=params[0].device)
    alpha = [alphas.view(-1, *[1] * (p.dim() - 1)) for p in params]
    beta = [betas.view(-1, *[1] * (p.dim() - 1)) for p in params]
    grads = [p.grad for p in params]

    @torch.no_grad()
    def step() -> None:
        base.step()
        hyperbolic_step_(
            params, grads, lr=1e-3, alpha=alpha, beta=beta, clamp=5.0, fused=path == "fused"
        )

    return base, step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", default="1M,10M,50M", help="comma-separated, e.g. 1M,10M")
    parser.add_argument("--layout", default="square,wide", help="comma-separated: square,wide")
    parser.add_argument("--packed", type=int, default=0, help="stack this many models (0: off)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--threads", default="0", help="comma-separated torch CPU threads (0: torch's default)"
    )
    parser.add_argument("--paths", default="foreach,fused", help="HAM kernels: foreach,fused")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    layouts = [x.strip() for x in args.layout.split(",") if x.strip()]
    if sorted(set(paths) - set(PATHS)):
        parser.error(f"unknown --paths {paths}; choose from {', '.join(PATHS)}")
    if sorted(set(layouts) - set(LAYOUTS)):
        parser.error(f"unknown --layout {layouts}; choose from {', '.join(LAYOUTS)}")
    threads = [int(t) for t in args.threads.split(",")]
    sizes = [parse_size(s) for s in args.sizes.split(",")]

    memory = "peak allocated during a step" if device.type == "cuda" else "optimizer state bytes"
    print(f"device={device} torch={torch.__version__} memory={memory}")
    print("Adam and HAM steps timed alternately; medians; extra = (ham - adam) / adam")
    header = (
        "| threads | layout | params | path | adam ms | ham ms | extra | mem floor | exp floor "
        "| compile s "
        "| adam mem | ham mem |"
    )
    print(header)
    print("|---" * 12 + "|")
    for n_threads in threads:
        if n_threads > 0:
            torch.set_num_threads(n_threads)
        for layout in layouts:
            for size in sizes:
                params = make_params(layout, size, device, args.packed)
                n = sum(p.numel() for p in params)
                name = f"{layout} x{args.packed}" if args.packed else layout
                adam = torch.optim.Adam(params, lr=1e-3, foreach=True)
                floors = []
                for floor_step in (memory_floor_step(params), exp_floor_step(params, device)):
                    adam_ms, floor_ms, _ = alternate(
                        adam.step, floor_step, params, device, args.warmup, args.repeats
                    )
                    floors.append(f"{floor_ms / adam_ms:.2f}")
                floor = " | ".join(floors)
                for path in paths:
                    if args.packed:
                        ham, ham_step = packed_ham(params, args.packed, path)
                    else:
                        ham = HAM(
                            params, base=torch.optim.Adam, alpha=200.0, beta=0.01, lr=1e-3,
                            foreach=True, fused=path == "fused",
                        )  # fmt: skip
                        ham_step = ham.step
                    adam_ms, ham_ms, first_ms = alternate(
                        adam.step, ham_step, params, device, args.warmup, args.repeats
                    )
                    adam_mem = peak_bytes(adam.step, device) or state_bytes(adam)
                    ham_mem = peak_bytes(ham_step, device) or state_bytes(ham)
                    compile_s = f"{(first_ms - ham_ms) / 1e3:.1f}" if path == "fused" else "-"
                    print(
                        f"| {torch.get_num_threads()} | {name} | {n / 1e6:.1f}M | {path} | "
                        f"{adam_ms:.2f} | {ham_ms:.2f} | {(ham_ms - adam_ms) / adam_ms:.2f} | "
                        f"{floor} | {compile_s} | {fmt_bytes(adam_mem)} | {fmt_bytes(ham_mem)} |",
                        flush=True,
                    )
                    del ham, ham_step
                del adam, params
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
