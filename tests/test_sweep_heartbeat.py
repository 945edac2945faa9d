"""Heartbeats on every storage: a worker killed on another host is retried on SQLite and
PostgreSQL too (not only on the journal); a bad --storage URL is one line, exit 2, nothing written.

Own file so that `pytest -n 2 --dist loadfile` runs it beside the other sweep tests.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path

import optuna
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
from hamgraph.cli import main
from hamgraph.sweep import coordination as co

# A `hamgraph sweep` whose trials say they run on another host (so no worker here can see that
# its process is gone: only the heartbeat tells).
ELSEWHERE = (
    "import socket, sys\n"
    "socket.gethostname = lambda: 'elsewhere.invalid'\n"
    "from hamgraph.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def rdb_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An RDB storage URL: SQLite in tmp_path, or $HAMGRAPH_TEST_POSTGRES_URL (unset: skip)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    url = os.environ.get("HAMGRAPH_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("HAMGRAPH_TEST_POSTGRES_URL is not set (.ci/postgres.sh sets it)")
    return sw.storage_url(url, tmp_path)


def _sqlite_study(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(storage=sw.open_storage(f"sqlite:///{tmp_path / 'o.db'}"))


def _claim_elsewhere(trial: optuna.Trial, beat: float | None) -> None:
    """Claim `trial` as a worker on another host would; `beat`: its last heartbeat, if any."""
    owner = {"trial": trial.number, "host": "elsewhere.invalid", "pid": 1, "start": ""}
    trial.storage.set_trial_system_attr(trial._trial_id, co.S_OWNER, owner)
    if beat is not None:
        trial.storage.set_trial_system_attr(trial._trial_id, co.S_HEARTBEAT, beat)


# --- heartbeats on RDB storages -----------------------------------------------------------------


def test_heartbeat_beats_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(co, "HEARTBEAT_SECONDS", 0.05)
    study = _sqlite_study(tmp_path)
    trial = study.ask()
    co.claim(trial)
    claimed = study.get_trials(deepcopy=False)[0].system_attrs[co.S_HEARTBEAT]
    beats = []
    with co.Heartbeat([trial]):
        for _ in range(3):
            time.sleep(0.3)
            beats.append(study.get_trials(deepcopy=False)[0].system_attrs[co.S_HEARTBEAT])
    assert claimed < beats[0] < beats[1] < beats[2] <= time.time()


def test_a_trial_of_another_host_is_stale_only_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _sqlite_study(tmp_path)
    fresh, old, quiet = study.ask(), study.ask(), study.ask()
    _claim_elsewhere(fresh, time.time())
    _claim_elsewhere(old, time.time() - co.GRACE_SECONDS - 1)
    # claimed without a beat (an older hamgraph on an RDB storage): its start is its last sign
    _claim_elsewhere(quiet, None)
    assert co.recover_stale(study) == [old.number]
    assert co.recover_stale(study) == []
    monkeypatch.setattr(co, "GRACE_SECONDS", 0.5)
    time.sleep(1.0)
    _claim_elsewhere(fresh, time.time())  # still beating
    assert co.recover_stale(study) == [quiet.number]
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert states[fresh.number] == TrialState.RUNNING
    assert states[old.number] == states[quiet.number] == TrialState.FAIL
    retries = [t.system_attrs[co.S_RETRY_OF] for t in study.get_trials(deepcopy=False)
               if t.state == TrialState.WAITING]
    assert retries == [old.number, quiet.number]


def test_worker_killed_on_another_host_is_retried_on_an_rdb_storage(
    tmp_path: Path, rdb_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 400 epochs: a trial lasts ~2 s, long enough for the 0.2 s poll to catch one RUNNING;
    # --batch 1: one trial at a time, so one is COMPLETE while the next runs
    name = f"hb{uuid.uuid4().hex[:8]}"  # a fresh study on a shared PostgreSQL database
    path = write_sweep(tmp_path, grid_body(name, alpha="[200]", beta="[0, 0.1]", epochs=400))
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", ELSEWHERE, "sweep", str(path), "--out", str(out),
           "--device", "cpu", "--batch", "1", "--storage", rdb_url]
    _, running = kill_mid_trial(cmd, tmp_path, path, rdb_url)
    (dead,) = running
    assert dead.system_attrs[co.S_OWNER]["host"] == "elsewhere.invalid"
    assert isinstance(dead.system_attrs.get(co.S_HEARTBEAT), float)  # the live worker beat

    monkeypatch.setattr(co, "GRACE_SECONDS", 1.0)
    monkeypatch.setattr(co, "HEARTBEAT_SECONDS", 0.2)  # beats of this process stay fresh
    time.sleep(1.5)  # the dead worker's last beat is now older than the grace period
    assert sw.run_sweep(path, storage=rdb_url, out=out, device="cpu", batch=1).finished
    trials = trials_of(path, rdb_url)
    assert_each_cell_once(trials, ["adam", "a=200,b=0", "a=200,b=0.1"])
    assert not any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials)
    after = {t.number: t for t in trials}[dead.number]
    assert (after.state, after.user_attrs["outcome"]) == (TrialState.FAIL, "stale")
    assert any(t.system_attrs.get(co.S_RETRY_OF) == dead.number for t in trials)


# --- bad --storage ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["mysql://u:secret@h/db", "foo://bar", "postgresql://u@h:x/db"])
def test_bad_storage_url_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if url.startswith("mysql:") and importlib.util.find_spec("MySQLdb") is not None:
        pytest.skip("MySQLdb is installed: mysql:// is not a missing driver here")
    path = write_sweep(tmp_path, grid_body("bad"))
    out = tmp_path / "out"
    code = main(["sweep", str(path), "--out", str(out), "--storage", url, "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hamgraph: error: --storage "), err
    assert url.split("://")[0] in lines[0] and "secret" not in lines[0]
    assert not out.exists()
    assert not any(tmp_path.glob("*.db"))
