"""The sweep's summary: best.csv, the best cell per dataset x model and optimizer kind.

The cells are those of COMPLETE trials, summarized from their runs in the result store by
`hamgraph.cells.summarize` and ranked by `hamgraph.cells.select_best` (highest mean validation
metric; ties -> smaller |alpha|, smaller beta, label, then the `params` / `plugin_options`
JSON, never the `settings` display text, which best.csv spells searched-first): the same cell
key and the same rule as `hamgraph report`, so both name the same best cell. Pruned trials (a
part of the runs) and failed ones do not take part.

Equal budgets (`search.budget: equal`): each target has a HAM study and a baseline study. Their
rows also say `k`, the trials both studies completed (the smaller count), and `val_at_k` /
`test_at_k` / `label_at_k` / `settings_at_k`: the best cell of the row's optimizer kind among
the first k COMPLETE trials of its study (trial-number order), so the two are compared at the
same number of trials even while one study is further along.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from hamgraph.atomic import atomic_path
from hamgraph.cells import (
    CELL_COLUMNS,
    SUMMARY_COLUMNS,
    best_per_group,
    format_mean_std,
    select_best,
    summarize,
)
from hamgraph.store import ResultStore
from hamgraph.sweep.schema import Sweep, study_name
from hamgraph.sweep.spaces import Cell, cell_of_trial, show

BEST_CSV = "best.csv"
EQUAL_COLUMNS = ["k", "val_at_k", "test_at_k", "label_at_k", "settings_at_k"]
# cells.summarize's columns (metrics x100, sample std) + the trial and the study that ran it,
# how many trials of its kind the study completed, and the equal-budget comparison
BEST_COLUMNS = [*CELL_COLUMNS, "label", "settings", *SUMMARY_COLUMNS, "trial", "study", "role",
                "trials", *EQUAL_COLUMNS]
GROUP_BY = ("dataset", "model", "optimizer")  # one best cell per optimizer kind


def _settings(cell: Cell, preset_diff: str) -> str:
    """The cell's searched settings (even at the preset's value), then its other params that
    differ from the preset (cells.summarize's `settings`), e.g. "lr=0.01, epochs=30"."""
    searched = [f"{name}={show(value)}" for name, value in cell.settings]
    names = {name for name, _ in cell.settings}
    rest = [part for part in preset_diff.split(", ") if part and part.split("=")[0] not in names]
    return ", ".join(searched + rest)


def _kind_rank(kind: str) -> int:
    return {"ham": 1, "nham": 2}.get(kind, 0)  # the baseline first, then HAM, then nHAM


def sweep_cells(sweep: Sweep, storage: optuna.storages.BaseStorage,
                store: ResultStore) -> pd.DataFrame:
    """One row per COMPLETE trial: its cell's summary (cells.summarize), trial and study, and
    `_order`: its place among the COMPLETE trials of its study."""
    frame = store.frame()
    parts = []
    for order, (dataset, model, role) in enumerate(sweep.studies()):
        name = study_name(sweep, dataset, model, role)
        study = optuna.load_study(study_name=name, storage=storage)
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for place, trial in enumerate(sorted(complete, key=lambda t: t.number)):
            cell = cell_of_trial(trial, sweep.baseline)
            if cell is None:
                continue
            keys = {spec.key() for spec in sweep.specs(dataset, model, cell)}
            cells = summarize(frame[frame["key"].isin(keys)])
            cells["settings"] = [_settings(cell, text) for text in cells["settings"]]
            parts.append(cells.assign(trial=trial.number, study=name, role=role,
                                      _target=order // len(sweep.search.roles()),
                                      _order=place))
    if not parts:
        return pd.DataFrame(columns=[*BEST_COLUMNS, "_order"])
    table = pd.concat(parts, ignore_index=True)
    table["_rank"] = table["optimizer"].map(_kind_rank)
    table = table.sort_values(["_target", "_rank", "trial"], kind="stable")
    return table.reset_index(drop=True)


def best_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The best cell per dataset x model x optimizer kind (cells.best_per_group), with the
    trials it was chosen from and, for equal budgets, the best of the first k trials."""
    if cells.empty:
        return pd.DataFrame(columns=BEST_COLUMNS)
    cells = cells.copy()
    cells["trials"] = cells.groupby(list(GROUP_BY), sort=False)["trial"].transform("size")
    best = best_per_group(cells, GROUP_BY)
    per_study = cells.groupby("study")["_order"].max() + 1  # COMPLETE trials per study
    k_of: dict[tuple[str, str], int] = {}
    for (dataset, model), group in cells.groupby(["dataset", "model"], sort=False):
        if set(group["role"]) == {"main", "baseline"}:
            k_of[(dataset, model)] = int(min(per_study[s] for s in group["study"].unique()))
    extra: dict[str, list[object]] = {c: [] for c in EQUAL_COLUMNS}
    for _, row in best.iterrows():
        k = k_of.get((row["dataset"], row["model"]))
        first = None
        if k is not None:
            mine = cells[(cells["study"] == row["study"]) & (cells["_order"] < k)
                         & (cells["optimizer"] == row["optimizer"])]
            first = select_best(mine)
        extra["k"].append("" if k is None else k)
        extra["val_at_k"].append(math.nan if first is None else first["val_mean"])
        extra["test_at_k"].append(math.nan if first is None else first["test_mean"])
        extra["label_at_k"].append("" if first is None else first["label"])
        extra["settings_at_k"].append("" if first is None else first["settings"])
    best = best.assign(**extra)
    return best[BEST_COLUMNS].reset_index(drop=True)


def write_best(path: Path, best: pd.DataFrame) -> None:
    """best.csv, atomically (metrics x100 like the report; empty = not applicable)."""
    with atomic_path(path) as tmp:
        best.to_csv(tmp, index=False, columns=BEST_COLUMNS)


def format_best(best: pd.DataFrame) -> str:
    """The summary table: val and test mean ± std (x100) of the best cell per optimizer, the
    settings it won with and, for equal budgets, the best validation after k trials."""
    from hamgraph.models import MODEL_DISPLAY

    if best.empty:
        return "no completed trials yet\n"
    table = pd.DataFrame({
        "dataset": best["dataset"],
        "model": [MODEL_DISPLAY.get(m, m) for m in best["model"]],
        "optimizer": best["label"],
        "settings": best["settings"].fillna(""),
        "val": [format_mean_std(m, s) for m, s in zip(best.val_mean, best.val_std, strict=True)],
        "test": [format_mean_std(m, s)
                 for m, s in zip(best.test_mean, best.test_std, strict=True)],
        "n": best["n"].astype(int),
        "trial": best["trial"].astype(int),
        "trials": best["trials"].astype(int),
    })
    if not (table["settings"] != "").any():
        table = table.drop(columns="settings")
    equal = best["k"].astype(str) != ""
    if equal.any():
        table["k"] = best["k"].astype(str)
        table["val@k"] = [format_mean_std(float(v), math.nan) if e else ""
                          for v, e in zip(best["val_at_k"], equal, strict=True)]
    title = "best cell per dataset x model and optimizer (x100; mean ± sample std over runs)"
    if equal.any():
        title += "; val@k: best of the first k trials of each study (equal budgets)"
    return title + "\n" + table.to_string(index=False) + "\n"
