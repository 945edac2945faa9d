"""`hamgraph sweep`: grid completeness, resume after kill -9, duplicates, divergence, best.csv.

Real trainer on a tiny synthetic graph (csbm-h0.8-n200, 1 run, a few epochs): a trial is ~1 s.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from sweep_helpers import TINY, assert_each_cell_once, grid_body, trials_of, write_sweep

from hamgraph import sweep as sw
from hamgraph.cli import main
from hamgraph.specs import RunResult
from hamgraph.sweep import coordination as co

REPO = Path(__file__).resolve().parents[1]


# --- sweep files ------------------------------------------------------------------------------


BAD = {
    "unknown-key": ("unknown key 'alphas'", "search",
                    "name: b\ndatasets: [cora]\nmodels: [gcn]\n"
                    "search: {kind: grid, alphas: [1]}\n"),
    "bad-dataset": ("datasets[1]", "unknown dataset",
                    "name: b\ndatasets: [cora, corra]\nmodels: [gcn]\n"
                    "search: {kind: grid, alpha: [1]}\n"),
    "model-task": ("models[0]", "gcnplus",
                   "name: b\ndatasets: [cora]\nmodels: [gcnplus]\n"
                   "search: {kind: grid, alpha: [1]}\n"),
    "negative-beta": ("search.beta", "beta must be finite and >= 0",
                      "name: b\ndatasets: [cora]\nmodels: [gcn]\n"
                      "search: {kind: grid, alpha: [1], beta: [-0.1]}\n"),
    "repeated-alpha": ("search.alpha", "repeat",
                       "name: b\ndatasets: [cora]\nmodels: [gcn]\n"
                       "search: {kind: grid, alpha: [1, 1.0]}\n"),
    "string-alpha": ("search.alpha[0]", "'x'",
                     "name: b\ndatasets: [cora]\nmodels: [gcn]\n"
                     "search: {kind: grid, alpha: [x]}\n"),
    "bad-override": ("overrides.hiden", "unknown hyperparameter",
                     "name: b\ndatasets: [cora]\nmodels: [gcn]\noverrides: {hiden: 3}\n"
                     "search: {kind: grid, alpha: [1]}\n"),
    "tpe-range": ("search.alpha", "min <= max",
                  "name: b\ndatasets: [cora]\nmodels: [gcn]\n"
                  "search: {kind: tpe, alpha: {min: 10, max: 1}}\n"),
    "grid-pruner": ("search", "unknown key 'pruner'",
                    "name: b\ndatasets: [cora]\nmodels: [gcn]\n"
                    "search: {kind: grid, alpha: [1], pruner: median}\n"),
    "missing-search": ("(top level)", "missing required key 'search'",
                       "name: b\ndatasets: [cora]\nmodels: [gcn]\n"),
    "bad-kind": ("search", "kind", "name: b\ndatasets: [cora]\nmodels: [gcn]\n"
                 "search: {kind: random, alpha: [1]}\n"),
    "yaml": ("invalid YAML", "line", "name: b\ndatasets: [cora\n"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_file_exits_2_with_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, words, body = BAD[case]
    path = write_sweep(tmp_path, body, name=case)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and words in err, err
    assert not out.exists()


def test_shipped_sweeps_are_valid() -> None:
    smoke = sw.load_sweep(REPO / "sweeps" / "smoke.yaml")
    assert [c.label for c in smoke.search.cells()] == [
        "adam", "a=200,b=0", "a=200,b=0.01", "a=200,b=0.1", "a=-10,b=0", "a=-10,b=0.01",
        "a=-10,b=0.1",
    ]
    ham = sw.load_sweep(REPO / "sweeps" / "node-ham.yaml")
    nham = sw.load_sweep(REPO / "sweeps" / "node-nham.yaml")
    assert len(ham.datasets) == len(nham.datasets) == 13 and ham.models == ["gcn", "gat", "sage"]
    assert all(a > 0 for a in ham.search.alpha) and all(a < 0 for a in nham.search.alpha)
    ogbg = sw.load_sweep(REPO / "sweeps" / "ogbg.yaml")
    assert len(ogbg.datasets) == 4 and ogbg.models == ["gcnplus"]


def test_study_name_is_stable_and_tracks_the_space(tmp_path: Path) -> None:
    a = sw.load_sweep(write_sweep(tmp_path, grid_body("n"), "a"))
    b = sw.load_sweep(write_sweep(tmp_path, grid_body("n"), "b"))
    c = sw.load_sweep(write_sweep(tmp_path, grid_body("n", beta="[0, 0.01]"), "c"))
    assert sw.study_name(a, TINY, "gcn") == sw.study_name(b, TINY, "gcn")
    assert sw.study_name(a, TINY, "gcn") != sw.study_name(c, TINY, "gcn")
    assert sw.study_name(a, TINY, "gcn").startswith(f"n.{TINY}.gcn.")


def test_storage_urls(tmp_path: Path) -> None:
    assert sw.storage_url(None, tmp_path) == f"journal:{tmp_path.resolve()}/optuna-journal.log"
    assert sw.storage_url("journal:x.log", tmp_path).endswith("/x.log")
    assert sw.storage_url("sqlite:///a.db", tmp_path) == "sqlite:///a.db"
    assert sw.storage_url("postgresql://u@h/db", tmp_path).startswith("postgresql")
    assert sw.storage_url("postgresql://u@h/db", tmp_path).endswith("://u@h/db")


# --- running sweeps ---------------------------------------------------------------------------


def test_grid_every_cell_once_best_csv_and_resume(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid_body("g"))
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    trials = trials_of(path)
    cells = ["adam", "a=200,b=0", "a=200,b=0.1", "a=-10,b=0", "a=-10,b=0.1"]
    assert_each_cell_once(trials, cells)
    assert len(trials) == len(cells)
    for t in trials:  # x100, like every table
        assert 0 <= t.user_attrs["test_mean"] <= 100 and t.value == t.user_attrs["val_mean"]
        assert t.value == pytest.approx(100 * t.user_attrs["vals"][0])

    with open(out / "best.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == sw.BEST_COLUMNS
    assert [r["optimizer"] for r in rows] == ["adam", "ham", "nham"]
    by_number = {t.number: t for t in trials}
    for r in rows:
        best = by_number[int(r["trial"])]
        same_kind = [t.value for t in trials if t.user_attrs["optimizer"] == r["optimizer"]]
        assert best.value == max(same_kind)
        assert float(r["val_mean"]) == pytest.approx(best.value)
        assert r["n"] == "1" and r["dataset"] == TINY and r["model"] == "gcn"
    assert rows[0]["alpha"] == "" and float(rows[2]["alpha"]) == -10
    assert len((out / "runs.csv").read_text().strip().splitlines()) == 1 + len(cells)

    # The same command again resumes: nothing new is trained, no new trial.
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    assert len(trials_of(path)) == len(cells)


def test_duplicate_cell_is_pruned_with_reason(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, grid_body("d", alpha="[200]", beta="[0]"))
    sweep = sw.load_sweep(path)
    storage = sw.open_storage(sw.storage_url(None, tmp_path / "out"))
    (study,) = sw.prepare_studies(sweep, storage)
    study.enqueue_trial({"cell": "a=200,b=0"})
    study.enqueue_trial({"cell": "a=200,b=0"})
    assert sw.run_sweep(path, out=tmp_path / "out", device="cpu", pack="off").finished
    trials = trials_of(path)
    assert_each_cell_once(trials, ["adam", "a=200,b=0"])
    dup = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(dup) == 1 and dup[0].user_attrs["outcome"] == "duplicate"
    first = next(t for t in trials if t.state == TrialState.COMPLETE and t.params["cell"]
                 == "a=200,b=0")
    assert dup[0].user_attrs["reason"] == f"duplicate of trial {first.number}"


def test_racing_duplicates_never_both_complete(tmp_path: Path) -> None:
    """The check before COMPLETE: whoever marks itself finishing second yields."""
    storage = sw.open_storage(f"journal:{tmp_path / 'j.log'}")
    study = optuna.create_study(storage=storage, direction="maximize")
    a, b = study.ask(), study.ask()
    for t in (a, b):
        t.set_user_attr("cell", "a=1,b=0")
    # Start check: only the larger number yields to a running smaller one.
    assert co.duplicate_of(study, b, "a=1,b=0", final=False) == a.number
    assert co.duplicate_of(study, a, "a=1,b=0", final=False) is None
    # b got through anyway (it checked before a claimed the cell) and finishes first ...
    storage.set_trial_system_attr(b._trial_id, co.S_FINISHING, True)
    assert co.duplicate_of(study, b, "a=1,b=0", final=True) is None
    # ... then a, finishing later, sees b's mark and yields, before or after b's COMPLETE.
    storage.set_trial_system_attr(a._trial_id, co.S_FINISHING, True)
    assert co.duplicate_of(study, a, "a=1,b=0", final=True) == b.number
    study.tell(b, 0.5)
    assert co.duplicate_of(study, a, "a=1,b=0", final=True) == b.number


def test_divergence_fails_the_trial_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hamgraph import train

    real = train.execute

    def diverge_on_nham(spec, *args, **kwargs):  # the real trainer, except for nHAM cells
        if spec.ham is not None and spec.ham.alpha < 0:  # a diverged run is a failed result
            return RunResult(spec, "accuracy", "failed", math.nan, math.nan, 0, 3, 0.1,
                             reason=f"loss is nan at epoch 3 (alpha={spec.ham.alpha})")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(train, "execute", diverge_on_nham)
    path = write_sweep(tmp_path, grid_body("v", alpha="[200, -10]", beta="[0]"))
    assert sw.run_sweep(path, out=tmp_path / "out", device="cpu", pack="off").finished
    trials = trials_of(path)
    states = {t.user_attrs["cell"]: t.state for t in trials}
    assert states == {"adam": TrialState.COMPLETE, "a=200,b=0": TrialState.COMPLETE,
                      "a=-10,b=0": TrialState.FAIL}
    failed = next(t for t in trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["outcome"] == "diverged"
    assert "loss is nan" in failed.user_attrs["reason"]
    with open(tmp_path / "out" / "best.csv") as f:
        assert [r["optimizer"] for r in csv.DictReader(f)] == ["adam", "ham"]
    # Rerun: a diverged cell is settled, not retried.
    assert sw.run_sweep(path, out=tmp_path / "out", device="cpu", pack="off").finished
    assert len(trials_of(path)) == 3


def test_tpe_with_baseline_and_budget(tmp_path: Path) -> None:
    body = f"""
name: tpe
datasets: [{TINY}]
models: [gcn]
epochs: 5
runs: 1
search:
  kind: tpe
  alpha: {{min: 1, max: 200, signs: [ham, nham]}}
  beta: {{min: 0, max: 0.1}}
  trials: 3
  pruner: median
"""
    path = write_sweep(tmp_path, body)
    assert sw.run_sweep(path, out=tmp_path / "out", device="cpu", pack="off").finished
    trials = trials_of(path)
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[0].user_attrs["cell"] == "adam" and trials[0].params == {}
    for t in trials[1:]:
        assert set(t.params) == {"sign", "abs_alpha", "beta"}
        assert 1 <= t.params["abs_alpha"] <= 200 and 0 <= t.params["beta"] <= 0.1
        sign = 1 if t.params["sign"] == "ham" else -1
        assert t.user_attrs["alpha"] == sign * t.params["abs_alpha"]
    # --trials raises the budget of the same study: resumes and adds one trial.
    assert sw.run_sweep(path, out=tmp_path / "out", device="cpu", trials=4, pack="off").finished
    assert len(trials_of(path)) == 4
