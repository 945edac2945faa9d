"""Chaos (issue 21 item 7): three commands share one result dir (`run --workers 2` and two
`--shard i/2`), each killed with SIGKILL at random (seeded) moments for several rounds, with a
damaged record and a truncated runs.csv injected after the first round (the three commands of
the next round meet them at once) and again before the last, plain `hamgraph run`. At the end
every run of the grid is recorded exactly once, every record is readable, and `hamgraph check`
finds nothing, without `--repair`: the commands themselves contained the damage.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from hamgraph.check import check_dir
from hamgraph.config import load_config
from hamgraph.grid import expand
from hamgraph.store import DAMAGED_DIR, ResultStore

REPO = Path(__file__).resolve().parents[1]
GRID = """\
name: chaos
runs: 2
epochs: 150
overrides: {hidden: 8}
grid:
  dataset: [csbm-h0.8-n200, csbm-h0.2-n200]
  model: [gcn, sage]
  optimizer: [adam, {ham: {alpha: 10, beta: 0.01}}]
"""
ROUNDS = 3
SEED = 21


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log, "a") as handle:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "hamgraph", *args], cwd=REPO, env=env,
                                stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: workers die with it


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole command, workers included (a lost node)
    proc.wait()


def _inject_damage(store: ResultStore, rng: random.Random) -> str | None:
    """Truncate one record (a full disk) and runs.csv (a half-done copy). -> the record's key."""
    keys = sorted(store.finished_keys())
    key = rng.choice(keys) if keys else None
    if key is not None:
        path = store.record_path(key)
        text = path.read_bytes()
        path.write_bytes(text[: rng.randint(1, len(text) - 2)])
    if store.runs_csv.is_file():
        text = store.runs_csv.read_bytes()
        store.runs_csv.write_bytes(text[: rng.randint(1, len(text) - 1)])
    return key


@pytest.mark.slow
def test_three_commands_killed_at_random_then_one_plain_run(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    expected = {spec.key() for spec in expand(load_config(grid))}
    assert len(expected) == 16
    out = tmp_path / "out"
    store = ResultStore(out)
    base = ["run", str(grid), "--out", str(out), "--device", "cpu", "--pack", "2"]
    commands = [[*base, "--workers", "2"], [*base, "--shard", "0/2"], [*base, "--shard", "1/2"]]
    logs = [tmp_path / f"command-{i}.log" for i in range(len(commands))]
    damaged: list[str] = []
    killed = 0
    for round_ in range(ROUNDS):
        procs = [_start(args, log) for args, log in zip(commands, logs, strict=True)]
        # a random moment: once a random number of new runs is recorded (or a random time)
        target = len(store.finished_keys()) + rng.randint(1, 3)
        deadline = time.monotonic() + 90
        while len(store.finished_keys()) < target and time.monotonic() < deadline:
            if all(proc.poll() is not None for proc in procs):
                break
            time.sleep(0.05)
        for proc in rng.sample(procs, len(procs)):  # each at its own moment
            time.sleep(rng.uniform(0, 0.4))
            killed += proc.poll() is None
            _kill(proc)
        if round_ == 0:  # damage that the next round's three commands meet at once
            key = _inject_damage(store, rng)
            if key is not None:
                damaged.append(key)
    recorded = store.finished_keys()
    assert killed >= ROUNDS * 2, "the commands ended before they could be killed"
    assert len(recorded) < len(expected), "the grid finished before the last round: no chaos"
    key = _inject_damage(store, rng)  # and right before the last command
    assert key is not None
    damaged.append(key)

    final = subprocess.run([sys.executable, "-m", "hamgraph", *base], cwd=REPO,
                           capture_output=True, text=True, timeout=300,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert final.returncode == 0, final.stderr[-3000:]
    for log in [*logs]:
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    assert "Traceback" not in final.stderr

    # every run of the grid recorded exactly once, every record readable
    assert store.finished_keys() == expected
    for key in expected:
        result = store.read(key)
        assert result is not None and result.spec.key() == key and result.status == "ok"
    rows = pd.read_csv(out / "runs.csv")
    assert sorted(rows["key"]) == sorted(expected)  # one row per run, none twice
    set_aside = {p.name.split(".json")[0] for p in (out / DAMAGED_DIR).glob("*/records/*")}
    assert set(damaged) <= set_aside  # the injected damage was found and set aside...
    assert f"{damaged[-1]}.json: damaged" in final.stderr  # ...with one warning line
    outcome = check_dir(out)
    assert outcome.clean, outcome.findings  # no temp file, claim, orphan or damage is left
