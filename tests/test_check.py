"""`hamgraph check` (issue 21 item 2): every kind of damage found, `--repair` leaves a clean dir
that `run` completes without retraining anything that was intact."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from hamgraph.atomic import host_tag
from hamgraph.check import check_dir
from hamgraph.cli import main
from hamgraph.sweep import coordination as co

GRID = """\
name: chk
runs: 3
epochs: 3
overrides: {hidden: 8}
grid:
  dataset: [csbm-h0.8-n200]
  model: [gcn]
  optimizer: [adam, {ham: {alpha: 10, beta: 0.01}}]
"""


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _run_args(tmp_path: Path, out: Path) -> list[str]:
    config = tmp_path / "grid.yaml"
    config.write_text(GRID)
    return ["run", str(config), "--out", str(out), "--device", "cpu", "--pack", "off"]


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".runs.lock"}


def _damage_everything(out: Path) -> tuple[list[str], list[str]]:
    """One of each kind of damage. -> (keys to be trained again, keys that stay intact)."""
    import torch

    records = sorted((out / "records").glob("*.json"))
    assert len(records) == 6
    a, b, c, d = (p.stem for p in records[:4])
    intact = [p.stem for p in records[2:] if p.stem != d]
    records[0].write_text(records[0].read_text()[:200])  # truncated record
    data = json.loads(records[1].read_text())
    data["spec"]["seed"] += 100  # settings that hash to another key
    records[1].write_text(json.dumps(data))
    history = out / "history" / f"{c}.csv"  # garbled history of an intact record
    history.write_text(history.read_text().replace(".", ";"))
    records[3].unlink()  # d: killed in training, left a damaged checkpoint and its history
    (out / "checkpoints" / d).mkdir(parents=True)
    (out / "checkpoints" / d / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    (out / "checkpoints" / c).mkdir(parents=True)  # a finished run's leftover checkpoint
    torch.save({"key": c, "epoch": 1}, out / "checkpoints" / c / "checkpoint.pt")
    runs = out / "runs.csv"
    runs.write_text(runs.read_text()[: -40])  # truncated runs.csv
    (out / "history" / "csbm-h0.8-n200-gcn-adam-run7-0123456789ab.csv").write_text("epoch\n")
    dead = _dead_pid()
    (out / "records" / f".{a}.json.{host_tag()}.{dead}.abcd1234.tmp").write_text("{")
    (out / "claims").mkdir(exist_ok=True)
    (out / "claims" / f"{d}.0.json").write_text(
        json.dumps({"host": host_tag(), "pid": dead, "started": "", "key": d}))
    return [a, b, d], intact


def test_check_repair_then_run_retrains_only_what_was_damaged(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = _run_args(tmp_path, out)
    assert main(args) == 0
    assert main(["check", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"clean ({6 * 2 + 1} files read)")
    retrain, intact = _damage_everything(out)
    before = _snapshot(out)

    outcome = check_dir(out)
    kinds = sorted((f.kind, Path(f.path).parent.name) for f in outcome.findings)
    assert kinds == [
        ("damaged", retrain[2]),  # the torn checkpoints/<d>/checkpoint.pt
        ("damaged", "history"),  # c's garbled history
        ("damaged", "out"),  # runs.csv
        ("damaged", "records"), ("damaged", "records"),  # a and b
        ("orphaned", "checkpoints"),  # c's checkpoint dir (c is finished)
        ("orphaned", "claims"),  # the dead process's claim
        ("orphaned", "history"), ("orphaned", "history"),  # d's and the stray history
        ("orphaned", "records"),  # the dead writer's temp file
    ], outcome.findings
    assert _snapshot(out) == before  # without --repair nothing is written

    assert main(["check", str(out)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 11 and printed[-1].startswith(f"check: {out}: 10 finding(s)")
    assert any(line.startswith(f"damaged: {out / 'records' / retrain[0]}.json: not JSON")
               for line in printed)

    assert main(["check", "--repair", str(out)]) == 0  # everything found was repaired
    assert "10 repaired, 0 left" in capsys.readouterr().out
    assert main(["check", str(out)]) == 0
    assert "clean" in capsys.readouterr().out
    assert (out / "damaged").is_dir()  # nothing deleted: set aside

    repaired = _snapshot(out)
    assert main(args) == 0
    after = _snapshot(out)
    for key in intact:  # not retrained: the record's bytes and time are those of the first run
        name = f"records/{key}.json"
        assert after[name] == before[name] == repaired[name]
    for key in retrain:
        assert json.loads((out / "records" / f"{key}.json").read_text())["key"] == key
    assert main(["check", str(out)]) == 0


def test_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["check", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["check", str(tmp_path / "empty")]) == 2
    assert "not a hamgraph result dir" in capsys.readouterr().err


def test_check_reads_the_sweep_journal(tmp_path: Path, monkeypatch, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    journal = out / "optuna-journal.log"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for _ in range(2):  # two COMPLETE trials of one cell
        trial = study.ask()
        trial.set_user_attr(co.A_CELL, "adam")
        study.tell(trial, 1.0)
    dead = study.ask()  # RUNNING for a worker of this host that is gone
    owner = {"trial": dead.number, "host": socket.gethostname(), "pid": _dead_pid(), "start": ""}
    storage.set_trial_system_attr(dead._trial_id, co.S_OWNER, owner)
    with open(journal, "ab") as handle:
        handle.write(b'{"op_code": 5, "worker_id": "x", "trial_id"')  # torn by a power loss

    kinds = sorted(f.kind for f in check_dir(out).findings)
    assert kinds == ["damaged", "duplicated", "orphaned"]
    assert main(["check", "--repair", str(out)]) == 1  # the duplicate needs a person
    printed = capsys.readouterr().out
    assert "torn line cut off" in printed and "failed, a retry queued" in printed
    outcome = check_dir(out)
    assert [f.kind for f in outcome.findings] == ["duplicated"]
    reopened = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal)))
    states = [t.state for t in optuna.load_study(study_name="s", storage=reopened).get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.WAITING) == 1
    assert journal.read_bytes().endswith(b"\n")  # the torn line is gone from the journal...
    (kept,) = (out / "damaged" / "journal-tails").iterdir()  # ...and kept
    assert kept.read_bytes().endswith(b'"trial_id"')


def test_check_an_rdb_storage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    for _ in range(2):
        trial = study.ask()
        trial.set_user_attr(co.A_CELL, "a=1,b=0")
        study.tell(trial, 1.0)
    (found,) = check_dir(out, storage=url).findings
    assert found.kind == "duplicated" and "cell a=1,b=0 COMPLETE in trials 0, 1" in found.problem
    with pytest.raises(Exception, match="not a directory"):
        check_dir(tmp_path / "nope", storage=url)


def test_the_documented_check_commands(tmp_path: Path, monkeypatch, capsys) -> None:
    """docs/result-dirs.md's `check` block, as written (run from a dir with results/tiny)."""
    monkeypatch.chdir(tmp_path)
    assert main(_run_args(tmp_path, Path("results/tiny"))) == 0
    (Path("results/tiny") / "runs.csv").write_text("key\n")  # something to find and repair
    commands = [
        "hamgraph check results/tiny",
        "hamgraph check --repair results/tiny",
        "hamgraph check results/tiny results/other --storage sqlite:///sweeps.db",
    ]
    Path("results/other").mkdir()
    (Path("results/other") / "config.yaml").write_text("name: other\n")
    import optuna

    optuna.create_study(study_name="s", storage="sqlite:///sweeps.db")
    codes = [main(line.split()[1:]) for line in commands]
    assert codes == [1, 0, 0]
    printed = capsys.readouterr().out
    assert f"damaged: {Path('results/tiny/runs.csv')}: not this hamgraph's runs.csv header" \
        in printed
    last = printed.strip().splitlines()[-2:]  # the storage is checked once, with the first dir
    assert last[0].startswith("check: results/tiny: clean (") and last[1] == \
        "check: results/other: clean (0 files read)"


def test_pack_checkpoints_are_judged_by_their_members(tmp_path: Path) -> None:
    """A pack checkpoint (members.json + checkpoint.pt) of a pack still in training is clean;
    once every member has a record it is orphaned; an unreadable members.json is damage."""
    from hamgraph.store import ResultStore
    from hamgraph.train.checkpoint import Checkpointer

    out = tmp_path / "out"
    assert main(_run_args(tmp_path, out)) == 0
    store = ResultStore(out)
    keys = sorted(p.stem for p in (out / "records").glob("*.json"))
    (out / "records" / f"{keys[0]}.json").unlink()  # this member is still in training
    (out / "history" / f"{keys[0]}.csv").unlink()
    store.sync()
    training = store.pack_checkpoint_dir(keys[:2])
    training.mkdir(parents=True)
    Checkpointer(training, training.name, members=keys[:2]).save({"epoch": 2})
    assert not check_dir(out).findings

    finished = store.pack_checkpoint_dir(keys[2:4])
    finished.mkdir(parents=True)
    Checkpointer(finished, finished.name, members=keys[2:4]).save({"epoch": 2})
    torn = store.pack_checkpoint_dir(keys[4:])
    torn.mkdir(parents=True)
    (torn / "members.json").write_text("{")
    found = {(f.kind, Path(f.path).name) for f in check_dir(out).findings}
    assert found == {("orphaned", finished.name), ("damaged", torn.name)}

    check_dir(out, repair=True)
    assert not check_dir(out).findings
    assert (training / "checkpoint.pt").is_file()  # the pack in training keeps its checkpoint


def _torn_pack_checkpoint(out: Path, keys: list[str]) -> Path:
    """A pack checkpoint cut short by a full disk: members.json fine, checkpoint.pt torn."""
    from hamgraph.store import ResultStore

    folder = ResultStore(out).pack_checkpoint_dir(keys)
    folder.mkdir(parents=True)
    (folder / "members.json").write_text(json.dumps({"key": folder.name, "members": keys}))
    (folder / "checkpoint.pt").write_bytes(b"PK\x03\x04 torn")
    return folder


def test_a_torn_pack_checkpoint_is_set_aside_whole(tmp_path: Path, capsys) -> None:
    """check --repair moves the pack's folder aside in one go (the run is clean after it), and
    `run` sets a torn pack checkpoint aside too instead of deleting it, then trains the pack."""
    from hamgraph.store import ResultStore

    out = tmp_path / "out"
    args = _run_args(tmp_path, out)
    assert main(args) == 0
    keys = sorted(p.stem for p in (out / "records").glob("*.json"))[:2]
    for key in keys:  # killed in training, as a pack
        (out / "records" / f"{key}.json").unlink()
        (out / "history" / f"{key}.csv").unlink()
    ResultStore(out).sync()
    folder = _torn_pack_checkpoint(out, keys)
    found = check_dir(out).findings
    assert [(f.kind, Path(f.path).name) for f in found] == [("damaged", "checkpoint.pt")]
    check_dir(out, repair=True)
    assert not folder.exists() and not check_dir(out).findings
    assert [p.name for p in (out / "damaged").rglob("pack-*")] == [folder.name]

    shutil.rmtree(out / "damaged")
    folder = _torn_pack_checkpoint(out, keys)
    assert main([*args[:-1], "2"]) == 0  # --pack 2: the two runs form the pack again
    assert not folder.exists()
    (moved,) = (out / "damaged").rglob("pack-*")
    assert sorted(p.name for p in moved.iterdir()) == ["checkpoint.pt", "members.json"]
    assert all((out / "records" / f"{key}.json").is_file() for key in keys)
    assert not check_dir(out).findings
