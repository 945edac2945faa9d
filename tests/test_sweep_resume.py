"""`hamgraph sweep` survives kill -9: rerunning the command finishes every cell exactly once.

Own file so that `pytest -n 2 --dist loadfile` runs it beside the other sweep tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState
from sweep_helpers import (
    assert_each_cell_once,
    grid_body,
    kill_mid_trial,
    trials_of,
    write_sweep,
)

from hamgraph import sweep as sw


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_resume_after_kill_9(tmp_path: Path, backend: str) -> None:
    # 400 epochs: a trial lasts ~2 s, long enough for the 0.2 s poll to catch one RUNNING;
    # --batch 1: one trial at a time, so one is COMPLETE while the next runs
    path = write_sweep(tmp_path, grid_body("k", alpha="[200]", beta="[0, 0.1]", epochs=400))
    out = tmp_path / "out"
    storage = None if backend == "journal" else f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "hamgraph", "sweep", str(path), "--out", str(out),
           "--device", "cpu", "--batch", "1"] + ([] if storage is None else ["--storage", storage])
    url = storage or sw.storage_url(None, out)
    before, _ = kill_mid_trial(cmd, tmp_path, path, url)
    assert any(t.state == TrialState.RUNNING for t in trials_of(path, url))

    again = subprocess.run(cmd, cwd=tmp_path, env=os.environ.copy(), capture_output=True,
                           text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    trials = trials_of(path, url)
    assert_each_cell_once(trials, ["adam", "a=200,b=0", "a=200,b=0.1"])
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    stale = [t for t in trials if t.user_attrs.get("outcome") == "stale"]
    assert len(stale) >= 1 and all(t.state == TrialState.FAIL for t in stale)
    after = {t.number: t for t in trials}
    for t in before:  # finished trials are untouched
        same = after[t.number]
        assert (same.state, same.value, same.params, same.datetime_complete) == (
            t.state, t.value, t.params, t.datetime_complete)
