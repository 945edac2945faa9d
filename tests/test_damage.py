"""Damaged result dirs (issue 21): a file that cannot be read is set aside, never fatal.

Each damage kind is moved to `<out>/damaged/<time>/<relative path>` with one warning line; the
run is then missing (trained again), the report leaves it out and says so; derived files
(histories, runs.csv) are rebuilt from the records.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_store import make_result

from hamgraph.cli import main
from hamgraph.specs import HamSettings
from hamgraph.store import DAMAGED_DIR, ResultStore


def _store_with(tmp_path: Path, count: int = 3) -> tuple[ResultStore, list]:
    store = ResultStore(tmp_path / "out")
    results = [make_result(i) for i in range(count)]
    for result in results:
        store.add(result)
    return store, results


def _mutilate_record(path: Path, kind: str) -> None:
    text = path.read_text()
    data = json.loads(text)
    if kind == "empty":
        path.write_text("")
    elif kind == "truncated":
        path.write_text(text[: len(text) // 2])
    elif kind == "not-json":
        path.write_bytes(b"\x00\x01garbage\xff")
    elif kind == "field-missing":
        del data["status"]
        path.write_text(json.dumps(data))
    elif kind == "wrong-type":
        data["history"] = 3
        path.write_text(json.dumps(data))
    elif kind == "key-field":
        data["key"] = "csbm-h0.8-gcn-adam-run9-000000000000"
        path.write_text(json.dumps(data))
    elif kind == "settings":  # the settings inside hash to another key than the file name
        data["spec"]["seed"] = 12345
        path.write_text(json.dumps(data))
    else:
        raise AssertionError(kind)


DAMAGE = ["empty", "truncated", "not-json", "field-missing", "wrong-type", "key-field",
          "settings"]


def _damaged(store: ResultStore) -> list[Path]:
    root = store.root / DAMAGED_DIR
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", DAMAGE)
def test_a_damaged_record_is_set_aside_and_the_rest_kept(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    store, results = _store_with(tmp_path)
    bad = results[1].spec.key()
    path = store.record_path(bad)
    _mutilate_record(path, kind)
    store.runs_csv.unlink()  # so the store has to read every record (the JSONDecodeError case)
    caplog.set_level(logging.WARNING, logger="hamgraph")

    fresh = ResultStore(store.root)
    frame = fresh.frame()  # used to raise JSONDecodeError / KeyError / TypeError
    assert sorted(frame["key"]) == sorted(r.spec.key() for r in results if r.spec.key() != bad)
    assert fresh.read(bad) is None and not path.exists()
    assert fresh.finished_keys() == {r.spec.key() for r in results} - {bad}
    (moved,) = _damaged(fresh)
    assert moved.parts[1:] == ("records", f"{bad}.json")  # damaged/<time>/records/<key>.json
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(path) in warnings[0] and "damaged" in warnings[0]
    for result in results:  # the intact ones are untouched
        if result.spec.key() != bad:
            assert fresh.read(result.spec.key()).val == result.val
    assert fresh.damaged_keys() == [bad]
    store.add(results[1])  # trained again: back, and no longer "left out"
    assert fresh.damaged_keys() == [] and len(fresh.frame()) == 3


def test_a_newer_record_format_is_not_damage(tmp_path: Path) -> None:
    from hamgraph.store import RecordFormatError

    store, results = _store_with(tmp_path, 1)
    path = store.record_path(results[0].spec.key())
    data = json.loads(path.read_text())
    data["format"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(RecordFormatError, match=f"{path}: record format 99 is newer"):
        store.read(results[0].spec.key())
    from hamgraph.check import check_dir

    (found,) = check_dir(store.root).findings
    assert found.kind == "stale" and found.problem.startswith("record format 99 is newer")
    assert path.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbled", "missing"])
def test_a_damaged_history_is_rewritten_from_its_record(tmp_path: Path, damage: str) -> None:
    store, results = _store_with(tmp_path, 2)
    key = results[0].spec.key()
    path = store.history_path(key)
    good = path.read_text()
    {"empty": lambda: path.write_text(""),
     "truncated": lambda: path.write_text(good[:-7]),
     "garbled": lambda: path.write_text(good.replace("0.5", "x#")),
     "missing": path.unlink}[damage]()
    assert ResultStore(store.root).read(key) is not None  # the record is intact: no retraining
    assert path.read_text() == good
    assert len(_damaged(store)) == (0 if damage == "missing" else 1)


@pytest.mark.parametrize("cut", ["last-field", "middle", "garbled"])
def test_a_broken_runs_csv_is_rebuilt_from_the_records(tmp_path: Path, cut: str) -> None:
    store, results = _store_with(tmp_path, 3)
    good = store.runs_csv.read_text()
    if cut == "last-field":  # cut inside the history column of the last row: all fields there
        broken = good[:-8]
    elif cut == "middle":
        broken = good[: len(good) // 2]
    else:
        lines = good.splitlines(keepends=True)
        broken = lines[0] + lines[1].replace(",ok,", ",0k,") + "".join(lines[2:])
    store.runs_csv.write_text(broken)
    frame = ResultStore(store.root).frame()
    rebuilt = store.runs_csv.read_text()
    assert rebuilt.splitlines()[0] == good.splitlines()[0]  # rows in another order, same text
    assert sorted(rebuilt.splitlines()) == sorted(good.splitlines())
    assert sorted(frame["history"]) == sorted(f"history/{r.spec.key()}.csv" for r in results)
    assert (store.root / DAMAGED_DIR).is_dir() and _damaged(store)[0].name == "runs.csv"


def test_a_damaged_checkpoint_is_set_aside(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "out")
    spec = make_result(0).spec
    folder = store.checkpoint_dir(spec)
    torch.save({"key": spec.key(), "epoch": 3}, folder / "checkpoint.pt")
    assert store.checkpoint_dir(spec) == folder and (folder / "checkpoint.pt").exists()
    good = (folder / "checkpoint.pt").read_bytes()
    (folder / "checkpoint.pt").write_bytes(good[: len(good) // 2])
    store.checkpoint_dir(spec)
    assert not (folder / "checkpoint.pt").exists()
    (moved,) = _damaged(store)
    assert moved.parts[1:] == ("checkpoints", spec.key(), "checkpoint.pt")
    other = make_result(1).spec
    torch.save({"key": other.key()}, folder / "checkpoint.pt")  # another run's checkpoint
    store.checkpoint_dir(spec)
    assert not (folder / "checkpoint.pt").exists()


# --- the commands ---------------------------------------------------------------------------

GRID = """\
name: dmg
runs: 2
epochs: 3
overrides: {hidden: 8}
grid:
  dataset: [csbm-h0.8-n200]
  model: [gcn]
  optimizer: [adam, {ham: {alpha: 10, beta: 0.01}}]
"""


def _run(tmp_path: Path, out: Path) -> int:
    config = tmp_path / "grid.yaml"
    config.write_text(GRID)
    return main(["run", str(config), "--out", str(out), "--device", "cpu", "--pack", "off"])


def test_run_trains_a_damaged_run_again_and_keeps_the_others(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, out) == 0
    records = sorted((out / "records").glob("*.json"))
    assert len(records) == 4
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in records}
    records[0].write_text(records[0].read_text()[:100])  # truncated: a full disk
    (out / "runs.csv").write_text((out / "runs.csv").read_text()[:-30])  # truncated too
    assert _run(tmp_path, out) == 0  # used to end in JSONDecodeError from store.sync
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (out / "records").glob("*")}
    assert after.keys() == before.keys()
    assert after[records[0].name][1] != before[records[0].name][1]  # trained again
    for name in list(before)[1:]:
        assert after[name] == before[name]  # not retrained, not rewritten
    frame = pd.read_csv(out / "runs.csv")
    assert len(frame) == 4 and frame["key"].is_unique


def test_report_leaves_a_damaged_run_out_and_says_so(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, out) == 0
    capsys.readouterr()
    record = sorted((out / "records").glob("*.json"))[0]
    record.write_text("{")
    code = main(["report", str(out), "--format", "csv,md,html"])
    printed = capsys.readouterr()
    assert code == 0, printed.err  # used to refuse the whole dir ("not a readable runs.csv")
    assert f"1 run(s) of {out} left out" in printed.out and record.stem in printed.out
    for name in ("main.md", "report.html"):  # the report's own notes say so too
        text = (out / "report" / name).read_text()
        assert "Left out" in text and record.stem in text
    assert len(pd.read_csv(out / "runs.csv")) == 3
    assert not math.isnan(pd.read_csv(out / "report" / "main.csv").shape[0])


def test_ham_settings_survive_the_record_check(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    result = make_result(0, HamSettings(alpha=-10, beta=0.01), status="failed")
    store.add(result)
    assert ResultStore(tmp_path).read(result.spec.key()).spec == result.spec


def test_sweep_trains_a_damaged_run_of_a_finished_cell_again(tmp_path: Path) -> None:
    from sweep_helpers import grid_body, write_sweep

    path = write_sweep(tmp_path, grid_body("dmgsweep", alpha="[200]", beta="[0]"))
    out = tmp_path / "out"
    args = ["sweep", str(path), "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    records = sorted((out / "records").glob("*.json"))
    assert len(records) == 2  # the baseline and one HAM cell, one run each
    intact = records[1].read_bytes(), records[1].stat().st_mtime_ns
    records[0].write_bytes(records[0].read_bytes()[:50])
    assert main(args) == 0
    assert json.loads(records[0].read_text())["key"] == records[0].stem  # trained again
    assert (records[1].read_bytes(), records[1].stat().st_mtime_ns) == intact
    best = pd.read_csv(out / "best.csv")
    assert list(best["n"]) == [1, 1]
    from hamgraph.check import check_dir

    outcome = check_dir(out)  # the sweep's journal included
    assert outcome.clean, outcome.findings


def test_report_rebuilds_a_garbled_runs_csv_instead_of_refusing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert _run(tmp_path, out) == 0
    (out / "runs.csv").write_bytes(b'key,dataset\n"unterminated\x00\xff,\n' * 3)
    code = main(["report", str(out), "--format", "csv"])
    printed = capsys.readouterr()
    assert code == 0, printed.err  # used to exit 2: "not a readable runs.csv"
    assert "report: 4 runs (4 ok, 0 failed)" in printed.out
    assert len(pd.read_csv(out / "runs.csv")) == 4
    assert len(list((out / DAMAGED_DIR).glob("*/runs.csv"))) == 1  # the old file is kept
