"""Trainer pieces shared by the node (full-batch) and graph (mini-batch) trainers.

Everything here keeps per-epoch values as device tensors; the host sees them only when a
trainer asks (`first_nonfinite`, `epoch_stats`), a few times per run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from hamgraph.specs import EpochStats

# Columns of the per-epoch history buffer (one row per epoch) and their order in EpochStats.
HISTORY_COLUMNS: tuple[str, ...] = (
    "loss",
    "train",
    "val",
    "test",
    "sign_flips",
    "mean_abs_weight",
)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices). CPU runs are then deterministic."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


class WeightDiagnostics:
    """Sign flips and mean |w| of a set of parameters (the HAM targets), on the device.

    A sign flip is a weight whose sign bit changed since the previous `update()` (the first
    call compares with the weights at construction time). A weight landing on exactly 0 keeps a
    positive sign bit. Memory: one bool per weight for the previous signs.
    """

    def __init__(self, params: Iterable[Tensor]) -> None:
        self.params = [p for p in params]
        self.numel = sum(p.numel() for p in self.params)
        self._signs = [torch.signbit(p.detach()) for p in self.params]

    @torch.no_grad()
    def update(self) -> tuple[Tensor, Tensor]:
        """(flips since the last call [int64, 0-dim], mean |w| [float32, 0-dim]); no host sync."""
        if not self.params:
            nan = torch.tensor(float("nan"))
            return torch.tensor(0), nan
        flips = []
        for i, p in enumerate(self.params):
            signs = torch.signbit(p)
            flips.append((signs != self._signs[i]).sum())
            self._signs[i] = signs
        l1 = torch.stack(torch._foreach_norm(self.params, 1)).sum()
        return torch.stack(flips).sum(), l1 / self.numel


class BestTracker:
    """The FIRST epoch with the best validation metric, tracked on the device (no sync).

    `update(epoch, val, test)` keeps val/test/epoch of the first epoch whose val is strictly
    greater than every earlier one; NaN never counts as better. With `shape` (e.g. `(M,)` for
    a pack of M models) val / test are tensors of that shape, tracked elementwise.
    `higher_is_better=False` (a user's metric such as a loss): strictly smaller is better.
    """

    def __init__(
        self, device: torch.device | str, shape: tuple[int, ...] = (),
        higher_is_better: bool = True,
    ) -> None:
        self.sign = 1.0 if higher_is_better else -1.0
        self.val = torch.full(shape, -math.inf * self.sign, dtype=torch.float64, device=device)
        self.test = torch.full(shape, math.nan, dtype=torch.float64, device=device)
        # 1-based; 0 = none yet
        self.epoch = torch.zeros(shape, dtype=torch.long, device=device)

    def update(self, epoch: int, val: Tensor, test: Tensor) -> None:
        better = val.double() * self.sign > self.val * self.sign
        self.val = torch.where(better, val.double(), self.val)
        self.test = torch.where(better, test.double(), self.test)
        self.epoch = torch.where(better, torch.full_like(self.epoch, epoch), self.epoch)

    def result(self) -> tuple[float, float, int]:
        """(val, test, best_epoch) on the host (one sync); NaNs and 0 if nothing was tracked."""
        val, test, epoch = torch.stack([self.val, self.test, self.epoch.double()]).tolist()
        if epoch == 0:
            return math.nan, math.nan, 0
        return val, test, int(epoch)

    def results(self) -> list[tuple[float, float, int]]:
        """`result()` of every element of a tracker with a shape, flattened (one sync)."""
        table = torch.stack([self.val, self.test, self.epoch.double()]).reshape(3, -1).T
        return [
            (math.nan, math.nan, 0) if epoch == 0 else (val, test, int(epoch))
            for val, test, epoch in table.tolist()
        ]


def first_nonfinite(values: Tensor) -> int | None:
    """Index of the first non-finite entry of a 1-D tensor, or None (exactly one host sync)."""
    bad = ~torch.isfinite(values)
    # argmax of a bool tensor returns the first True; -1 encodes "none"
    index = torch.where(bad.any(), bad.to(torch.uint8).argmax(), -1).item()
    return None if index < 0 else int(index)


def divergence_reason(value: float, epoch: int) -> str:
    """The `reason` of a diverged run, e.g. "loss became nan at epoch 12"."""
    what = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"loss became {what} at epoch {epoch}"


def epoch_stats(
    rows: Tensor,
    lrs: Sequence[float],
    first_epoch: int = 1,
    train_seconds: Sequence[float] | None = None,
) -> list[EpochStats]:
    """History rows [n, len(HISTORY_COLUMNS)] (any device) -> EpochStats, one host transfer."""
    return stats_from_values(
        rows.detach().double().cpu().tolist(), lrs, first_epoch, train_seconds
    )


def stats_from_values(
    values: Sequence[Sequence[float]],
    lrs: Sequence[float],
    first_epoch: int = 1,
    train_seconds: Sequence[float] | None = None,
) -> list[EpochStats]:
    """`epoch_stats` of rows already on the host as lists of floats; `train_seconds`: the
    cumulative training time of each row's epoch (NaN when not given)."""
    out = []
    seconds = [math.nan] * len(values) if train_seconds is None else train_seconds
    for offset, (row, lr, spent) in enumerate(zip(values, lrs, seconds, strict=True)):
        stats = dict(zip(HISTORY_COLUMNS, row, strict=True))
        flips = stats["sign_flips"]
        out.append(
            EpochStats(
                epoch=first_epoch + offset,
                loss=stats["loss"],
                train=stats["train"],
                val=stats["val"],
                test=stats["test"],
                lr=float(lr),
                sign_flips=int(flips) if math.isfinite(flips) else 0,
                mean_abs_weight=stats["mean_abs_weight"],
                train_seconds=float(spent),
            )
        )
    return out


class TrainClock:
    """Cumulative training time per epoch, evaluation excluded, without a host sync per epoch.

    `start()` / `stop()` bracket the training part of each epoch. On CUDA they record a pair
    of `torch.cuda.Event(enable_timing=True)` on the current stream; the pairs are read in
    `settle()`, which the trainer calls where it syncs anyway (its history transfer has waited
    for the stream, so the events are done). Elsewhere they read `time.perf_counter()` (CPU
    work is synchronous). `totals[e - 1]`: seconds spent training in epochs 1..e, including
    `offset` (the time before a resume).
    """

    def __init__(self, device: torch.device, totals: Sequence[float] = ()) -> None:
        self.cuda = device.type == "cuda"
        self.totals: list[float] = [float(t) for t in totals]
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._begun: torch.cuda.Event | float | None = None

    def start(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._begun = event
        else:
            self._begun = time.perf_counter()

    def stop(self) -> None:
        begun, self._begun = self._begun, None
        if begun is None:
            raise RuntimeError("TrainClock.stop() without start()")
        if isinstance(begun, float):
            self._add(time.perf_counter() - begun)
            return
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        self._pending.append((begun, end))

    def _add(self, seconds: float) -> None:
        self.totals.append((self.totals[-1] if self.totals else 0.0) + seconds)

    def settle(self) -> list[float]:
        """Read the recorded CUDA events (they must be done: call after a sync); -> totals."""
        pending, self._pending = self._pending, []
        for begun, end in pending:
            end.synchronize()  # already complete after the caller's sync: returns at once
            self._add(begun.elapsed_time(end) / 1000.0)
        return self.totals
