"""Grids on many processes: run claims, shards, worker processes, kill -9, the Slurm script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hamgraph.train
from hamgraph.atomic import host_tag
from hamgraph.claims import Claims
from hamgraph.cli import main
from hamgraph.config import load_config
from hamgraph.errors import UserInputError
from hamgraph.grid import expand
from hamgraph.runner import execute_specs
from hamgraph.scaleout import Shard, parse_shard, partition, shard_specs, worker_devices
from hamgraph.specs import EpochStats, RunResult, RunSpec
from hamgraph.store import ResultStore

REPO = Path(__file__).resolve().parents[1]

GRID = """\
name: tiny
runs: 2
epochs: {epochs}
overrides: {{hidden: 8}}
grid:
  dataset: [csbm-h0.8-n200, csbm-h0.2-n200]
  model: [gcn, sage]
  optimizer: [adam, {{ham: {{alpha: 10, beta: 0.01}}}}]
"""
N_SPECS = 2 * 2 * 2 * 2


def _grid(tmp_path: Path, epochs: int = 5) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID.format(epochs=epochs))
    return path


def _specs(path: Path) -> list[RunSpec]:
    return expand(load_config(path))


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_claim(claims: Claims, key: str, gen: int, host: str, pid: int, age: float = 0) -> Path:
    claims.dir.mkdir(parents=True, exist_ok=True)
    path = claims.dir / f"{key}.{gen}.json"
    path.write_text(json.dumps({"host": host, "pid": pid, "started": ""}))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    return path


# --- claims ----------------------------------------------------------------------------------


def test_a_claim_is_exclusive_until_released(tmp_path: Path) -> None:
    mine, other = Claims(tmp_path), Claims(tmp_path)
    with mine.hold(["a", "b"]) as held:
        assert held == {"a", "b"}
        assert sorted(p.name for p in mine.dir.iterdir()) == ["a.0.json", "b.0.json"]
        assert not other.try_claim("a")  # a live owner (this very process)
        assert set(other.busy(["a", "b", "c"])) == {"a", "b"}
        assert other.busy(["a"])["a"].pid == os.getpid()
    assert list(mine.dir.iterdir()) == []  # released
    assert other.try_claim("a") and other.busy(["a"]) == {}
    assert not mine.try_claim("a")


def test_claims_of_dead_owners_are_taken_over(tmp_path: Path) -> None:
    claims = Claims(tmp_path, grace=10, heartbeat=1)
    _write_claim(claims, "dead", 0, host_tag(), _dead_pid())  # this host, pid gone
    _write_claim(claims, "silent", 3, "elsewhere", 1, age=60)  # no heartbeat for 60 s
    _write_claim(claims, "alive", 0, "elsewhere", 1, age=2)  # other host, recent heartbeat
    (claims.dir / "torn.0.json").write_text("")  # owner died while writing it, long ago
    os.utime(claims.dir / "torn.0.json", (time.time() - 60, time.time() - 60))
    assert set(claims.busy(["dead", "silent", "alive", "torn"])) == {"alive"}
    assert claims.try_claim("dead") and claims.try_claim("silent") and claims.try_claim("torn")
    assert not claims.try_claim("alive")
    names = sorted(p.name for p in claims.dir.iterdir())
    assert names == ["alive.0.json", "dead.1.json", "silent.4.json", "torn.1.json"]
    owner = claims.owner(claims.dir / "silent.4.json")
    assert owner is not None and (owner.host, owner.pid) == (host_tag(), os.getpid())
    claims.release(["dead", "silent", "torn"])
    assert [p.name for p in claims.dir.iterdir()] == ["alive.0.json"]


def test_heartbeat_keeps_a_claim_alive_and_prune_removes_dead_ones(tmp_path: Path) -> None:
    claims = Claims(tmp_path, grace=3, heartbeat=0.2)
    assert claims.try_claim("k")
    path = claims.dir / "k.0.json"
    os.utime(path, (time.time() - 100, time.time() - 100))
    time.sleep(0.6)  # the heartbeat thread touches it
    assert time.time() - path.stat().st_mtime < 3
    _write_claim(claims, "gone", 0, host_tag(), _dead_pid())
    assert Claims(tmp_path).prune() == 1
    assert sorted(p.name for p in claims.dir.iterdir()) == ["k.0.json"]


_RACE = """
import sys, time
from hamgraph.claims import Claims
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
print(Claims(sys.argv[1]).try_claim("k"))
time.sleep(1.0)  # hold it while the others look
"""


def test_racing_takeovers_have_one_winner(tmp_path: Path) -> None:
    _write_claim(Claims(tmp_path), "k", 0, host_tag(), _dead_pid())
    start = time.time() + 4
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(tmp_path), str(start)],
                              stdout=subprocess.PIPE, text=True, cwd=REPO) for _ in range(4)]
    answers = [proc.communicate(timeout=60)[0].strip() for proc in procs]
    assert sorted(answers) == ["False", "False", "False", "True"]


# --- the runner with claims ----------------------------------------------------------------------


def _fake_execute(calls: list[str]):
    def execute(spec: RunSpec, paths, device, checkpoint_dir=None, on_epochs=None) -> RunResult:
        calls.append(spec.key())
        history = [EpochStats(e, 1 / e, 0.5, 0.5, 0.5, 0.01, 0, 0.1) for e in (1, 2, 3)]
        return RunResult(spec, "accuracy", "ok", 0.5, 0.4, 2, 3, 0.01, history=history)

    return execute


def test_runner_skips_runs_held_or_stored_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = _specs(_grid(tmp_path))
    store = ResultStore(tmp_path / "out")
    store.prepare()
    claims = Claims(store.root)
    held = specs[3].key()
    _write_claim(claims, held, 0, "elsewhere", 1)  # a live owner on another host
    calls: list[str] = []
    train = _fake_execute(calls)

    def execute(spec, paths, device, checkpoint_dir=None, on_epochs=None):
        if spec is specs[0]:  # meanwhile another process stores specs[5]
            store.add(train(specs[5], paths, device))
            calls.pop()
        return train(spec, paths, device)

    monkeypatch.setattr(hamgraph.train, "execute", execute)
    outcomes = execute_specs(specs, store, None, torch.device("cpu"), pack="off", claims=claims)
    assert sorted(calls) == sorted(s.key() for i, s in enumerate(specs) if i not in (3, 5))
    assert [o.kind for o in outcomes].count("busy") == 1 and outcomes[3].kind == "busy"
    assert "elsewhere pid 1" in outcomes[3].message
    assert outcomes[5].ok and not outcomes[5].trained
    assert [p.name for p in claims.dir.iterdir()] == [f"{held}.0.json"]  # ours released

    calls.clear()
    (claims.dir / f"{held}.0.json").unlink()  # the other process is done (or gone)
    outcomes = execute_specs(specs, store, None, torch.device("cpu"), pack="off", claims=claims)
    assert calls == [held] and all(o.ok for o in outcomes)


# --- shards ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pack", ["off", 1, 2, "auto"])
def test_shards_partition_the_grid(tmp_path: Path, pack) -> None:
    specs = _specs(_grid(tmp_path))
    for count in (1, 2, 3, N_SPECS + 2):
        shards = partition(specs, count, pack)
        keys = [s.key() for shard in shards for s in shard]
        assert sorted(keys) == sorted(s.key() for s in specs) and len(set(keys)) == len(keys)
        for shard in shards:  # grid order within a shard
            assert shard == [s for s in specs if s in shard]
        assert partition(list(specs), count, pack) == shards  # deterministic
        assert shard_specs(specs, Shard(count - 1, count), pack) == shards[-1]
    sizes = [len(shard) for shard in partition(specs, 2, pack)]
    assert sizes == [N_SPECS // 2] * 2  # equal costs: balanced
    if pack != "off" and pack != 1:  # runs that may share a pack stay in one shard
        for shard in partition(specs, 2, pack):
            for spec in shard:
                assert sum(s.dataset == spec.dataset and s.model == spec.model
                           for s in shard) % 2 == 0


def test_bad_shard_and_devices_values(tmp_path: Path, capsys) -> None:
    assert parse_shard("3/8") == Shard(3, 8) and str(Shard(3, 8)) == "3/8"
    for bad in ("3/2", "2/2", "-1/2", "1/0", "x", "1/", "1-2", "a/b"):
        with pytest.raises(UserInputError, match=f"--shard {bad}"):
            parse_shard(bad)
    assert worker_devices("cpu", None, 3) == ["cpu"] * 3
    assert worker_devices("auto", "cpu,cpu", 2) == ["cpu"] * 4
    for bad in ("", "cpu,", "nonsense"):
        with pytest.raises(UserInputError, match="--devices"):
            worker_devices("auto", bad, 1)
    with pytest.raises(UserInputError, match="not both"):
        worker_devices("cpu", "cpu", 1)
    grid = _grid(tmp_path)
    out = tmp_path / "out"
    cases = [["--shard", "3/2"], ["--shard", "1"], ["--devices", "cpu,,cpu"],
             ["--devices", "gpu:0"], ["--workers", "0"], ["--workers", "two"],
             ["--shard", "0/2", "--fresh"]]
    for args in cases:
        capsys.readouterr()
        assert main(["run", str(grid), "--out", str(out), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("hamgraph: error: --") and err.count("\n") == 1, err
    assert not out.exists()  # nothing written


# --- end to end: real training on tiny CSBMs, in subprocesses ------------------------------------


def _hamgraph(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hamgraph", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def _trained_lines(text: str) -> int:
    return sum(": val " in line for line in text.splitlines())


def _check_complete(out: Path, specs: list[RunSpec]) -> None:
    store = ResultStore(out)
    frame = store.frame()
    assert sorted(frame["key"]) == sorted(s.key() for s in specs)  # each exactly once
    assert set(frame["status"]) == {"ok"}
    assert not list(out.rglob("*.tmp"))
    assert not list((out / "claims").iterdir())


def test_two_shards_at_once_then_a_run_without_shard(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    specs = _specs(grid)
    out = str(tmp_path / "out")
    # shard 0 twice at the same time (a resubmitted task), shard 1 once
    procs = [_hamgraph("run", str(grid), "--out", out, "--device", "cpu", "--pack", "off",
                       "--shard", shard) for shard in ("0/2", "1/2", "0/2")]
    results = [proc.communicate(timeout=600) for proc in procs]
    codes = [proc.returncode for proc in procs]
    assert codes[1] == 0, results[1][1]
    assert codes[0] in (0, 1) and codes[2] in (0, 1)  # 1: "being trained by" the twin
    for _, err in results:
        assert "Traceback" not in err, err
    assert sum(_trained_lines(err) for _, err in results) == N_SPECS  # each trained once
    shard_sizes = [len(s) for s in partition(specs, 2, "off")]
    assert f"shard 0/2: {shard_sizes[0]} of the grid's {N_SPECS} runs" in results[0][1]
    _check_complete(Path(out), specs)

    final = _hamgraph("run", str(grid), "--out", out, "--device", "cpu", "--pack", "off")
    stdout, stderr = final.communicate(timeout=300)
    assert final.returncode == 0, stderr
    assert f"resuming: {N_SPECS} of {N_SPECS} runs already finished" in stderr
    assert _trained_lines(stderr) == 0
    assert len(stdout.strip().splitlines()) == 1 + 8  # the whole grid's summary: 8 cells


def _worker_log_lines(out: Path) -> int:
    return sum(_trained_lines(p.read_text()) for p in (out / "logs").glob("worker-*.log"))


def test_two_cpu_workers_share_a_grid(tmp_path: Path) -> None:
    grid = _grid(tmp_path)
    out = tmp_path / "out"
    process = _hamgraph("run", str(grid), "--out", str(out), "--device", "cpu", "--pack", "off",
                        "--workers", "2")
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr
    assert "2 workers (cpu, cpu)" in stderr
    _check_complete(out, _specs(grid))
    assert _worker_log_lines(out) == N_SPECS  # each trained once, by one of the workers
    logs = [p.read_text() for p in sorted((out / "logs").glob("worker-*.log"))]
    assert len(logs) == 2 and all(_trained_lines(text) > 0 for text in logs)  # both worked
    assert _trained_lines(stderr) == N_SPECS  # the parent logs each run once
    assert len(stdout.strip().splitlines()) == 1 + 8  # one summary


def test_kill_9_of_a_worker_then_rerun(tmp_path: Path) -> None:
    grid = _grid(tmp_path, epochs=60)
    specs = _specs(grid)
    out = tmp_path / "out"
    args = ("run", str(grid), "--out", str(out), "--device", "cpu", "--pack", "off",
            "--workers", "2")
    process = _hamgraph(*args)
    claims = Claims(out)
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and process.poll() is None:
        if ResultStore(out).finished_keys() and claims.dir.is_dir():
            for path in claims.dir.glob("*.json"):
                owner = claims.owner(path)
                if owner is not None:
                    victim = owner.pid
                    break
        time.sleep(0.02)
    assert victim is not None, "the grid finished before a worker could be killed"
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode in (0, 1), stderr  # 1: "worker N exited with code -9"
    assert "Traceback" not in stderr

    again = _hamgraph(*args)
    _, stderr = again.communicate(timeout=600)
    assert again.returncode == 0, stderr
    _check_complete(out, specs)
    assert _worker_log_lines(out) == N_SPECS  # no run completed twice across both commands


TWO_RUNS = """\
name: two
runs: 2
epochs: 3
overrides: {hidden: 8}
grid:
  dataset: [csbm-h0.8-n200]
  model: [gcn]
  optimizer: [adam]
"""


def test_workers_report_a_run_held_by_another_process_as_busy(tmp_path: Path) -> None:
    """As a single process does: "being trained by <host> pid <n>", not "a worker could not"."""
    grid = tmp_path / "grid.yaml"
    grid.write_text(TWO_RUNS)
    specs = _specs(grid)
    assert len(specs) == 2
    out = tmp_path / "out"
    held = specs[0].key()
    owner = subprocess.Popen(["sleep", "300"])  # a live process of this host holds one run
    try:
        _write_claim(Claims(out), held, 0, host_tag(), owner.pid)
        process = _hamgraph("run", str(grid), "--out", str(out), "--device", "cpu", "--pack",
                            "off", "--workers", "2")
        _, stderr = process.communicate(timeout=600)
    finally:
        owner.kill()
        owner.wait()
    assert process.returncode == 1, stderr
    assert "Traceback" not in stderr
    assert f"{held}: being trained by {host_tag()} pid {owner.pid}; rerun for its result" in stderr
    assert "could not train it" not in stderr
    assert ResultStore(out).finished_keys() == {specs[1].key()}
    assert [p.name for p in (out / "claims").iterdir()] == [f"{held}.0.json"]  # still its


# --- the Slurm array script ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "shard"),
    [
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "8"}, "3/8"),
        ({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"},
         "4/8"),
        ({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "6",
          "SLURM_ARRAY_TASK_STEP": "2"}, "2/4"),
        ({"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "8"}, None),
        ({}, None),
    ],
)
def test_slurm_script_derives_the_shard(tmp_path: Path, env: dict[str, str], shard) -> None:
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text('#!/bin/sh\necho "$@"\n')
    stub.chmod(0o755)
    base = {"PATH": f"{stub.parent}:{os.environ['PATH']}", "SLURM_JOB_ID": "7",
            "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        ["bash", str(REPO / "configs" / "slurm-grid.sh"), "configs/paper-best.yaml", "--pack",
         "16"], env={**base, **env}, capture_output=True, text=True, timeout=60)
    if shard is None:
        assert done.returncode != 0 and done.stdout == ""
        return
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["hamgraph", "run", "configs/paper-best.yaml", "--shard", shard,
                                   "--device", "auto", "--pack", "16"]


@pytest.mark.parametrize("script", ["configs/slurm-grid.sh", "sweeps/slurm-array.sh"])
@pytest.mark.parametrize(("code", "requeued"), [(75, True), (0, False), (1, False)])
def test_slurm_scripts_requeue_when_hamgraph_checkpointed(tmp_path: Path, script, code,
                                                          requeued) -> None:
    """Exit 75 (EXIT_PREEMPTED: checkpointed, not finished) requeues the task; the scripts ask
    Slurm for the signal and stay requeueable."""
    from hamgraph.preemption import EXIT_PREEMPTED

    assert EXIT_PREEMPTED == 75
    text = (REPO / script).read_text()
    assert "#SBATCH --requeue\n" in text and "#SBATCH --signal=USR1@120\n" in text
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    (bin_dir / "srun").write_text(f"#!/bin/sh\nexit {code}\n")
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "7",
           "SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1", "TMPDIR": str(tmp_path),
           "HAMGRAPH_STORAGE": "postgresql://u:p@db:5432/h", "HOME": str(tmp_path)}
    done = subprocess.run(["bash", str(REPO / script), "grid.yaml"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert (calls.read_text() if calls.exists() else "") == ("requeue 7\n" if requeued else "")
