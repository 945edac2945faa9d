"""Helpers shared by the sweep tests (test_sweep*.py): sweep files on a tiny graph, their trials."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

from hamgraph import sweep as sw

TINY = "csbm-h0.8-n200"


def write_sweep(tmp_path: Path, body: str, name: str = "t") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def grid_body(name: str, alpha: str = "[200, -10]", beta: str = "[0, 0.1]", epochs: int = 5,
              baseline: bool = True) -> str:
    return f"""
name: {name}
datasets: [{TINY}]
models: [gcn]
epochs: {epochs}
runs: 1
search:
  kind: grid
  alpha: {alpha}
  beta: {beta}
  include_baseline: {str(baseline).lower()}
"""


def trials_of(path: Path, storage: str | None = None) -> list[optuna.trial.FrozenTrial]:
    sweep = sw.load_sweep(path)
    url = storage or sw.storage_url(None, Path(path).parent / "out")
    study = optuna.load_study(
        study_name=sw.study_name(sweep, TINY, "gcn"), storage=sw.open_storage(url)
    )
    return study.get_trials(deepcopy=False)


def assert_each_cell_once(trials: list, cells: list[str]) -> None:
    complete = Counter(t.user_attrs["cell"] for t in trials if t.state == TrialState.COMPLETE)
    assert sorted(complete) == sorted(cells), complete
    assert set(complete.values()) == {1}, f"a cell completed twice: {complete}"


def kill_mid_trial(
    cmd: list[str], cwd: Path, path: Path, storage: str, timeout: float = 120
) -> tuple[list[optuna.trial.FrozenTrial], list[optuna.trial.FrozenTrial]]:
    """Start a sweep command and `kill -9` it once a trial has completed and another is running.

    -> (completed, running) trials as seen just before the kill; asserts the kill happened."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=os.environ.copy(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    done: list[optuna.trial.FrozenTrial] = []
    running: list[optuna.trial.FrozenTrial] = []
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                trials = trials_of(path, storage)
            except (KeyError, ValueError, optuna.exceptions.StorageInternalError):
                continue  # the study is not created yet
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            running = [t for t in trials if t.state == TrialState.RUNNING
                       and "cell" in t.user_attrs]
            if done and running:
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        if proc.poll() is None and not (done and running):
            proc.kill()
        proc.wait()
    assert done and running, (
        f"never saw a COMPLETE and a RUNNING trial; stderr: {proc.stderr.read()!r}")
    assert proc.returncode == -signal.SIGKILL
    return done, running
