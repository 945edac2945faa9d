"""Where a result came from: hamgraph and library versions, the git commit, the device, when.

Collected by the runner for every run and stored in its record; `runs.csv` carries the
hamgraph version and the device, and the report's notes name both for every table.
"""

from __future__ import annotations

import functools
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from hamgraph import __version__

LIBRARIES = ("torch", "torch_geometric", "ogb", "optuna")


@functools.cache
def _git_commit() -> str:
    """The commit of the checkout hamgraph runs from ("" when not a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return ""
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def _library_version(name: str) -> str:
    try:
        return version(name.replace("_", "-"))
    except PackageNotFoundError:
        return ""


@functools.cache
def _static() -> dict[str, str]:
    out = {"hamgraph_version": __version__, "git_commit": _git_commit()}
    out.update({f"{name}_version": _library_version(name) for name in LIBRARIES})
    return out


def device_name(device: torch.device) -> str:
    """"cpu", or the accelerator's name, e.g. "NVIDIA H100 80GB HBM3"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def collect(device: torch.device, started_at: datetime | None = None) -> dict[str, str]:
    """The provenance of a run that trained on `device` and finished now."""
    now = datetime.now(timezone.utc)
    return {
        **_static(),
        "device": device_name(device),
        "started_at": (started_at or now).isoformat(timespec="seconds"),
        "finished_at": now.isoformat(timespec="seconds"),
    }
