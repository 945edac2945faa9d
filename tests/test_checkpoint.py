"""Checkpoints of node runs and packs: an interrupted run, resumed, ends with exactly the
numbers of an uninterrupted one; stop requests (SIGTERM / SIGUSR1) checkpoint and exit; the
history's train_seconds column (training time, evaluation excluded) survives a resume."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
import torch

from hamgraph import preemption
from hamgraph.data.registry import resolve_dataset
from hamgraph.preemption import Preempted
from hamgraph.specs import EpochStats, HamSettings, NodeParams, OptimizerSpec, RunResult, RunSpec
from hamgraph.train import node as node_trainer
from hamgraph.train import packed as packed_trainer
from hamgraph.train.checkpoint import CHECKPOINT_FILE, Checkpointer
from hamgraph.train.common import TrainClock
from hamgraph.train.node import train_node_run
from hamgraph.train.packed import train_node_pack

CPU = torch.device("cpu")
CSBM = "csbm-h0.8-n200"
PARAMS = NodeParams(lr=1e-2, hidden=16, layers=2, dropout=0.5, weight_decay=5e-4, epochs=35)
OPTIMIZERS = [
    None,
    HamSettings(alpha=100.0, beta=0.1),
    HamSettings(alpha=-10.0, beta=0.0),
    HamSettings(alpha=50.0, beta=0.01, sign_source="previous"),
]


@pytest.fixture(autouse=True)
def _no_stop_request():
    preemption.reset()
    yield
    preemption.reset()


def _spec(ham=None, run=0, seed=3, params=PARAMS) -> RunSpec:
    return RunSpec(CSBM, "gcn", params, OptimizerSpec("adam", ham=ham), run=run, seed=seed)


def _numbers(result: RunResult) -> tuple:
    """Everything of a result but the wall-clock times."""
    history = [dataclasses.replace(h, train_seconds=0.0) for h in result.history]
    return (result.spec.key(), result.status, result.val, result.test, result.best_epoch,
            result.epochs, result.reason, history)


def _stop_after(monkeypatch, epochs: int) -> None:
    """A stop request (as SIGTERM makes one) that the trainer sees after epoch `epochs`."""
    calls = {"n": 0}

    def stop_requested() -> bool:
        calls["n"] += 1
        return calls["n"] >= epochs

    monkeypatch.setattr(preemption, "stop_requested", stop_requested)


def _assert_train_seconds(history) -> None:
    seconds = [h.train_seconds for h in history]
    assert all(math.isfinite(s) and s > 0 for s in seconds)
    assert seconds == sorted(seconds)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stop_at", [10, 13])  # at a host sync, between two
def test_node_run_stopped_and_resumed_equals_uninterrupted(offline_paths, tmp_path, monkeypatch,
                                                           dtype, stop_at):
    spec = _spec(HamSettings(alpha=100.0, beta=0.1))
    info = resolve_dataset(CSBM)
    whole = train_node_run(spec, info, offline_paths, CPU, dtype=dtype)

    folder = tmp_path / "ckpt"
    with monkeypatch.context() as patch:
        _stop_after(patch, stop_at)
        with pytest.raises(Preempted):
            train_node_run(spec, info, offline_paths, CPU, dtype=dtype,
                           checkpointer=Checkpointer(folder, spec.key(), interval=1e9))
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    assert state["epoch"] == stop_at and len(state["train_seconds"]) == stop_at
    resumed = train_node_run(spec, info, offline_paths, CPU, dtype=dtype,
                             checkpointer=Checkpointer(folder, spec.key(), interval=1e9))
    assert _numbers(resumed) == _numbers(whole)
    _assert_train_seconds(resumed.history)
    assert resumed.history[stop_at - 1].train_seconds == state["train_seconds"][-1]


def test_node_run_periodic_checkpoint_survives_a_crash(offline_paths, tmp_path):
    """interval 0: a checkpoint at every host sync; a crash after epoch 30 resumes from 20."""
    spec = _spec(HamSettings(alpha=50.0, beta=0.01, sign_source="previous"))
    info = resolve_dataset(CSBM)
    whole = train_node_run(spec, info, offline_paths, CPU)

    def crash(rows):
        if rows[-1].epoch == 30:
            raise RuntimeError("power loss")

    folder = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="power loss"):
        train_node_run(spec, info, offline_paths, CPU, on_epochs=crash,
                       checkpointer=Checkpointer(folder, spec.key(), interval=0))
    assert torch.load(folder / CHECKPOINT_FILE, weights_only=True)["epoch"] == 20
    seen = []
    resumed = train_node_run(spec, info, offline_paths, CPU, on_epochs=seen.extend,
                             checkpointer=Checkpointer(folder, spec.key(), interval=0))
    assert [row.epoch for row in seen] == list(range(21, 36))
    assert _numbers(resumed) == _numbers(whole)


def test_checkpoint_of_another_run_is_ignored(offline_paths, tmp_path, monkeypatch):
    spec, other = _spec(), _spec(seed=4)
    info = resolve_dataset(CSBM)
    folder = tmp_path / "ckpt"
    with monkeypatch.context() as patch:
        _stop_after(patch, 5)
        with pytest.raises(Preempted):
            train_node_run(other, info, offline_paths, CPU,
                           checkpointer=Checkpointer(folder, other.key()))
    result = train_node_run(spec, info, offline_paths, CPU,
                            checkpointer=Checkpointer(folder, spec.key()))
    assert _numbers(result) == _numbers(train_node_run(spec, info, offline_paths, CPU))


def test_unreadable_checkpoint_starts_over(offline_paths, tmp_path, caplog):
    spec = _spec()
    info = resolve_dataset(CSBM)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(b"PK\x03\x04 truncated")
    result = train_node_run(spec, info, offline_paths, CPU,
                            checkpointer=Checkpointer(folder, spec.key()))
    assert _numbers(result) == _numbers(train_node_run(spec, info, offline_paths, CPU))
    assert "cannot read it" in caplog.text


def _pack(params=PARAMS, optimizers=OPTIMIZERS) -> list[RunSpec]:
    return [_spec(ham, run=0, seed=7 + i, params=params) for i, ham in enumerate(optimizers)]


def _pack_checkpointer(folder, specs, interval=1e9) -> Checkpointer:
    keys = [spec.key() for spec in specs]
    return Checkpointer(folder, "pack-test", interval=interval, members=keys)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("stop_at", [10, 17])
def test_pack_stopped_and_resumed_equals_uninterrupted(offline_paths, tmp_path, monkeypatch,
                                                       dtype, stop_at):
    specs = _pack()
    info = resolve_dataset(CSBM)
    whole = train_node_pack(specs, info, offline_paths, CPU, dtype=dtype)
    folder = tmp_path / "pack"
    with monkeypatch.context() as patch:
        _stop_after(patch, stop_at)
        with pytest.raises(Preempted):
            train_node_pack(specs, info, offline_paths, CPU, dtype=dtype,
                            checkpointer=_pack_checkpointer(folder, specs))
    assert torch.load(folder / CHECKPOINT_FILE, weights_only=True)["epoch"] == stop_at
    reported = []
    resumed = train_node_pack(specs, info, offline_paths, CPU, dtype=dtype,
                              on_result=reported.append,
                              checkpointer=_pack_checkpointer(folder, specs))
    assert [_numbers(r) for r in resumed] == [_numbers(r) for r in whole]
    assert [r.spec.key() for r in reported] == [s.key() for s in specs]
    for result in resumed:
        _assert_train_seconds(result.history)


def test_pack_with_a_diverged_run_resumes_without_reporting_it_again(offline_paths, tmp_path,
                                                                      monkeypatch):
    """nHAM(-1000) at lr 0.05 diverges at epoch 12 (noticed at the sync of epoch 20): frozen
    and final before the stop after epoch 23; the resumed pack keeps it frozen and final."""
    params = dataclasses.replace(PARAMS, lr=0.05)
    specs = _pack(params, [None, HamSettings(alpha=100.0, beta=0.1), HamSettings(-1000.0, 0.0)])
    info = resolve_dataset(CSBM)
    whole = train_node_pack(specs, info, offline_paths, CPU)
    assert [r.status for r in whole] == ["ok", "ok", "failed"]
    folder = tmp_path / "pack"
    before = []
    with monkeypatch.context() as patch:
        _stop_after(patch, 23)
        with pytest.raises(Preempted):
            train_node_pack(specs, info, offline_paths, CPU, on_result=before.append,
                            checkpointer=_pack_checkpointer(folder, specs))
    assert [r.spec.key() for r in before] == [specs[2].key()]
    after = []
    resumed = train_node_pack(specs, info, offline_paths, CPU, on_result=after.append,
                              checkpointer=_pack_checkpointer(folder, specs))
    assert [r.spec.key() for r in after] == [specs[0].key(), specs[1].key()]
    assert [_numbers(r) for r in resumed] == [_numbers(r) for r in whole]


def test_pack_checkpoint_of_other_members_is_ignored(offline_paths, tmp_path, monkeypatch):
    specs = _pack()
    info = resolve_dataset(CSBM)
    folder = tmp_path / "pack"
    with monkeypatch.context() as patch:
        _stop_after(patch, 10)
        with pytest.raises(Preempted):
            train_node_pack(specs, info, offline_paths, CPU,
                            checkpointer=_pack_checkpointer(folder, specs))
    fewer = specs[1:]
    resumed = train_node_pack(fewer, info, offline_paths, CPU,
                              checkpointer=_pack_checkpointer(folder, fewer))
    whole = train_node_pack(fewer, info, offline_paths, CPU)
    assert [_numbers(r) for r in resumed] == [_numbers(r) for r in whole]


def test_pack_train_seconds_are_the_pack_time_shared(offline_paths):
    specs = _pack()
    results = train_node_pack(specs, resolve_dataset(CSBM), offline_paths, CPU)
    first = [h.train_seconds for h in results[0].history]
    for result in results:
        assert [h.train_seconds for h in result.history] == first
        assert result.history[-1].train_seconds < result.seconds
    _assert_train_seconds(results[0].history)


def _fake_clock(monkeypatch) -> dict[str, float]:
    """time.perf_counter plus an offset that a test's evaluation advances."""
    offset = {"s": 0.0}
    real = time.perf_counter
    monkeypatch.setattr(time, "perf_counter", lambda: real() + offset["s"])
    return offset


def test_node_train_seconds_exclude_evaluation(offline_paths, monkeypatch):
    """Each metric call advances a fake clock by 1000 s: `seconds` sees it, train_seconds not."""
    offset = _fake_clock(monkeypatch)
    real_resolve = node_trainer.resolve_metric

    def slow_resolve(name):
        metric = real_resolve(name)

        def slow(scores, labels):
            offset["s"] += 1000.0
            return metric(scores, labels)

        return slow

    monkeypatch.setattr(node_trainer, "resolve_metric", slow_resolve)
    params = dataclasses.replace(PARAMS, epochs=12)
    result = train_node_run(_spec(params=params), resolve_dataset(CSBM), offline_paths, CPU)
    assert result.seconds >= 3 * 12 * 1000
    _assert_train_seconds(result.history)
    assert result.history[-1].train_seconds < 1000


def test_pack_train_seconds_exclude_evaluation(offline_paths, monkeypatch):
    offset = _fake_clock(monkeypatch)
    real_rows = packed_trainer.ROW_METRICS["accuracy"]

    def slow_rows(*args):
        offset["s"] += 1000.0
        return real_rows(*args)

    monkeypatch.setitem(packed_trainer.ROW_METRICS, "accuracy", slow_rows)
    params = dataclasses.replace(PARAMS, epochs=12)
    results = train_node_pack(_pack(params), resolve_dataset(CSBM), offline_paths, CPU)
    for result in results:
        assert result.seconds >= 3 * 12 * 1000 / len(results)
        _assert_train_seconds(result.history)
        assert result.history[-1].train_seconds < 1000


def test_train_clock_on_cpu_is_cumulative_and_resumable():
    clock = TrainClock(CPU, [1.5, 2.5])
    clock.start()
    clock.stop()
    assert clock.settle()[:2] == [1.5, 2.5] and clock.totals[2] >= 2.5 and len(clock.totals) == 3
    with pytest.raises(RuntimeError):
        clock.stop()


def test_old_records_without_train_seconds_read_as_nan(tmp_path):
    """A record (or history row) written before the column existed: train_seconds is NaN."""
    from hamgraph.store import ResultStore

    spec = _spec()
    old_row = {"epoch": 1, "loss": 0.5, "train": 0.5, "val": 0.5, "test": 0.5, "lr": 0.01,
               "sign_flips": 0, "mean_abs_weight": 0.1}
    store = ResultStore(tmp_path)
    store.add(RunResult(spec, "accuracy", "ok", 0.5, 0.5, 1, 1, 1.0,
                        history=[EpochStats(**old_row)]))
    record = store.record_path(spec.key())
    data = json.loads(record.read_text())
    for row in data["history"]:
        del row["train_seconds"]
    record.write_text(json.dumps(data))
    loaded = store.load(spec.key())
    assert math.isnan(loaded.history[0].train_seconds)
    header = store.history_path(spec.key()).read_text().splitlines()[0].split(",")
    assert header[-1] == "train_seconds"
