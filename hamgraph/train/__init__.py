"""Training: one RunSpec in, one RunResult out. Node runs are full batch, graph runs mini-batch."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import spec_dataset
from hamgraph.errors import UserInputError
from hamgraph.specs import EpochStats, RunResult, RunSpec


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" picks CUDA when present, else the CPU; anything else must be a valid torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserInputError(f"--device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name!r}: CUDA is not available on this machine")
    return device


def use_deterministic_algorithms(enabled: bool = True) -> None:
    """Deterministic kernels on CUDA (`--deterministic`): scatter / index_add without atomics,
    a fixed cuBLAS workspace. Slower (benchmarks/gpu_check.sh measures by how much); CPU runs
    are deterministic either way. Ops without a deterministic kernel warn instead of failing.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def execute(
    spec: RunSpec,
    paths: DataPaths,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    on_epochs: Callable[[list[EpochStats]], None] | None = None,
) -> RunResult:
    """Train one run. A diverging run comes back as a failed RunResult, not as an exception.

    `checkpoint_dir`: where the checkpoint of this run lives, so an interrupted run continues
    from its last checkpoint (graph runs: after every epoch, removed when the run returns;
    node runs: every few minutes, removed by the caller once the result is stored, see
    hamgraph.train.checkpoint). `on_epochs` receives the history rows as they reach the host
    (every few epochs; no extra device sync), e.g. for trackers. A stop request
    (hamgraph.preemption) raises Preempted after writing the checkpoint.
    """
    info = spec_dataset(spec)
    if info.task == "node":
        from hamgraph.train.checkpoint import Checkpointer
        from hamgraph.train.node import train_node_run

        checkpointer = None if checkpoint_dir is None else Checkpointer(checkpoint_dir, spec.key())
        return train_node_run(spec, info, paths, device, on_epochs=on_epochs,
                              checkpointer=checkpointer)
    if info.plugin is not None:  # a user's graph dataset (and model)
        from hamgraph.train.plugin_graph import train_plugin_graph_run

        return train_plugin_graph_run(spec, info, paths, device, on_epochs=on_epochs)
    from hamgraph.train.graph import train_graph_run

    return train_graph_run(spec, info, paths, device, checkpoint_dir, on_epochs=on_epochs)
