"""`hamgraph run`: resume, failures, Ctrl-C, --fresh, summary; end to end with the real trainer."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import hamgraph.train
from hamgraph.cells import format_summary, summarize
from hamgraph.cli import main
from hamgraph.config import load_config
from hamgraph.errors import DatasetUnavailableError
from hamgraph.grid import expand, run_grid
from hamgraph.specs import EpochStats, RunResult, RunSpec
from hamgraph.store import RUN_COLUMNS, ResultStore

GRID = """\
name: fake
runs: 2
epochs: 3
grid:
  dataset: [csbm-h0.8-n200, csbm-h0.2-n200]
  model: [gcn]
  optimizer: [adam, {ham: {alpha: 10, beta: 0.01}}, {nham: {alpha: -10, beta: 0}}]
"""
N_SPECS = 2 * 1 * 3 * 2


class FakeTrainer:
    """Stands in for hamgraph.train.execute: instant, deterministic, can fail on demand."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.diverge: set[str] = set()  # optimizer labels returning a failed result
        self.crash: set[str] = set()  # optimizer labels raising RuntimeError
        self.unavailable: set[str] = set()  # datasets raising DatasetUnavailableError
        self.interrupt_at: int | None = None  # raise KeyboardInterrupt on this call (0-based)

    def __call__(self, spec: RunSpec, paths, device, checkpoint_dir=None, on_epochs=None):
        assert checkpoint_dir is not None and checkpoint_dir.is_dir()
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls.append(spec.key())
        if spec.dataset in self.unavailable:
            raise DatasetUnavailableError(f"{spec.dataset}: raw files missing")
        if spec.optimizer.kind in self.crash:
            raise RuntimeError("CUDA out of memory (pretend)")
        history = [EpochStats(e, 1 / e, 0.5, 0.5, 0.5, 0.01, 0, 0.1) for e in (1, 2, 3)]
        if spec.optimizer.kind in self.diverge:
            return RunResult(spec, "accuracy", "failed", math.nan, math.nan, 0, 1, 0.01,
                             reason="loss became nan at epoch 2", history=history[:1])
        val = 0.5 + 0.1 * spec.run + (0.05 if spec.ham else 0.0)
        return RunResult(spec, "accuracy", "ok", val, val - 0.1, 2, 3, 0.01, history=history)


def run_code(grid_file: Path, **kwargs) -> int:
    """`hamgraph run`'s exit code without the CLI; one run at a time, like the fake trainer."""
    return 1 if run_grid(grid_file, pack="off", **kwargs).failed else 0


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTrainer:
    trainer = FakeTrainer()
    monkeypatch.setattr(hamgraph.train, "execute", trainer)
    return trainer


@pytest.fixture
def grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def test_run_resume_and_summary(
    fake: FakeTrainer, grid_file: Path, tmp_path: Path, capsys, caplog
) -> None:
    out = tmp_path / "out"
    outcome = run_grid(grid_file, out=out, device="cpu", pack="off")
    assert not outcome.failed
    specs = expand(load_config(grid_file))
    assert fake.calls == [s.key() for s in specs]  # stable order, each once
    frame = ResultStore(out).frame()
    assert list(frame.columns) == RUN_COLUMNS and len(frame) == N_SPECS
    assert list(frame["key"]) == [s.key() for s in specs]
    assert set(frame["status"]) == {"ok"}
    assert (out / "config.yaml").is_file() and load_config(out / "config.yaml").run_name == "fake"
    assert not (out / "checkpoints").exists()  # empty checkpoint dirs are not kept
    table = format_summary(outcome.summary)
    assert "csbm-h0.8-n200" in table and "ham(10, 0.01)" in table and "nham(-10, 0)" in table
    assert "60.00 ± 7.07" in table  # adam: val 0.5, 0.6 -> mean ± sample std, x100

    csv_before = (out / "runs.csv").read_bytes()
    fake.calls.clear()
    with caplog.at_level(logging.INFO, logger="hamgraph"):
        assert run_code(grid_file, out=out, device="cpu") == 0
    assert fake.calls == []  # nothing trained again
    assert f"resuming: {N_SPECS} of {N_SPECS} runs already finished" in caplog.text
    assert (out / "runs.csv").read_bytes() == csv_before


def test_default_out_dir_is_results_name_under_cwd(
    fake: FakeTrainer, grid_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(grid_file), "--pack", "off"]) == 0
    assert len(ResultStore(tmp_path / "results" / "fake").frame()) == N_SPECS


def test_failed_runs_are_recorded_errors_are_retried(
    fake: FakeTrainer, grid_file: Path, tmp_path: Path, caplog
) -> None:
    out = tmp_path / "out"
    fake.diverge = {"ham"}
    fake.crash = {"nham"}
    with caplog.at_level(logging.INFO, logger="hamgraph"):
        assert run_code(grid_file, out=out, device="cpu") == 1
    assert len(fake.calls) == N_SPECS  # the grid went on after each failure
    assert "RuntimeError: CUDA out of memory" in caplog.text
    frame = ResultStore(out).frame()
    assert len(frame) == 8  # adam + diverged ham; the crashed nham runs are not results
    diverged = frame[frame["optimizer"] == "ham"]
    assert set(diverged["status"]) == {"failed"} and diverged["val"].isna().all()
    assert set(diverged["reason"]) == {"loss became nan at epoch 2"}
    summary = summarize(frame)
    ham = summary[summary["optimizer"] == "ham"]
    assert list(ham["failed"]) == [2, 2] and list(ham["n"]) == [0, 0]

    # rerun: diverged runs are final; only the runs that raised are tried again
    fake.calls.clear()
    fake.crash = set()
    assert run_code(grid_file, out=out, device="cpu") == 1  # the diverged ones still count
    assert sorted(fake.calls) == sorted(k for k in frame_keys_expected(grid_file) if "-nham-" in k)
    assert len(ResultStore(out).frame()) == N_SPECS


def frame_keys_expected(grid_file: Path) -> list[str]:
    return [s.key() for s in expand(load_config(grid_file))]


def test_unavailable_dataset_skips_its_runs(
    fake: FakeTrainer, grid_file: Path, tmp_path: Path, caplog
) -> None:
    fake.unavailable = {"csbm-h0.8-n200"}
    with caplog.at_level(logging.INFO, logger="hamgraph"):
        assert run_code(grid_file, out=tmp_path / "out", device="cpu") == 1
    assert sum("csbm-h0.8-n200" in key for key in fake.calls) == 1  # tried once, then skipped
    assert sum("csbm-h0.2-n200" in key for key in fake.calls) == 6
    assert "raw files missing" in caplog.text
    assert set(ResultStore(tmp_path / "out").frame()["dataset"]) == {"csbm-h0.2-n200"}


def test_ctrl_c_keeps_finished_results_and_exits_130(
    fake: FakeTrainer, grid_file: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    fake.interrupt_at = 3
    assert main(["run", str(grid_file), "--out", str(out), "--pack", "off"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len(ResultStore(out).finished_keys()) == 3
    fake.interrupt_at = None
    fake.calls.clear()
    assert main(["run", str(grid_file), "--out", str(out), "--pack", "off"]) == 0
    assert len(fake.calls) == N_SPECS - 3
    assert len(ResultStore(out).frame()) == N_SPECS


def test_fresh_moves_the_old_results_aside(
    fake: FakeTrainer, grid_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert run_code(grid_file, out=out, device="cpu") == 0
    old_csv = (out / "runs.csv").read_bytes()
    (out / "notes.txt").write_text("mine")
    fake.calls.clear()
    assert run_code(grid_file, out=out, device="cpu", fresh=True) == 0
    assert len(fake.calls) == N_SPECS  # everything trained again
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("out.old-")]
    assert len(moved) == 1
    assert (moved[0] / "runs.csv").read_bytes() == old_csv
    assert (moved[0] / "notes.txt").read_text() == "mine"
    assert not (out / "notes.txt").exists()


def test_summary_numbers() -> None:
    base = {"dataset": ["cora"] * 4, "model": ["gcn"] * 4, "metric": ["accuracy"] * 4}
    frame = pd.DataFrame(
        {
            **base,
            "optimizer": ["adam", "adam", "ham", "ham"],
            "base": ["adam"] * 4,
            "base_options": [""] * 4,
            "alpha": [math.nan, math.nan, 200.0, 200.0],
            "beta": [math.nan, math.nan, 0.1, 0.1],
            "clamp": [math.nan, math.nan, 5.0, 5.0],
            "mask_beta": ["", "", "true", "true"],
            "sign_source": ["", "", "current", "current"],
            "val": [0.80, 0.82, 0.90, math.nan],
            "test": [0.70, 0.74, 0.85, math.nan],
            "status": ["ok", "ok", "ok", "failed"],
        }
    )
    table = summarize(frame)
    assert list(table["label"]) == ["adam", "ham(200, 0.1)"]
    adam, ham = table.iloc[0], table.iloc[1]
    assert adam["n"] == 2 and adam["failed"] == 0
    assert adam["val_mean"] == pytest.approx(81.0) and adam["test_std"] == pytest.approx(2.828427)
    assert ham["n"] == 1 and ham["failed"] == 1 and ham["test_mean"] == pytest.approx(85.0)
    assert math.isnan(ham["test_std"])
    assert summarize(frame.iloc[:0]).empty


# --- end to end: the real trainer on a tiny CSBM, in a subprocess ----------------------------

TINY = """\
name: tiny
runs: 2
epochs: {epochs}
overrides: {{hidden: 16}}
grid:
  dataset: [csbm-h0.8-n200]
  model: [gcn, sage]
  optimizer: [adam, {{ham: {{alpha: 10, beta: 0.01}}}}]
"""


def _hamgraph(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # small graphs; be kind to shared machines
    return subprocess.Popen(
        [sys.executable, "-m", "hamgraph", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def _run(*args: str) -> tuple[int, str, str]:
    process = _hamgraph(*args)
    out, err = process.communicate(timeout=300)
    return process.returncode, out, err


def test_end_to_end_run_and_resume(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(epochs=20))
    out = tmp_path / "out"
    code, stdout, stderr = _run("run", str(config), "--out", str(out))
    assert code == 0, stderr
    specs = expand(load_config(config))
    assert len(specs) == 8
    frame = pd.read_csv(out / "runs.csv")
    assert list(frame.columns) == RUN_COLUMNS
    assert list(frame["key"]) == [s.key() for s in specs]
    assert set(frame["status"]) == {"ok"} and set(frame["epochs"]) == {20}
    assert frame["val"].between(0, 1).all() and frame["test"].between(0, 1).all()
    assert (frame["best_epoch"] >= 1).all()
    for key in frame["key"]:
        assert len(pd.read_csv(out / "history" / f"{key}.csv")) == 20
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["dataset", "model", "optimizer", "metric", "val", "test", "n",
                                "failed"]
    assert len(lines) == 5 and "ham(10, 0.01)" in stdout and "±" in stdout
    assert stderr.count(": val ") == 8  # one log line per finished run

    before = (out / "runs.csv").read_bytes()
    records = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    code, stdout_again, stderr = _run("run", str(config), "--out", str(out))
    assert code == 0, stderr
    assert "resuming: 8 of 8 runs already finished" in stderr
    assert ": val " not in stderr  # nothing trained
    assert (out / "runs.csv").read_bytes() == before
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()} == records
    assert stdout_again == stdout


def test_kill_9_then_resume(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY.format(epochs=30))
    out = tmp_path / "out"
    process = _hamgraph("run", str(config), "--out", str(out))
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "records").is_dir() and any((out / "records").glob("*.json")):
            break
        time.sleep(0.02)
    assert process.poll() is None, "the grid finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate()
    store = ResultStore(out)
    finished = store.finished_keys()
    assert 1 <= len(finished) < 8
    first_records = {k: store.record_path(k).read_bytes() for k in finished}
    runs_csv = out / "runs.csv"
    first_rows = runs_csv.read_text().splitlines()[1:] if runs_csv.exists() else []

    code, _, stderr = _run("run", str(config), "--out", str(out))
    assert code == 0, stderr
    assert f"resuming: {len(finished)} of 8 runs already finished" in stderr
    specs = expand(load_config(config))
    frame = pd.read_csv(out / "runs.csv")
    assert sorted(frame["key"]) == sorted(s.key() for s in specs)  # each exactly once
    for key, text in first_records.items():  # not trained again
        assert store.record_path(key).read_bytes() == text
    assert runs_csv.read_text().splitlines()[1 : len(first_rows) + 1] == first_rows
    assert list(frame["key"])[: len(finished)] == [s.key() for s in specs][: len(finished)]
    assert not list(out.rglob("*.tmp"))
