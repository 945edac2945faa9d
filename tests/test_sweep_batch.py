"""`hamgraph sweep` on the run/cell identity: one best rule (ties), base optimizers, batches
with packed runs, stale provenance, worker seeds."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState
from sweep_helpers import TINY, assert_each_cell_once, grid_body, trials_of, write_sweep

from hamgraph import cells
from hamgraph import sweep as sw
from hamgraph.cli import main
from hamgraph.runner import stale_keys
from hamgraph.specs import RunResult
from hamgraph.store import ResultStore
from hamgraph.sweep.spaces import node_id, worker_seed


def _best_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "best.csv") as f:
        return list(csv.DictReader(f))


def test_tied_cells_best_csv_names_the_cell_of_cells_best_per_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 2: with equal means, best.csv and the report's rule pick the same cell."""
    from hamgraph import train

    def tied(spec, *args, **kwargs):  # every HAM cell the same val; the baseline lower
        val = 0.4 if spec.ham is None else 0.5
        return RunResult(spec, "accuracy", "ok", val, 0.3, 1, 1, 0.01)

    monkeypatch.setattr(train, "execute", tied)
    # the tie winner (smallest |alpha|, then beta) is listed last, so file order cannot pick it
    path = write_sweep(tmp_path, grid_body("tie", alpha="[200, 10]", beta="[0.1, 0]"))
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    rows = _best_rows(out)
    assert [r["optimizer"] for r in rows] == ["adam", "ham"]
    assert (float(rows[1]["alpha"]), float(rows[1]["beta"])) == (10.0, 0.0)

    frame = ResultStore(out).frame()
    expected = cells.best_per_group(cells.summarize(frame), ("dataset", "model", "optimizer"))
    got = pd.read_csv(out / "best.csv")
    assert list(got["label"]) == ["adam", "ham(10, 0)"]
    key = ["optimizer", "label", "alpha", "beta", "val_mean", "n"]
    as_set = lambda f: {tuple(map(str, row)) for row in f[key].itertuples(index=False)}  # noqa: E731
    assert as_set(got) == as_set(expected)
    by_number = {t.number: t for t in trials_of(path)}
    assert by_number[int(rows[1]["trial"])].user_attrs["cell"] == "a=10,b=0"

    # and `hamgraph report` on the sweep's result dir names the same cell in best_params
    from hamgraph.report import write_report

    report = write_report([out], formats=["csv"], out=tmp_path / "report")
    assert report.out == tmp_path / "report"
    best_params = pd.read_csv(tmp_path / "report" / "best_params.csv")
    ham = best_params[best_params["optimizer"] == "ham"]
    assert len(ham) == 1
    assert (float(ham["alpha"].iloc[0]), float(ham["beta"].iloc[0])) == (10.0, 0.0)


def test_base_optimizer_is_part_of_the_cells(tmp_path: Path) -> None:
    body = grid_body("sgd", alpha="[200]", beta="[0]").replace(
        "runs: 1\n", "runs: 1\nbase: {sgd: {momentum: 0.9}}\n")
    path = write_sweep(tmp_path, body)
    sweep = sw.load_sweep(path)
    plain = sw.load_sweep(write_sweep(tmp_path, grid_body("sgd", alpha="[200]", beta="[0]"), "p"))
    assert sw.study_name(sweep, TINY, "gcn") != sw.study_name(plain, TINY, "gcn")
    assert [c.label for c in sweep.search.cells(sweep.baseline)] == [
        "sgd(momentum=0.9)", "a=200,b=0"]
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    assert_each_cell_once(trials_of(path), ["sgd(momentum=0.9)", "a=200,b=0"])
    frame = ResultStore(out).frame()
    assert set(frame["base"]) == {"sgd"}
    assert {json.loads(o)["momentum"] for o in frame["base_options"]} == {0.9}
    assert [r["optimizer"] for r in _best_rows(out)] == ["sgd", "ham"]
    assert _best_rows(out)[1]["label"] == "ham(200, 0) on sgd(momentum=0.9)"


def test_bad_base_optimizer_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = grid_body("b").replace("runs: 1\n", "runs: 1\nbase: {sgd: {momentun: 0.9}}\n")
    path = write_sweep(tmp_path, body)
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{path}: base: unknown option 'momentun'" in err and len(err.splitlines()) == 1
    rmsprop = grid_body("r").replace("runs: 1\n", "runs: 1\nbase: torch.optim.RMSprop\n")
    path = write_sweep(tmp_path, rmsprop, "r")
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{path}: base: HAM cannot run on RMSprop" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("pack", ["auto", 2])
def test_batched_packed_sweep_matches_one_run_at_a_time(tmp_path: Path, pack: object) -> None:
    """A batch trains every run of its trials through the runner's packs: same trial values."""
    pytest.importorskip("hamgraph.train.packed")
    body = grid_body("pk", alpha="[200, -10]", beta="[0]").replace("runs: 1", "runs: 2")
    (tmp_path / "plain").mkdir()
    (tmp_path / "packed").mkdir()
    plain, packed = write_sweep(tmp_path / "plain", body), write_sweep(tmp_path / "packed", body)
    assert sw.run_sweep(plain, out=tmp_path / "plain" / "out", device="cpu", pack="off",
                        batch=1).finished
    assert sw.run_sweep(packed, out=tmp_path / "packed" / "out", device="cpu",
                        pack=pack).finished  # type: ignore[arg-type]

    def values(path: Path) -> dict[str, tuple[float, float]]:
        return {t.user_attrs["cell"]: (t.value, t.user_attrs["test_mean"])
                for t in trials_of(path) if t.state == TrialState.COMPLETE}

    assert values(packed) == values(plain) and len(values(plain)) == 3


def test_tpe_batch_with_pruner_trains_in_stages(tmp_path: Path) -> None:
    body = f"""
name: tpeb
datasets: [{TINY}]
models: [gcn]
epochs: 3
runs: 2
search:
  kind: tpe
  alpha: {{min: 1, max: 200, signs: [ham, nham]}}
  trials: 4
  batch: 3
  pruner: median
"""
    path = write_sweep(tmp_path, body)
    assert sw.run_sweep(path, out=tmp_path / "out", device="cpu", pack="off").finished
    trials = trials_of(path)
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:  # the running mean after each run, for the pruner
        assert sorted(t.intermediate_values) == [0, 1]
        assert t.intermediate_values[1] == pytest.approx(t.value)
    assert len({(t.params.get("abs_alpha"), t.params.get("sign")) for t in trials}) == 4


def test_stale_runs_are_counted_and_rerun_stale_retrains_only_them(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid_body("st", alpha="[200]", beta="[0]"))
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").stale == 0
    store = ResultStore(out)
    keys = sorted(store.finished_keys())
    old = store.load(keys[0])  # recorded again, through the store, as an older version would
    older = {**old.provenance, "hamgraph_version": "0.0.old"}
    store.add(dataclasses.replace(old, provenance=older))
    untouched = store.record_path(keys[1]).read_text()
    assert stale_keys(store, keys) == [keys[0]]

    assert sw.run_sweep(path, out=out, device="cpu", pack="off").stale == 1  # kept, counted
    assert stale_keys(store, keys) == [keys[0]]
    assert sw.run_sweep(path, out=out, device="cpu", pack="off", rerun_stale=True).stale == 1
    assert stale_keys(store, keys) == []
    assert store.record_path(keys[1]).read_text() == untouched  # the other run not retrained
    assert len(trials_of(path)) == 2  # settled cells: no new trial


def test_worker_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first worker of a fresh study uses the file's seed; every other seat its own."""
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    assert node_id() == "0.0" and worker_seed(7, 0, node_id(), 0) == 7
    seats = [(0, "0.0", 3), (1, "0.0", 0), (0, "1.0", 0), (0, "0.1", 0), (1, "0.0", 3)]
    seeds = [worker_seed(7, *seat) for seat in seats]
    assert len(set(seeds)) == len(seeds) and 7 not in seeds
    # two srun tasks of one array task differ (the old seed read only SLURM_ARRAY_TASK_ID)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_PROCID", "1")
    assert node_id() == "3.1"


def test_sweep_tracks_every_run_in_one_group_per_study(tmp_path: Path) -> None:
    """`track:` in the sweep file: TensorBoard runs under tensorboard/<study>/<run key>/, and
    each run's logged config names its cell."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    body = grid_body("tracked", alpha="[200]", beta="[0.1]") + "track: [tensorboard]\n"
    path = write_sweep(tmp_path, body)
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu").finished
    study = sw.study_name(sw.load_sweep(path), TINY, "gcn")
    runs = sorted(p.name for p in (out / "tensorboard" / study).iterdir())
    assert runs == sorted(ResultStore(out).finished_keys()) and len(runs) == 2
    ham_run = next(r for r in runs if "-ham-" in r)
    events = EventAccumulator(str(out / "tensorboard" / study / ham_run),
                              size_guidance={"tensors": 0})
    events.Reload()
    texts = [t for tag in events.Tags()["tensors"] for t in events.Tensors(tag)]
    config = b"".join(v.tensor_proto.string_val[0] for v in texts if v.tensor_proto.string_val)
    assert b"ham(200, 0.1)" in config and b"provenance" in config
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4, 5]


def test_a_stopped_sweep_queues_its_open_trials_again_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM / SIGUSR1 (Preempted out of the trainer): the batch's open trials FAIL with outcome
    "preempted" and are queued again, so the rerun finishes every cell without waiting for the
    stale grace period."""
    from hamgraph import preemption, train
    from hamgraph.preemption import Preempted

    calls = {"n": 0}

    def stopped_on_the_third_run(spec, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Preempted
        return RunResult(spec, "accuracy", "ok", 0.5, 0.4, 1, 1, 0.01)

    monkeypatch.setattr(train, "execute", stopped_on_the_third_run)
    path = write_sweep(tmp_path, grid_body("stop"))  # the baseline + 4 HAM cells, 1 run each
    out = tmp_path / "out"
    with pytest.raises(Preempted):
        sw.run_sweep(path, out=out, device="cpu", pack="off")
    trials = trials_of(path)
    preempted = [t for t in trials if t.user_attrs.get("outcome") == "preempted"]
    assert preempted and all(t.state == TrialState.FAIL for t in preempted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["cell"] for t in waiting) == sorted(
        t.user_attrs["cell"] for t in preempted)

    preemption.reset()
    monkeypatch.setattr(train, "execute", lambda spec, *a, **k: RunResult(
        spec, "accuracy", "ok", 0.5, 0.4, 1, 1, 0.01))
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    sweep = sw.load_sweep(path)
    assert_each_cell_once(trials_of(path), [c.label for c in sweep.search.cells(sweep.baseline)])
