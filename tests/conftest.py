"""Shared fixtures. Tests are offline; every test gets its own data cache, never the user's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hamgraph.data.paths import CACHE_ENV, MIRROR_ENV, DataPaths

REPO = Path(__file__).resolve().parents[1]

# Helper modules imported by tests keep pytest's detailed assertion messages.
pytest.register_assert_rewrite("sweep_helpers")

# pytest-xdist runs one worker per core; more torch threads than cores oversubscribes the CPU
# (one Adam step measured 100x slower here). Subprocesses inherit OMP_NUM_THREADS.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The read-only dataset mirror ($HAMGRAPH_MIRROR; CI points it at ../shared/datasets).

    Unset: tests that need real data are skipped. Set but broken: they fail.
    """
    value = os.environ.get(MIRROR_ENV)
    if not value:
        pytest.skip(f"{MIRROR_ENV} is not set (CI sets it to ../shared/datasets)")
    path = Path(value)
    assert (path / "Cora" / "raw").is_dir(), f"{MIRROR_ENV}={value} has no Cora/raw: mirror broken"
    return path


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache per test session (per xdist worker), so datasets are processed once."""
    return tmp_path_factory.mktemp("hamgraph-cache")


@pytest.fixture
def data_paths(shared_cache: Path, mirror: Path) -> DataPaths:
    """Data paths with the real mirror (needs $HAMGRAPH_MIRROR)."""
    return DataPaths(cache=shared_cache, mirror=mirror)


@pytest.fixture
def offline_paths(tmp_path: Path) -> DataPaths:
    """An empty cache and no mirror: for synthetic data and generated files."""
    return DataPaths(cache=tmp_path / "cache", mirror=None)


@pytest.fixture(autouse=True)
def _isolated_data_cache(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> None:
    """Code that reads $HAMGRAPH_DATA (the CLI) writes into the session cache, not ~/.cache."""
    monkeypatch.setenv(CACHE_ENV, str(shared_cache))
