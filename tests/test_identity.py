"""One identity per run and cell: optimizer settings in the key and in runs.csv, one best rule,
provenance and stale runs."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import pandas as pd
import pytest

from hamgraph.cells import format_summary, select_best
from hamgraph.config import load_config
from hamgraph.grid import expand, run_grid
from hamgraph.specs import (
    GraphParams,
    HamSettings,
    NodeParams,
    OptimizerSpec,
    RunSpec,
)
from hamgraph.store import ResultStore

MERGE = """\
name: merge
runs: 2
epochs: 3
overrides: {hidden: 8}
grid:
  dataset: [csbm-h0.8-n200]
  model: [gcn]
  optimizer:
    - {ham: {alpha: 200, beta: 0.1}}
    - {ham: {alpha: 200, beta: 0.1, sign_source: previous}}
    - {ham: {alpha: 200, beta: 0.1, mask_beta: false}}
"""

BASES = """\
name: bases
runs: 1
epochs: 3
overrides: {hidden: 8}
grid:
  dataset: [csbm-h0.8-n200]
  model: [gcn]
  optimizer:
    - adam
    - adamw
    - {sgd: {momentum: 0.9}}
    - {ham: {alpha: 200, beta: 0.1, base: sgd}}
    - {base: torch.optim.RAdam}
"""


def _grid(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return path


def test_distinct_ham_settings_stay_distinct(tmp_path: Path) -> None:
    """The issue's merge grid: 6 runs, 3 cells, every runs.csv row tells its settings."""
    outcome = run_grid(_grid(tmp_path, MERGE), out=tmp_path / "out", device="cpu")
    assert not outcome.failed
    frame = ResultStore(tmp_path / "out").frame()
    assert len(frame) == 6 and frame["key"].is_unique
    settings = frame[["sign_source", "mask_beta"]].drop_duplicates()
    assert sorted(map(tuple, settings.values)) == [
        ("current", "false"), ("current", "true"), ("previous", "true")
    ]
    assert set(frame["clamp"]) == {5.0} and set(frame["alpha"]) == {200.0}
    summary = outcome.summary
    assert list(summary["label"]) == [
        "ham(200, 0.1)",
        "ham(200, 0.1, sign_source=previous)",
        "ham(200, 0.1, mask_beta=False)",
    ]
    assert list(summary["n"]) == [2, 2, 2]
    assert len(format_summary(summary).strip().splitlines()) == 1 + 3


def test_other_bases_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "out"
    outcome = run_grid(_grid(tmp_path, BASES), out=out, device="cpu")
    assert not outcome.failed
    frame = ResultStore(out).frame().set_index("key")
    specs = expand(load_config(tmp_path / "grid.yaml"))
    bases = [s.optimizer.base for s in specs]
    assert bases == ["adam", "adamw", "sgd", "sgd", "torch.optim.RAdam"]
    assert list(frame.loc[[s.key() for s in specs], "base"]) == bases
    assert list(frame.loc[[s.key() for s in specs], "optimizer"]) == [
        "adam", "adamw", "sgd", "ham", "RAdam"
    ]
    sgd = specs[2]
    assert json.loads(frame.loc[sgd.key(), "base_options"]) == {"momentum": 0.9}
    record = json.loads(ResultStore(out).record_path(specs[3].key()).read_text())
    assert record["spec"]["optimizer"]["base"] == "sgd"
    assert record["spec"]["optimizer"]["ham"]["alpha"] == 200
    # different optimizers train different numbers
    losses = {
        s.key(): pd.read_csv(out / "history" / f"{s.key()}.csv")["loss"].iloc[-1] for s in specs
    }
    assert len({round(v, 12) for v in losses.values()}) == len(specs)
    assert list(outcome.summary["label"]) == [
        "adam", "adamw", "sgd(momentum=0.9)", "ham(200, 0.1) on sgd", "RAdam"
    ]


def test_keys_of_default_runs_did_not_change() -> None:
    """Keys computed by the first release (before the optimizer was a value): results of
    existing result dirs keep resuming."""
    node = NodeParams(lr=1e-3, hidden=64, layers=2, dropout=0.5, weight_decay=5e-4, epochs=10)
    graph = GraphParams(lr=1e-4, weight_decay=1e-5, hidden=256, layers=4, dropout=0.1,
                        residual=False, ffn=True, batch_size=32, epochs=100, warmup_epochs=5,
                        rwse_steps=20, pe_dim=16)
    ham = HamSettings(alpha=200.0, beta=0.1)
    assert RunSpec("cora", "gcn", node, OptimizerSpec("adam"), 1, 1).key() == (
        "cora-gcn-adam-run1-65957ff3d29d"
    )
    assert RunSpec("cora", "gcn", node, OptimizerSpec("adam", ham=ham), 1, 1).key() == (
        "cora-gcn-ham-run1-13af97875c09"
    )
    assert RunSpec("ogbg-molhiv", "gcnplus", graph, OptimizerSpec("adamw"), 0, 0).key() == (
        "ogbg-molhiv-gcnplus-adam-run0-019495ad7ed4"
    )
    # a setting away from the protocol's base changes the key
    other = RunSpec("cora", "gcn", node, OptimizerSpec("adamw", ham=ham), 1, 1)
    assert other.key() != RunSpec("cora", "gcn", node, OptimizerSpec("adam", ham=ham), 1, 1).key()
    options = RunSpec("cora", "gcn", node, OptimizerSpec("sgd", (("momentum", 0.9),)), 1, 1)
    assert options.key() != RunSpec("cora", "gcn", node, OptimizerSpec("sgd"), 1, 1).key()


def test_first_release_records_still_load(tmp_path: Path) -> None:
    node = NodeParams(lr=1e-3, hidden=64, layers=2, dropout=0.5, weight_decay=5e-4, epochs=10)
    spec = RunSpec("cora", "gcn", node, OptimizerSpec("adam", ham=HamSettings(1.0, 0.0)), 0, 0)
    store = ResultStore(tmp_path)
    store.records_dir.mkdir(parents=True)
    legacy = {
        "format": 1, "key": spec.key(),
        "spec": {"dataset": "cora", "model": "gcn", "params": vars(node) | {},
                 "params_kind": "NodeParams", "ham": {"alpha": 1.0, "beta": 0.0, "clamp": 5.0,
                 "mask_beta": True, "sign_source": "current"}, "run": 0, "seed": 0},
        "metric": "accuracy", "status": "ok", "val": 0.5, "test": 0.4, "best_epoch": 1,
        "epochs": 1, "seconds": 1.0, "reason": "", "history": [],
        "finished_at": "2026-01-01T00:00:00+00:00", "hamgraph_version": "0.1.0",
    }
    store.record_path(spec.key()).write_text(json.dumps(legacy))
    loaded = store.load(spec.key())
    assert loaded.spec == spec and loaded.spec.key() == spec.key()
    assert loaded.provenance["hamgraph_version"] == "0.1.0"
    row = store.frame().iloc[0]
    assert row["hamgraph_version"] == "0.1.0" and row["device"] == ""
    newer = dict(legacy, format=99)
    store.record_path(spec.key()).write_text(json.dumps(newer))
    with pytest.raises(Exception, match="record format 99 is newer"):
        store.load(spec.key())


def test_provenance_and_rerun_stale(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from hamgraph import __version__

    out = tmp_path / "out"
    grid = _grid(tmp_path, MERGE)
    assert not run_grid(grid, out=out, device="cpu").failed
    store = ResultStore(out)
    specs = expand(load_config(grid))
    record = json.loads(store.record_path(specs[0].key()).read_text())
    prov = record["provenance"]
    assert prov["hamgraph_version"] == __version__ and prov["device"] == "cpu"
    for name in ("torch_version", "torch_geometric_version", "ogb_version", "optuna_version",
                 "git_commit", "started_at", "finished_at"):
        assert name in prov
    assert prov["torch_version"] and prov["finished_at"] >= prov["started_at"]
    frame = store.frame()
    assert set(frame["hamgraph_version"]) == {__version__} and set(frame["device"]) == {"cpu"}

    # two runs recorded (through the store) as an older hamgraph would have recorded them
    stale = [specs[0].key(), specs[3].key()]
    for key in stale:
        old = store.load(key)
        older = {**old.provenance, "hamgraph_version": "0.1.0"}
        store.add(dataclasses.replace(old, provenance=older))
    untouched = {k: store.record_path(k).read_bytes() for k in store.finished_keys() - set(stale)}
    with caplog.at_level(logging.INFO, logger="hamgraph"):
        assert not run_grid(grid, out=out, device="cpu").failed
    assert "2 finished runs came from another hamgraph version" in caplog.text
    assert all(store.load(k).provenance["hamgraph_version"] == "0.1.0" for k in stale)

    assert not run_grid(grid, out=out, device="cpu", rerun_stale=True).failed
    assert all(store.load(k).provenance["hamgraph_version"] == __version__ for k in stale)
    assert {k: store.record_path(k).read_bytes() for k in untouched} == untouched
    assert len(store.frame()) == 6


def _cells(rows: list[dict]) -> pd.DataFrame:
    base = {"dataset": "cora", "model": "gcn", "base": "adam", "base_options": "", "clamp": 5.0,
            "mask_beta": "true", "sign_source": "current", "metric": "accuracy", "failed": 0,
            "n": 3, "val_std": 1.0, "test_mean": 80.0, "test_std": 1.0}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_best_rule_breaks_ties_by_smaller_alpha_then_beta() -> None:
    cells = _cells([
        {"optimizer": "ham", "alpha": 200.0, "beta": 0.1, "val_mean": 81.0, "label": "a"},
        {"optimizer": "ham", "alpha": 200.0, "beta": 0.0, "val_mean": 81.0, "label": "b"},
        {"optimizer": "ham", "alpha": 10.0, "beta": 0.1, "val_mean": 81.0, "label": "c"},
        {"optimizer": "ham", "alpha": 1.0, "beta": 0.0, "val_mean": 80.0, "label": "d"},
        {"optimizer": "ham", "alpha": 1.0, "beta": 0.0, "val_mean": 99.0, "label": "e",
         "failed": 1},  # a cell with a failed run never wins
    ])
    assert select_best(cells)["label"] == "c"
    assert select_best(cells.iloc[:2])["label"] == "b"  # same |alpha|: smaller beta
    assert select_best(cells.iloc[[4]]) is None
    shuffled = cells.sample(frac=1.0, random_state=3)
    assert select_best(shuffled)["label"] == "c"  # order of finishing does not matter
    assert math.isclose(select_best(cells)["val_mean"], 81.0)


def test_track_tensorboard_from_the_grid_file(tmp_path: Path) -> None:
    """`track:` in the grid (same as --track): every run's scalars in TensorBoard event files."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    text = MERGE.replace("epochs: 3", "epochs: 12") + "track: [tensorboard]\n"
    out = tmp_path / "out"
    assert not run_grid(_grid(tmp_path, text), out=out, device="cpu").failed
    runs = sorted((out / "tensorboard" / "merge").iterdir())
    assert [p.name for p in runs] == sorted(ResultStore(out).finished_keys())
    for run_dir in runs:
        events = EventAccumulator(str(run_dir))
        events.Reload()
        steps = [e.step for e in events.Scalars("loss")]
        assert steps == list(range(1, 13))
        history = pd.read_csv(out / "history" / f"{run_dir.name}.csv")
        logged = [e.value for e in events.Scalars("metric/val")]
        assert logged == pytest.approx(list(history["val"]), rel=1e-6)
