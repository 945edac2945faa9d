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
    """Everything of a result but the wall-clock times (NaN as "nan", so it compares equal)."""

    def plain(value):
        return "nan" if isinstance(value, float) and math.isnan(value) else value

    history = [dataclasses.replace(h, train_seconds=0.0) for h in result.history]
    return (result.spec.key(), result.status, plain(result.val), plain(result.test),
            result.best_epoch, result.epochs, result.reason, history)


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
    real_metric = node_trainer.node_metric

    def slow_metric(choice):
        metric = real_metric(choice)

        def slow(scores, labels):
            offset["s"] += 1000.0
            return metric(scores, labels)

        return slow

    monkeypatch.setattr(node_trainer, "node_metric", slow_metric)
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


# --- the runner: pack checkpoints in the result store -------------------------------------------


ADAM_AND_HAM = (None, HamSettings(100.0, 0.1))


def _grid_specs(epochs=35, lr=None, optimizers=ADAM_AND_HAM, runs=3):
    from hamgraph.grid import specs_for

    overrides = {"epochs": epochs, "hidden": 8, **({} if lr is None else {"lr": lr})}
    return [s for ham in optimizers for s in specs_for(CSBM, "gcn", ham, overrides=overrides,
                                                      runs=runs)]


def _stored_numbers(store, specs) -> list[tuple]:
    return [_numbers(store.load(spec.key())) for spec in specs]


def test_runner_resumes_a_stopped_pack_however_it_would_pack_now(offline_paths, tmp_path,
                                                                  monkeypatch):
    """A pack of 6 stopped after epoch 17, rerun with another --pack: the runner packs the
    checkpointed runs together again, ends with the uninterrupted numbers, removes it."""
    from hamgraph.runner import execute_specs
    from hamgraph.store import ResultStore

    specs = _grid_specs()
    whole = ResultStore(tmp_path / "whole")
    execute_specs(specs, whole, offline_paths, CPU, pack=6, progress=False)
    store = ResultStore(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        _stop_after(patch, 17)
        with pytest.raises(Preempted):
            execute_specs(specs, store, offline_paths, CPU, pack=6, progress=False)
    assert store.finished_keys() == set()
    (folder,) = (tmp_path / "stopped" / "checkpoints").glob("pack-*")
    assert folder == store.pack_checkpoint_dir(s.key() for s in specs)
    assert torch.load(folder / CHECKPOINT_FILE, weights_only=True)["epoch"] == 17
    outcomes = execute_specs(specs, store, offline_paths, CPU, pack=2, progress=False)
    assert all(o.ok and o.trained for o in outcomes)
    assert _stored_numbers(store, specs) == _stored_numbers(whole, specs)
    assert not (tmp_path / "stopped" / "checkpoints").exists()


def test_runner_resumes_a_pack_whose_diverged_run_is_recorded(offline_paths, tmp_path,
                                                               monkeypatch):
    """The diverged run of the pack was stored before the stop: the rerun's 2 runs still
    continue from the pack checkpoint of 3 (the recorded one trains along, not stored again)."""
    from hamgraph.runner import execute_specs
    from hamgraph.store import ResultStore

    specs = _grid_specs(lr=0.05, optimizers=(None, HamSettings(100.0, 0.1),
                                             HamSettings(-1000.0, 0.0)), runs=1)
    whole = ResultStore(tmp_path / "whole")
    execute_specs(specs, whole, offline_paths, CPU, pack=3, progress=False)
    assert [whole.load(s.key()).status for s in specs] == ["ok", "ok", "failed"]
    store = ResultStore(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        _stop_after(patch, 23)
        with pytest.raises(Preempted):
            execute_specs(specs, store, offline_paths, CPU, pack=3, progress=False)
    assert store.finished_keys() == {specs[2].key()}
    failed_record = store.record_path(specs[2].key()).read_bytes()
    logs = []
    monkeypatch.setattr("hamgraph.train.packed.log.info", lambda *a: logs.append(a[0] % a[1:]))
    execute_specs(specs, store, offline_paths, CPU, pack="auto", progress=False)
    assert any("resuming after epoch 23" in line for line in logs)
    assert store.record_path(specs[2].key()).read_bytes() == failed_record
    assert _stored_numbers(store, specs) == _stored_numbers(whole, specs)
    assert not (tmp_path / "stopped" / "checkpoints").exists()


def test_runner_ignores_a_pack_checkpoint_of_other_members_and_removes_it(offline_paths, tmp_path,
                                                                          monkeypatch):
    from hamgraph.runner import execute_specs, pack_checkpoints
    from hamgraph.store import ResultStore

    specs = _grid_specs(runs=2)
    store = ResultStore(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        _stop_after(patch, 12)
        with pytest.raises(Preempted):
            execute_specs(specs, store, offline_paths, CPU, pack=4, progress=False)
    assert [c.members for c in pack_checkpoints(store)] == [tuple(s.key() for s in specs)]
    fewer = specs[:3]  # the grid changed: one run less, not recorded
    execute_specs(fewer, store, offline_paths, CPU, pack=4, progress=False)
    whole = ResultStore(tmp_path / "whole")
    execute_specs(fewer, whole, offline_paths, CPU, pack=4, progress=False)
    assert _stored_numbers(store, fewer) == _stored_numbers(whole, fewer)
    assert pack_checkpoints(store) == []  # superseded by the pack that shared its runs


def test_runner_single_node_run_checkpoint_resumes_and_is_removed(offline_paths, tmp_path,
                                                                   monkeypatch):
    from hamgraph.runner import execute_specs
    from hamgraph.store import ResultStore

    (spec,) = _grid_specs(optimizers=(HamSettings(100.0, 0.1),), runs=1)
    store = ResultStore(tmp_path / "stopped")
    with monkeypatch.context() as patch:
        _stop_after(patch, 14)
        with pytest.raises(Preempted):
            execute_specs([spec], store, offline_paths, CPU, progress=False)
    folder = tmp_path / "stopped" / "checkpoints" / spec.key()
    assert torch.load(folder / CHECKPOINT_FILE, weights_only=True)["epoch"] == 14
    execute_specs([spec], store, offline_paths, CPU, progress=False)
    assert _numbers(store.load(spec.key())) == _numbers(train_node_run(
        spec, resolve_dataset(CSBM), offline_paths, CPU))
    assert not (tmp_path / "stopped" / "checkpoints").exists()


def test_runner_starts_no_new_pack_after_a_stop_request(offline_paths, tmp_path):
    from hamgraph.runner import execute_specs
    from hamgraph.store import ResultStore

    preemption.request_stop()
    with pytest.raises(Preempted):
        execute_specs(_grid_specs(runs=1), ResultStore(tmp_path), offline_paths, CPU,
                      progress=False)
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())


def test_checkpoint_of_another_hamgraph_version_is_ignored(tmp_path, monkeypatch, caplog):
    from hamgraph.train import checkpoint

    Checkpointer(tmp_path, "k").save({"epoch": 3})
    assert Checkpointer(tmp_path, "k").load()["epoch"] == 3
    monkeypatch.setattr(checkpoint, "__version__", "0.0.0-other")
    assert Checkpointer(tmp_path, "k").load() is None
    assert "written by hamgraph" in caplog.text
