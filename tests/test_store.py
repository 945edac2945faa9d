"""ResultStore: layout, round trip, crash safety, several writers at once."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from hamgraph.specs import (
    EpochStats,
    HamSettings,
    NodeParams,
    OptimizerSpec,
    RunResult,
    RunSpec,
)
from hamgraph.store import RUN_COLUMNS, ResultStore

PARAMS = NodeParams(lr=0.01, hidden=16, layers=2, dropout=0.5, weight_decay=5e-4, epochs=3)


def make_result(run: int = 0, ham: HamSettings | None = None, status: str = "ok") -> RunResult:
    spec = RunSpec("csbm-h0.8", "gcn", PARAMS, OptimizerSpec("adam", ham=ham), run=run, seed=run)
    history = [
        EpochStats(e, 1.0 / e, 0.5 + e / 100, 0.4 + e / 100, 0.3 + e / 100, 0.01, e, 0.1)
        for e in (1, 2, 3)
    ]
    if status == "failed":
        return RunResult(spec, "accuracy", "failed", math.nan, math.nan, 0, 1, 0.5,
                         reason="loss is nan\nat epoch 2", history=history[:1])
    return RunResult(spec, "accuracy", "ok", 0.4 + run / 1000 + 1 / 3, 0.31 + run / 1000, 2, 3,
                     1.23456, history=history)


def test_add_writes_record_history_and_row(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "out")
    assert store.finished_keys() == set()
    empty = store.frame()
    assert list(empty.columns) == RUN_COLUMNS and empty.empty
    assert not (tmp_path / "out").exists()  # reading creates nothing

    ok = make_result(0)
    failed = make_result(1, HamSettings(alpha=-10, beta=0.01), status="failed")
    store.add(ok)
    store.add(failed)

    key = ok.spec.key()
    assert store.finished_keys() == {key, failed.spec.key()}
    assert (store.root / "records" / f"{key}.json").is_file()
    history = pd.read_csv(store.root / "history" / f"{key}.csv")
    assert list(history.columns) == [
        "epoch", "loss", "train", "val", "test", "lr", "sign_flips", "mean_abs_weight",
        "train_seconds",
    ]
    assert len(history) == 3

    frame = store.frame()
    assert list(frame.columns) == RUN_COLUMNS
    assert list(frame["key"]) == [key, failed.spec.key()]
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["val"] == ok.val and first["test"] == ok.test  # exact round trip
    assert math.isnan(first["alpha"]) and math.isnan(first["beta"])
    assert first["optimizer"] == "adam" and first["status"] == "ok" and first["reason"] == ""
    assert first["history"] == f"history/{key}.csv"
    assert second["optimizer"] == "nham" and second["alpha"] == -10 and second["beta"] == 0.01
    assert second["status"] == "failed" and math.isnan(second["val"])
    assert second["reason"] == "loss is nan at epoch 2"  # one line

    # the record is standard JSON and reloads into the same RunResult
    record = json.loads((store.root / "records" / f"{failed.spec.key()}.json").read_text())
    assert record["val"] is None and record["spec"]["optimizer"]["ham"]["alpha"] == -10
    for original in (ok, failed):
        loaded = store.load(original.spec.key())
        assert loaded.spec == original.spec and loaded.spec.key() == original.spec.key()
        assert loaded.history == original.history
        assert loaded.status == original.status and loaded.epochs == original.epochs
    assert store.load(key).val == ok.val


def test_temp_files_and_history_without_record_are_not_finished(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    done = make_result(0)
    store.add(done)
    half = make_result(1)  # killed after its history, before its record
    (store.root / "history" / f"{half.spec.key()}.csv").write_text("epoch,loss\n1,0.5\n")
    dead_pid = _dead_pid()
    leftovers = [
        store.root / "records" / f".{half.spec.key()}.json.{_host()}.{dead_pid}.ab12cd34.tmp",
        store.root / f".runs.csv.{_host()}.{dead_pid}.ab12cd34.tmp",
    ]
    for path in leftovers:
        path.write_text('{"half": ')
    alive = store.root / "records" / f".x.json.{_host()}.{os.getpid()}.00000000.tmp"
    alive.write_text("{")

    assert store.finished_keys() == {done.spec.key()}
    assert list(store.frame()["key"]) == [done.spec.key()]
    assert store.clean_temp_files() == 2
    assert not any(path.exists() for path in leftovers)
    assert alive.exists()  # a live writer's temp file is left alone


def test_runs_csv_is_repaired_from_records(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    results = [make_result(i) for i in range(3)]
    for result in results:
        store.add(result)
    rows_before = store.runs_csv.read_text()

    # killed between a record and the runs.csv rewrite: the record has no row
    lines = rows_before.splitlines(keepends=True)
    store.runs_csv.write_text("".join(lines[:-1]))
    store.sync()
    assert store.runs_csv.read_text() == rows_before

    # a broken CSV (not from the store, e.g. edited by hand) is rebuilt from the records
    store.runs_csv.write_text("key,val\nbroken")
    assert sorted(store.frame()["key"]) == sorted(r.spec.key() for r in results)

    # a record removed by hand: its row goes too
    store.record_path(results[0].spec.key()).unlink()
    assert set(store.frame()["key"]) == {r.spec.key() for r in results[1:]}


def test_adding_a_key_again_replaces_its_row(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    first = make_result(0)
    store.add(first)
    store.add(make_result(1))
    again = make_result(0)
    again.test = 0.99
    store.add(again)
    frame = store.frame()
    assert len(frame) == 2 and frame.iloc[0]["test"] == 0.99


def test_a_record_replaced_without_its_row_is_repaired(tmp_path: Path, monkeypatch) -> None:
    """A process that dies between writing a replaced record and rewriting runs.csv left the
    old row for good (resume and --rerun-stale read runs.csv); the next start re-reads it."""
    store = ResultStore(tmp_path)
    store.add(make_result(0))
    store.add(make_result(1))
    again = make_result(0)
    again.test = 0.99
    monkeypatch.setattr(ResultStore, "sync", lambda self, new=None: None)  # "killed" here
    store.add(again)
    monkeypatch.undo()
    record = store.record_path(again.spec.key())
    later = store.runs_csv.stat().st_mtime_ns + 10**9
    os.utime(record, ns=(later, later))
    assert 0.99 not in set(pd.read_csv(store.runs_csv)["test"])
    ResultStore(tmp_path).prepare()
    frame = pd.read_csv(store.runs_csv)
    assert dict(zip(frame["run"], frame["test"], strict=True)) == {0: 0.99,
                                                                 1: make_result(1).test}


def _add_many(root: str, worker: int, count: int) -> None:
    """Adds results; exits 3 if a row it added ever goes missing from runs.csv."""
    store = ResultStore(root)
    mine: set[str] = set()
    for i in range(count):
        result = make_result(worker * 1000 + i)
        store.add(result)
        mine.add(result.spec.key())
        # under the lock, a row is never dropped by another writer's rewrite
        on_disk = set(pd.read_csv(store.runs_csv)["key"])
        if not mine <= on_disk:
            sys.exit(3)


def test_concurrent_adds_lose_no_rows(tmp_path: Path) -> None:
    workers, count = 3, 15
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_add_many, args=(str(tmp_path), w, count)) for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    store = ResultStore(tmp_path)
    expected = {make_result(w * 1000 + i).spec.key() for w in range(workers) for i in range(count)}
    # read the file as written (frame() would repair a lost row and hide the bug)
    on_disk = pd.read_csv(store.runs_csv)
    assert len(on_disk) == workers * count
    assert set(on_disk["key"]) == expected == store.finished_keys()
    assert not list(tmp_path.rglob("*.tmp"))


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_store import make_result
    from hamgraph.store import ResultStore
    store = ResultStore({root!r})
    for i in range(100000):
        store.add(make_result(i))
    """
)


@pytest.mark.parametrize("delay", [0.8, 1.3])
def test_kill_9_while_adding_leaves_a_consistent_store(tmp_path: Path, delay: float) -> None:
    root = tmp_path / "store"
    script = _KILL_SCRIPT.format(tests=str(Path(__file__).parent), root=str(root))
    process = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not (root / "runs.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL

    store = ResultStore(root)
    keys = store.finished_keys()
    assert keys, "nothing was recorded before the kill"
    for key in keys:  # every record that counts as finished is complete
        loaded = store.load(key)
        assert loaded.spec.key() == key and len(loaded.history) == 3
        assert (root / "history" / f"{key}.csv").is_file()
    raw = pd.read_csv(root / "runs.csv")  # never half-written
    assert set(raw["key"]) <= keys and raw["key"].is_unique
    assert raw[["val", "test"]].notna().all().all()
    assert set(store.frame()["key"]) == keys  # the missing row (if any) is restored


def _host() -> str:
    import socket

    return socket.gethostname().replace(".", "_")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
