"""The mini-batch GCN+ trainer on a small real molhiv subset: end to end, resume, divergence."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from test_graph_data import (  # molhiv_subset: a session fixture
    molhiv_subset,  # noqa: F401
    write_code2,
    write_molpcba,
    write_ppa,
)

from hamgraph import preemption
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import resolve_dataset
from hamgraph.preemption import Preempted
from hamgraph.presets.graph import graph_params
from hamgraph.specs import HamSettings, OptimizerSpec, RunSpec
from hamgraph.train import execute
from hamgraph.train import graph as graph_trainer

CPU = torch.device("cpu")
PAPER_HAM = HamSettings(200.0, 0.1)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is faster and avoids oversubscribing shared CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _spec(epochs: int = 3, ham: HamSettings | None = PAPER_HAM) -> RunSpec:
    params = replace(
        graph_params("ogbg-molhiv"),
        hidden=32,
        layers=2,
        pe_dim=8,
        rwse_steps=6,
        batch_size=32,
        epochs=epochs,
        warmup_epochs=1,
        lr=1e-3,
    )
    return RunSpec("ogbg-molhiv", "gcnplus", params, OptimizerSpec("adamw", ham=ham), run=0, seed=0)


@pytest.fixture
def paths(molhiv_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> DataPaths:  # noqa: F811
    cache = tmp_path_factory.getbasetemp() / "molhiv-subset-cache"
    return DataPaths(cache=cache, mirror=molhiv_subset)


def test_end_to_end_with_ham(paths, tmp_path):
    spec = _spec(epochs=3)
    result = execute(spec, paths, CPU, tmp_path / "ckpt")
    assert result.ok, result.reason
    assert (result.metric, result.epochs, len(result.history)) == ("rocauc", 3, 3)
    assert 1 <= result.best_epoch <= 3
    best = result.history[result.best_epoch - 1]
    assert best.val == result.val and best.test == result.test
    assert best.val == max(h.val for h in result.history)
    assert all(math.isnan(h.train) and math.isfinite(h.loss) for h in result.history)
    assert sum(h.sign_flips for h in result.history) > 0
    assert all(h.mean_abs_weight > 0 for h in result.history)
    assert result.history[0].lr == pytest.approx(1e-3 * 1e-6)  # warmup epoch
    assert result.history[1].lr == pytest.approx(1e-3)
    assert not (tmp_path / "ckpt" / graph_trainer.CHECKPOINT_FILE).exists()  # cleared at the end


def test_same_seed_same_numbers_and_adam_differs(paths):
    a = execute(_spec(epochs=2), paths, CPU)
    b = execute(_spec(epochs=2), paths, CPU)
    adam = execute(_spec(epochs=2, ham=None), paths, CPU)
    assert [h.loss for h in a.history] == [h.loss for h in b.history]
    assert (a.val, a.test) == (b.val, b.test)
    assert adam.history[1].loss != a.history[1].loss
    assert adam.spec.ham is None and adam.spec.optimizer_label == "adamw" and adam.ok


def _comparable(result):
    """Everything but the wall times; NaN (the graph runs' `train`) made comparable."""
    rows = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(h).items()
         if k != "train_seconds"}
        for h in result.history
    ]
    return (result.status, result.val, result.test, result.best_epoch, result.epochs, rows)


def test_resume_after_crash_gives_identical_result(paths, tmp_path, monkeypatch):
    spec = _spec(epochs=4)
    straight = execute(spec, paths, CPU, tmp_path / "straight")

    real_save = graph_trainer.Checkpointer.save

    def crash_after_epoch_2(self, state):
        real_save(self, state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt("simulated crash after the epoch-2 checkpoint")

    ckpt = tmp_path / "resumed"
    monkeypatch.setattr(graph_trainer.Checkpointer, "save", crash_after_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, paths, CPU, ckpt)
    monkeypatch.setattr(graph_trainer.Checkpointer, "save", real_save)
    saved = torch.load(ckpt / graph_trainer.CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 2 and saved["key"] == spec.key()

    torch.manual_seed(12345)  # the global RNG state is restored from the checkpoint
    resumed = execute(spec, paths, CPU, ckpt)
    assert _comparable(resumed) == _comparable(straight)
    assert not (ckpt / graph_trainer.CHECKPOINT_FILE).exists()


def test_stop_request_checkpoints_then_resume_is_identical(paths, tmp_path, monkeypatch):
    """SIGTERM / SIGUSR1 (a stop request) ends a graph run after its next epoch's checkpoint;
    the resumed run has the uninterrupted numbers and keeps the training time spent so far."""
    spec = _spec(epochs=4)
    straight = execute(spec, paths, CPU, tmp_path / "straight")
    seen = {"epochs": 0}
    monkeypatch.setattr(preemption, "stop_requested", lambda: seen["epochs"] >= 2)
    ckpt = tmp_path / "resumed"
    with pytest.raises(Preempted):
        execute(spec, paths, CPU, ckpt, on_epochs=lambda rows: seen.update(epochs=rows[-1].epoch))
    monkeypatch.undo()
    saved = torch.load(ckpt / graph_trainer.CHECKPOINT_FILE, weights_only=True)
    assert saved["epoch"] == 2
    resumed = execute(spec, paths, CPU, ckpt)
    assert _comparable(resumed) == _comparable(straight)
    seconds = [h.train_seconds for h in resumed.history]
    assert seconds[:2] == [row["train_seconds"] for row in saved["history"]]
    assert all(s > 0 for s in seconds) and seconds == sorted(seconds)


def test_train_seconds_exclude_evaluation(paths, monkeypatch):
    """Evaluation advances a fake clock by 1000 s: the wall time sees it, train_seconds not."""
    offset = {"s": 0.0}
    real_clock, real_evaluate = time.perf_counter, graph_trainer.evaluate

    def slow_evaluate(*args, **kwargs):
        offset["s"] += 1000.0
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(time, "perf_counter", lambda: real_clock() + offset["s"])
    monkeypatch.setattr(graph_trainer, "evaluate", slow_evaluate)
    result = execute(_spec(epochs=2), paths, CPU)
    assert result.seconds >= 4000
    seconds = [h.train_seconds for h in result.history]
    assert 0 < seconds[0] < seconds[1] < 1000


def test_checkpoint_of_another_run_is_ignored(paths, tmp_path):
    ckpt = tmp_path / "ckpt"
    graph_trainer.Checkpointer(ckpt, "some-other-key").save({"epoch": 1})
    result = execute(_spec(epochs=1), paths, CPU, ckpt)
    assert result.ok and result.epochs == 1


def test_non_finite_loss_fails_the_run(paths, monkeypatch, tmp_path):
    def nan_loss(data, out, batch):
        return out.sum() * float("nan")

    monkeypatch.setattr(graph_trainer, "_loss", nan_loss)
    result = execute(_spec(epochs=3), paths, CPU, tmp_path / "ckpt")
    assert result.status == "failed" and not result.ok
    assert "nan" in result.reason and "epoch 1" in result.reason
    assert result.epochs == 0 and result.best_epoch == 0


@pytest.mark.parametrize(
    ("dataset", "writer", "rwse"),
    [
        ("ogbg-molpcba", write_molpcba, 3),
        ("ogbg-ppa", write_ppa, 0),
        ("ogbg-code2", write_code2, 0),
    ],
)
def test_other_datasets_train_one_epoch(dataset, writer, rwse, offline_paths):
    info = resolve_dataset(dataset)
    writer(offline_paths.cache / dataset.replace("-", "_"))
    params = replace(
        graph_params(dataset),
        hidden=16,
        layers=1,
        batch_size=4,
        epochs=2,
        warmup_epochs=0,
        rwse_steps=rwse,
        pe_dim=4 if rwse else 0,
    )
    spec = RunSpec(dataset, "gcnplus", params, OptimizerSpec("adamw", ham=PAPER_HAM), run=0, seed=0)
    result = graph_trainer.train_graph_run(spec, info, offline_paths, CPU, None)
    assert result.ok, result.reason
    assert result.metric == info.metric and result.epochs == 2
    assert all(0.0 <= h.val <= 1.0 and 0.0 <= h.test <= 1.0 for h in result.history)
