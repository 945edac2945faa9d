"""Sweeps over any run setting (`search.space`), equal budgets, pruning that respects runs.

Real trainer on a tiny synthetic graph (csbm-h0.8-n200, 1-2 runs, a few epochs) or a fake one.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState
from sweep_helpers import TINY, assert_each_cell_once, kill_mid_trial, trials_of, write_sweep

from hamgraph import cells
from hamgraph import sweep as sw
from hamgraph.cli import main
from hamgraph.specs import OptimizerSpec, RunResult, RunSpec
from hamgraph.store import ResultStore
from hamgraph.sweep.spaces import Cell

REPO = Path(__file__).resolve().parents[1]
CELL_INDEX_ALPHA = cells.CELL_COLUMNS.index("alpha")


def _body(search: str, extra: str = "epochs: 3\nruns: 1\n", name: str = "s") -> str:
    return f"name: {name}\ndatasets: [{TINY}]\nmodels: [gcn]\n{extra}search:\n{search}"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


# --- the vocabulary: one line naming the key, exit 2 -------------------------------------------

BAD = {
    "unknown-name": ("search.space", "unknown setting 'dropuot'; valid: alpha, beta, clamp",
                     "  kind: grid\n  space: {dropuot: [0.1]}\n"),
    "plugin-option": ("search.space.model.width", "model 'gcn' is built into hamgraph and has "
                      "no options to search",
                      "  kind: grid\n  space: {model.width: [1, 2]}\n"),
    "dropout-range": ("search.space.dropout", "must be in [0, 1), got 1.5",
                      "  kind: tpe\n  space: {dropout: {range: [0.1, 1.5]}}\n"),
    "int-field": ("search.space.hidden", "hidden: input should be a valid integer",
                  "  kind: grid\n  space: {hidden: [16, 32.5]}\n"),
    "grid-range": ("search.space", "lr: a grid needs a list of values, not a range",
                   "  kind: grid\n  space: {lr: {log: [1.0e-3, 1.0e-1]}}\n"),
    "log-zero": ("search.space.lr", "log needs 0 < lo",
                 "  kind: tpe\n  space: {lr: {log: [0, 1.0e-1]}}\n"),
    "base-option": ("search.space.base.momentum", "unknown option 'momentum' of Adam",
                    "  kind: grid\n  space: {base.momentum: [0.9]}\n"),
    "clamp": ("search.space.clamp", "clamp must be > 0", "  kind: grid\n  alpha: [1]\n"
              "  space: {clamp: [-1]}\n"),
    "twice": ("search.space", "alpha is given both in search and in search.space",
              "  kind: grid\n  alpha: [1]\n  space: {alpha: [2]}\n"),
    "override-twice": ("search.space.epochs", "also set in overrides",
                       "  kind: grid\n  space: {epochs: [2, 3]}\n"),
    "equal-nothing": ("search", "budget: equal tunes the baseline over the non-HAM settings",
                      "  kind: tpe\n  alpha: {min: 1, max: 10}\n  budget: equal\n"),
    "int-step": ("search.space.hidden", "step must be an int, got 0.5",
                 "  kind: tpe\n  space: {hidden: {range: [8, 32], step: 0.5}}\n"),
    "ham-only": ("search", "clamp vary HAM cells only, but alpha is not searched",
                 "  kind: grid\n  space: {clamp: [1.0], lr: [0.01]}\n"),
    "bool-range": ("search.space.residual", "residual",
                   "  kind: tpe\n  space: {residual: {range: [0, 1]}}\n"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_space_exits_2_with_one_line(case: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    key, words, search = BAD[case]
    path = write_sweep(tmp_path, _body(search), name=case)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and words in err, err
    assert not out.exists()


def test_existing_sweep_files_keep_their_study_names() -> None:
    """Pinned from the release before `space:`: editing the schema must not move them."""
    expected = {
        "smoke": ("cora", "gcn", "smoke.cora.gcn.a08f9ccf"),
        "node-ham": ("cora", "gcn", "node-ham.cora.gcn.2a264336"),
        "node-nham": ("cora", "gcn", "node-nham.cora.gcn.e835b960"),
        "ogbg": ("ogbg-molhiv", "gcnplus", "ogbg.ogbg-molhiv.gcnplus.2a264336"),
    }
    for name, (dataset, model, study) in expected.items():
        sweep = sw.load_sweep(REPO / "sweeps" / f"{name}.yaml")
        assert sw.study_name(sweep, dataset, model) == study
        assert sweep.studies()[0] == (sweep.datasets[0], sweep.models[0], "main")


def test_old_tpe_form_keeps_its_study_name(tmp_path: Path) -> None:
    body = """name: tpe
datasets: [cora]
models: [gcn]
epochs: 5
runs: 1
base: {sgd: {momentum: 0.9}}
search:
  kind: tpe
  alpha: {min: 1, max: 200, signs: [ham, nham]}
  beta: {min: 0, max: 0.1}
  trials: 3
"""
    sweep = sw.load_sweep(write_sweep(tmp_path, body))
    assert sw.study_name(sweep, "cora", "gcn") == "tpe.cora.gcn.f3c60184"


def test_tuned_baseline_example_is_valid() -> None:
    sweep = sw.load_sweep(REPO / "sweeps" / "tuned-baseline.yaml")
    assert sweep.datasets == ["cora", "chameleon", "minesweeper"] and sweep.models == ["gcn"]
    assert sweep.search.budget == "equal" and sweep.search.kind == "tpe"
    assert [r for _, _, r in sweep.studies()[:2]] == ["main", "baseline"]
    base = sweep.space_of("baseline")
    assert not base.has_ham and [n for n, _ in base.baseline_dims()] == [
        n for n, _ in sweep.search.baseline_dims()]
    assert {"lr", "dropout", "alpha", "beta"} <= set(sweep.search.space)


# --- one function applies a setting ------------------------------------------------------------


def test_every_kind_of_setting_reaches_the_run_spec(tmp_path: Path) -> None:
    body = _body("""  kind: grid
  alpha: [200]
  beta: [0]
  space:
    lr: [0.01, 0.05]
    base.momentum: [0.0, 0.9]
    clamp: [1.0]
    sign_source: [previous]
""", extra="epochs: 3\nruns: 2\nbase: sgd\n")
    sweep = sw.load_sweep(write_sweep(tmp_path, body))
    labels = [c.label for c in sweep.search.cells("sgd")]
    # baseline cells: the non-HAM settings only; HAM cells: every setting
    assert labels[:4] == ["sgd,lr=0.01,base.momentum=0", "sgd,lr=0.01,base.momentum=0.9",
                          "sgd,lr=0.05,base.momentum=0", "sgd,lr=0.05,base.momentum=0.9"]
    assert labels[4] == "a=200,b=0,lr=0.01,base.momentum=0,clamp=1,sign_source=previous"
    assert len(labels) == 8
    ham = sweep.search.cells("sgd")[-1]
    specs = sweep.specs(TINY, "gcn", ham)
    assert [s.run for s in specs] == [0, 1]
    spec = specs[0]
    assert spec.params.lr == 0.05 and spec.optimizer.options == {"momentum": 0.9}
    assert (spec.ham.alpha, spec.ham.clamp, spec.ham.sign_source) == (200, 1.0, "previous")
    base = sweep.specs(TINY, "gcn", sweep.search.cells("sgd")[0])[0]
    assert base.ham is None and base.params.lr == 0.01 and base.optimizer.options == {
        "momentum": 0.0}


def test_list_valued_option_is_a_choice(tmp_path: Path) -> None:
    body = _body("""  kind: grid
  space:
    base.betas: [[0.9, 0.999], [0.95, 0.999]]
""")
    sweep = sw.load_sweep(write_sweep(tmp_path, body))
    cells_ = sweep.search.cells()
    assert [c.label for c in cells_] == ["adam,base.betas=[0.9,0.999]",
                                         "adam,base.betas=[0.95,0.999]"]
    spec = sweep.specs(TINY, "gcn", cells_[1])[0]
    assert spec.optimizer.options == {"betas": (0.95, 0.999)}


def test_cells_split_by_params_in_summaries() -> None:
    """Two runs that differ only in lr are two cells, each with its settings shown."""
    runs = [_row(lr) for lr in (0.02, 0.05)]
    assert cells.cell_key(runs[0]) != cells.cell_key(runs[1])
    assert cells.cell_key(runs[0])[CELL_INDEX_ALPHA] is None  # a baseline: no alpha
    sweep_cells = cells.summarize(pd.DataFrame(runs))
    assert len(sweep_cells) == 2
    assert [cells.cell_key(r) for _, r in sweep_cells.iterrows()] == [
        cells.cell_key(r) for r in runs]
    assert list(sweep_cells["settings"]) == ["lr=0.02", "lr=0.05"]


def _row(lr: float) -> dict[str, object]:
    from hamgraph.data.registry import resolve_dataset
    from hamgraph.presets import default_params
    from hamgraph.store import params_json, run_row

    params = dataclasses.replace(default_params(resolve_dataset(TINY), "gcn"), lr=lr)
    spec = RunSpec(TINY, "gcn", params, OptimizerSpec("adam"), 0, 0)
    row = run_row(RunResult(spec, "accuracy", "ok", 0.5, 0.5, 1, 1, 0.1))
    assert row["params"] == params_json(spec)
    return {**row, "val": 0.5, "test": 0.5, "alpha": float("nan"), "beta": float("nan"),
            "clamp": float("nan")}


def test_select_best_never_prefers_a_partial_cell() -> None:
    table = pd.DataFrame({
        "label": ["a", "b"], "alpha": [1.0, 2.0], "beta": [0.0, 0.0],
        "n": [1, 2], "failed": [0, 0], "val_mean": [90.0, 50.0],
    })
    assert cells.select_best(table)["label"] == "b"


# --- running -----------------------------------------------------------------------------------


def test_grid_over_lr_and_dropout_runs_keys_best_and_report(tmp_path: Path) -> None:
    body = _body("""  kind: grid
  alpha: [200]
  beta: [0]
  space:
    lr: [0.01, 0.05]
    dropout: [0.2]
""", name="g")  # lr 0.01 is the preset's: best.csv names it all the same
    path = write_sweep(tmp_path, body)
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    labels = ["adam,lr=0.01,dropout=0.2", "adam,lr=0.05,dropout=0.2",
              "a=200,b=0,lr=0.01,dropout=0.2", "a=200,b=0,lr=0.05,dropout=0.2"]
    trials = trials_of(path)
    assert_each_cell_once(trials, labels)
    for t in trials:
        assert dict(t.user_attrs["settings"]) == {
            "lr": 0.01 if "lr=0.01" in t.user_attrs["cell"] else 0.05, "dropout": 0.2}

    # runs: the keys of two cells of one kind differ exactly by the searched values
    store = ResultStore(out)
    specs = [store.load(k).spec for k in sorted(store.finished_keys())]
    assert len(specs) == 4
    preset = sw.load_sweep(path).specs(TINY, "gcn", Cell(None))[0].params
    for spec in specs:
        changed = {f.name for f in dataclasses.fields(preset)
                   if getattr(spec.params, f.name) != getattr(preset, f.name)}
        assert changed <= {"lr", "dropout"} and spec.params.dropout == 0.2
    adam = [s for s in specs if s.ham is None]
    assert {s.params.lr for s in adam} == {0.01, 0.05} and len({s.key() for s in adam}) == 2
    frame = store.frame()
    assert frame["params"].nunique() == 2 and json.loads(frame["params"][0])["dropout"] == 0.2

    rows = _rows(out / "best.csv")
    assert [r["optimizer"] for r in rows] == ["adam", "ham"]
    for r in rows:
        trial = next(t for t in trials if t.number == int(r["trial"]))
        lr = dict(trial.user_attrs["settings"])["lr"]
        assert f"lr={lr:g}" in r["settings"] and "dropout=0.2" in r["settings"]
        assert r["trials"] == "2" and r["k"] == ""

    # the report: one row per optimizer kind, saying which settings won
    from hamgraph.data.registry import resolve_dataset
    from hamgraph.report import write_report

    write_report([out], formats=["csv", "md"], out=tmp_path / "report")
    main_csv = pd.read_csv(tmp_path / "report" / "main.csv", keep_default_na=False)
    assert sorted(main_csv["optimizer"]) == ["adam", "ham"]
    best_params = pd.read_csv(tmp_path / "report" / "best_params.csv", keep_default_na=False)
    assert sorted(best_params["optimizer"]) == ["adam", "ham"]  # the tuned baseline is listed
    for r in rows:
        shown = main_csv[main_csv["optimizer"] == r["optimizer"]].iloc[0]
        # the report: the params that differ from the preset (lr=0.01 is the preset's)
        expected = ", ".join(p for p in sorted(r["settings"].split(", ")) if p != "lr=0.01")
        assert shown["settings"] == expected and shown["cells_searched"] == 2
        # the readable tables name the searched value that won, the preset's lr included
        lr = dict(next(t for t in trials if t.number == int(r["trial"])).user_attrs["settings"])
        label = shown["row"]
        best_md = (tmp_path / "report" / "best_params.md").read_text()
        line = next(x for x in best_md.splitlines() if f"| {label} |" in x)
        assert line.endswith(f" | lr={lr['lr']:g} |")
        main_md = (tmp_path / "report" / "main.md").read_text()
        display = resolve_dataset(TINY).display
        assert f"- Chosen settings of {label}: {display} lr={lr['lr']:g}." in main_md


def test_tpe_equal_budget_gives_the_baseline_its_own_study(tmp_path: Path) -> None:
    body = _body("""  kind: tpe
  trials: 3
  space:
    lr: {log: [1.0e-3, 1.0e-1]}
    dropout: [0.2, 0.5]
    hidden: {range: [8, 32], step: 8}
    alpha: {choice: [10, -10]}
    beta: [0, 0.1]
  budget: equal
""", name="eq")
    path = write_sweep(tmp_path, body)
    out = tmp_path / "out"
    outcome = sw.run_sweep(path, out=out, device="cpu", pack="off")
    assert outcome.finished
    sweep = sw.load_sweep(path)
    url = sw.storage_url(None, out)
    main_trials = trials_of(path, url)
    import optuna

    base_trials = optuna.load_study(
        study_name=sw.study_name(sweep, TINY, "gcn", "baseline"),
        storage=sw.open_storage(url)).get_trials()
    assert len(main_trials) == len(base_trials) == 3
    assert all(t.state == TrialState.COMPLETE for t in main_trials + base_trials)
    # main: HAM cells only; baseline: the reference first, then the non-HAM settings only
    assert all(t.user_attrs["alpha"] is not None for t in main_trials)
    for t in main_trials:
        assert set(t.params) == {"alpha", "beta", "lr", "dropout", "hidden"}
        assert isinstance(t.params["hidden"], int) and t.params["hidden"] % 8 == 0
    assert base_trials[0].params == {} and base_trials[0].user_attrs["cell"] == "adam"
    assert all(set(t.params) == {"lr", "dropout", "hidden"} for t in base_trials[1:])
    rows = _rows(out / "best.csv")
    assert rows[0]["optimizer"] == "adam" and rows[0]["role"] == "baseline"
    assert {r["k"] for r in rows} == {"3"}
    for r in rows:
        assert float(r["val_at_k"]) == pytest.approx(float(r["val_mean"]))  # k = all trials
    assert "val@k" in sw.format_best(outcome.best)


def test_pruned_trial_is_never_the_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Median pruning at run steps with runs of different length (epochs searched): a trial
    pruned after run 0 has a higher partial mean than the complete ones, yet neither best.csv
    nor the report names it."""
    from hamgraph import train

    def fake(spec, *args, **kwargs):  # run 0: 0.9 (lr 0.01) or 0.8; run 1: 0.0
        val = 0.0 if spec.run == 1 else (0.9 if spec.params.lr == 0.01 else 0.8)
        return RunResult(spec, "accuracy", "ok", val, val, 1, spec.params.epochs, 0.01)

    monkeypatch.setattr(train, "execute", fake)
    body = _body("""  kind: tpe
  trials: 6
  include_baseline: false
  space:
    alpha: {range: [1, 10]}
    lr: [0.01, 0.1]
    epochs: [2, 3]
""", extra="runs: 2\n", name="p")
    path = write_sweep(tmp_path, body)
    sweep = sw.load_sweep(path)
    storage = sw.open_storage(sw.storage_url(None, tmp_path / "out"))
    (study,) = sw.prepare_studies(sweep, storage)
    for i in range(5):
        study.enqueue_trial({"alpha": 1.0 + i, "beta": 0.0, "lr": 0.01, "epochs": 2 + i % 2})
    study.enqueue_trial({"alpha": 9.0, "beta": 0.0, "lr": 0.1, "epochs": 3})
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off", batch=1).finished
    trials = trials_of(path)
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(pruned) == 1 and pruned[0].user_attrs["outcome"] == "pruned"
    assert pruned[0].params["lr"] == 0.1 and pruned[0].intermediate_values == {0: 80.0}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 5 and {t.value for t in complete} == {45.0}

    (row,) = _rows(out / "best.csv")
    assert float(row["val_mean"]) == 45.0 and int(row["trial"]) != pruned[0].number
    from hamgraph.report import write_report

    write_report([out], formats=["csv"], out=tmp_path / "report")
    shown = pd.read_csv(tmp_path / "report" / "main.csv").iloc[0]
    assert shown["val_mean"] == 45.0 and shown["n"] == 2


def test_space_sweep_resumes_after_kill_9(tmp_path: Path) -> None:
    """lr, dropout and alpha/beta searched: a kill -9 mid-sweep, a rerun, no cell twice."""
    body = _body("""  kind: grid
  space:
    lr: [0.01, 0.02]
    dropout: [0.3]
    alpha: [200]
    beta: [0]
""", extra="epochs: 400\nruns: 1\n", name="k")
    path = write_sweep(tmp_path, body)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hamgraph", "sweep", str(path), "--out", str(out),
           "--device", "cpu", "--batch", "1"]
    url = sw.storage_url(None, out)
    kill_mid_trial(cmd, tmp_path, path, url)
    again = subprocess.run(cmd, cwd=tmp_path, env=os.environ.copy(), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = trials_of(path, url)
    assert_each_cell_once(trials, ["adam,lr=0.01,dropout=0.3", "adam,lr=0.02,dropout=0.3",
                                   "a=200,b=0,lr=0.01,dropout=0.3",
                                   "a=200,b=0,lr=0.02,dropout=0.3"])
    assert len(ResultStore(out).finished_keys()) == 4


# The search space of docs/sweeps.md, verbatim (the docs test finds it here).
DOC_SPACE = """search:
  kind: tpe
  trials: 60
  space:
    lr: {log: [1.0e-4, 1.0e-2]}            # log-uniform float
    weight_decay: {range: [0, 1.0e-3]}     # uniform float
    hidden: {range: [64, 512], step: 64}   # an int field: 64, 128, ..., 512
    dropout: [0.2, 0.5, 0.7]               # a list: a categorical choice
    norm: {choice: [none, layer]}          # the same, spelled out
    base.betas: [[0.9, 0.999], [0.95, 0.999]]   # an option of the base optimizer (Adam)
    alpha: {choice: [1, 10, 100, 200, -1, -10, -100, -200]}
    beta: [0, 0.01, 0.1]
    clamp: [2.0, 5.0]                      # HAM's own settings vary HAM cells only
  include_baseline: true
"""


def test_documented_space_loads_and_suggests(tmp_path: Path) -> None:
    import optuna

    sweep = sw.load_sweep(write_sweep(tmp_path, f"name: doc\ndatasets: [cora]\nmodels: [gcn]\n"
                                                f"{DOC_SPACE}"))
    space = sweep.search
    assert [n for n, _ in space.baseline_dims()] == [
        "lr", "weight_decay", "hidden", "dropout", "norm", "base.betas"]
    study = optuna.create_study(sampler=space.make_sampler(0, 0), direction="maximize")
    for _ in range(5):
        cell = space.suggest(study.ask())
        spec = sweep.specs("cora", "gcn", cell)[0]
        values = dict(cell.settings)
        assert spec.params.hidden == values["hidden"] and spec.params.hidden % 64 == 0
        assert 1e-4 <= spec.params.lr <= 1e-2 and spec.params.norm in ("none", "layer")
        assert spec.optimizer.options["betas"] in ((0.9, 0.999), (0.95, 0.999))
        assert spec.ham is not None and spec.ham.clamp == values["clamp"]


def test_base_option_values_are_checked_by_the_optimizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_sweep(tmp_path, _body("  kind: grid\n  space: {base.momentum: [0.9, -1.0]}\n",
                                       extra="epochs: 3\nruns: 1\nbase: sgd\n"))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "search.space.base.momentum" in err and "-1.0" in err and "momentum" in err, err
    assert not (tmp_path / "out").exists()


def test_grid_equal_budget_baseline_study_has_the_same_grid(tmp_path: Path) -> None:
    import optuna

    body = _body("""  kind: grid
  alpha: [200]
  beta: [0]
  space:
    lr: [0.01, 0.05]
  budget: equal
  include_baseline: false
""", name="ge")
    path = write_sweep(tmp_path, body)
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    sweep = sw.load_sweep(path)
    url = sw.storage_url(None, out)
    assert_each_cell_once(trials_of(path, url), ["a=200,b=0,lr=0.01", "a=200,b=0,lr=0.05"])
    base = optuna.load_study(study_name=sw.study_name(sweep, TINY, "gcn", "baseline"),
                             storage=sw.open_storage(url)).get_trials()
    assert_each_cell_once(base, ["adam,lr=0.01", "adam,lr=0.05"])
    rows = _rows(out / "best.csv")
    assert [(r["optimizer"], r["role"], r["k"]) for r in rows] == [
        ("adam", "baseline", "2"), ("ham", "main", "2")]


def test_a_half_claimed_trial_is_no_cell(tmp_path: Path) -> None:
    """A worker killed while writing a trial's attributes leaves no half cell behind."""
    import optuna

    from hamgraph.sweep.spaces import cell_of_trial

    study = optuna.create_study(storage=sw.open_storage(f"journal:{tmp_path / 'j.log'}"))
    trial = study.ask()
    trial.set_user_attr("cell", "a=200,b=0,lr=0.01")
    trial.set_user_attr("alpha", 200.0)  # killed before beta
    (frozen,) = study.get_trials()
    assert cell_of_trial(frozen) is None
    trial.set_user_attr("beta", 0.0)
    trial.set_user_attr("settings", [["lr", 0.01], ["base.betas", [0.9, 0.999]]])
    (frozen,) = study.get_trials()
    cell = cell_of_trial(frozen)
    assert cell is not None and cell.label == "a=200,b=0,lr=0.01,base.betas=[0.9,0.999]"
    assert cell.settings[1] == ("base.betas", (0.9, 0.999))  # hashable again
