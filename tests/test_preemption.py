"""Preemption end to end, in real subprocesses: SIGTERM / SIGUSR1 make `hamgraph run` checkpoint
and exit with EXIT_PREEMPTED; `kill -9` after a checkpoint loses only the epochs since; the
same command then finishes with exactly the numbers of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hamgraph.preemption import EXIT_PREEMPTED
from hamgraph.store import ResultStore
from hamgraph.train.checkpoint import CHECKPOINT_ENV, CHECKPOINT_FILE

GRID = """\
name: preempt
runs: 3
epochs: {epochs}
overrides: {{hidden: 16}}
grid:
  dataset: [csbm-h0.8-n200]
  model: {models}
  optimizer: [adam, {{ham: {{alpha: 100, beta: 0.01}}}}]
"""


def _hamgraph(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", CHECKPOINT_ENV: "0"}  # a checkpoint per sync
    return subprocess.Popen([sys.executable, "-m", "hamgraph", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    _, err = process.communicate(timeout=300)
    return process.returncode, err


def _wait_for_checkpoint(process: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if list((out / "checkpoints").glob(f"*/{CHECKPOINT_FILE}")):
            return
        time.sleep(0.02)
    raise AssertionError(f"no checkpoint appeared (exit code {process.poll()})")


def _numbers(store: ResultStore) -> dict[str, tuple]:
    out = {}
    for key in sorted(store.finished_keys()):
        result = store.load(key)
        history = [dataclasses.replace(h, train_seconds=0.0) for h in result.history]
        out[key] = (result.status, result.val, result.test, result.best_epoch, result.epochs,
                    history)
    return out


def _config(tmp: Path, epochs: int = 200, models: str = "[gcn]") -> Path:
    config = tmp / "grid.yaml"
    config.write_text(GRID.format(epochs=epochs, models=models))
    return config


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, tuple]:
    tmp = tmp_path_factory.mktemp("whole")
    code, err = _finish(_hamgraph("run", str(_config(tmp)), "--out", str(tmp / "out")))
    assert code == 0, err
    numbers = _numbers(ResultStore(tmp / "out"))
    assert len(numbers) == 6 and all(math.isfinite(n[1]) for n in numbers.values())
    return numbers


def test_sigterm_checkpoints_exits_75_and_the_rerun_matches(tmp_path, uninterrupted):
    sig = signal.SIGTERM
    config, out = _config(tmp_path), tmp_path / "out"
    process = _hamgraph("run", str(config), "--out", str(out))
    _wait_for_checkpoint(process, out)
    process.send_signal(sig)
    code, err = _finish(process)
    assert code == EXIT_PREEMPTED, err
    assert f"got {sig.name}: checkpointing at the next epoch boundary" in err
    assert "stopped on request" in err
    assert list((out / "checkpoints").glob(f"pack-*/{CHECKPOINT_FILE}"))
    assert ResultStore(out).finished_keys() == set()

    code, err = _finish(_hamgraph("run", str(config), "--out", str(out)))
    assert code == 0, err
    assert "resuming after epoch" in err
    assert _numbers(ResultStore(out)) == uninterrupted
    assert not (out / "checkpoints").exists()


def test_kill_9_after_a_checkpoint_resumes_identically(tmp_path, uninterrupted):
    config, out = _config(tmp_path), tmp_path / "out"
    process = _hamgraph("run", str(config), "--out", str(out))
    _wait_for_checkpoint(process, out)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    assert ResultStore(out).finished_keys() == set()
    code, err = _finish(_hamgraph("run", str(config), "--out", str(out)))
    assert code == 0, err
    assert "resuming after epoch" in err
    assert _numbers(ResultStore(out)) == uninterrupted
    assert not (out / "checkpoints").exists()


@pytest.mark.slow  # three commands with two spawned workers each: about a minute
def test_workers_get_the_signal_too(tmp_path):
    """`--workers 2`: the parent forwards SIGTERM; every worker checkpoints and exits; 75."""
    config, out = _config(tmp_path, models="[gcn, sage]"), tmp_path / "out"
    process = _hamgraph("run", str(config), "--out", str(out), "--workers", "2")
    _wait_for_checkpoint(process, out)
    process.send_signal(signal.SIGTERM)
    code, err = _finish(process)
    assert code == EXIT_PREEMPTED, err
    logs = "".join(p.read_text() for p in (out / "logs").glob("worker-*.log"))
    assert "stopped on request after checkpointing" in err + logs
    assert list((out / "checkpoints").glob(f"pack-*/{CHECKPOINT_FILE}"))
    code, err = _finish(_hamgraph("run", str(config), "--out", str(out), "--workers", "2"))
    assert code == 0, err
    assert len(ResultStore(out).finished_keys()) == 12
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_either_signal_is_a_stop_request_while_handled(sig):
    """In-process: the handler only sets the flag (and logs); the old handler comes back."""
    from hamgraph import preemption

    before = signal.getsignal(sig)
    preemption.reset()
    try:
        with preemption.handle_signals():
            os.kill(os.getpid(), sig)
            time.sleep(0.01)  # the handler runs between bytecodes of the main thread
            assert preemption.stop_requested()
            with pytest.raises(preemption.Preempted):
                preemption.check()
        assert signal.getsignal(sig) is before
    finally:
        preemption.reset()


def test_forward_to_passes_the_signal_on(tmp_path):
    """A parent forwards SIGTERM / SIGUSR1 to its children (here: one that records it)."""
    from hamgraph import preemption

    marker = tmp_path / "got"
    child = subprocess.Popen([sys.executable, "-c", (
        "import signal, sys, time, pathlib\n"
        f"signal.signal(signal.SIGUSR1, lambda *a: (pathlib.Path({str(marker)!r}).write_text('x'),"
        " sys.exit(0)))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    preemption.reset()
    try:
        with preemption.handle_signals(), preemption.forward_to([child.pid]):
            os.kill(os.getpid(), signal.SIGUSR1)
            assert child.wait(timeout=30) == 0
    finally:
        preemption.reset()
        if child.poll() is None:
            child.kill()
    assert marker.read_text() == "x"
