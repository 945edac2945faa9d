"""The sweep's summary: best.csv, the best cell per dataset x model and optimizer kind.

The cells are those of COMPLETE trials, summarized from their runs in the result store by
`hamgraph.cells.summarize` and ranked by `hamgraph.cells.select_best` (highest mean validation
metric; ties -> smaller |alpha|, smaller beta, label): the same cell key and the same rule as
`hamgraph report`, so both name the same best cell. Pruned trials (a part of the runs) and
failed ones do not take part.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import TrialState

from hamgraph.atomic import atomic_path
from hamgraph.cells import CELL_COLUMNS, SUMMARY_COLUMNS, best_per_group, format_mean_std, summarize
from hamgraph.store import ResultStore
from hamgraph.sweep.schema import Sweep, study_name
from hamgraph.sweep.spaces import cell_of_trial

BEST_CSV = "best.csv"
# cells.summarize's columns (metrics x100, sample std) + the trial and the study that ran it
BEST_COLUMNS = [*CELL_COLUMNS, "label", *SUMMARY_COLUMNS, "trial", "study"]
GROUP_BY = ("dataset", "model", "optimizer")  # one best cell per optimizer kind


def _kind_rank(kind: str) -> int:
    return {"ham": 1, "nham": 2}.get(kind, 0)  # the baseline first, then HAM, then nHAM


def sweep_cells(sweep: Sweep, storage: optuna.storages.BaseStorage,
                store: ResultStore) -> pd.DataFrame:
    """One row per COMPLETE trial: its cell's summary (cells.summarize), trial and study."""
    frame = store.frame()
    parts = []
    for order, (dataset, model) in enumerate(sweep.targets()):
        name = study_name(sweep, dataset, model)
        study = optuna.load_study(study_name=name, storage=storage)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            cell = cell_of_trial(trial, sweep.baseline)
            if cell is None:
                continue
            keys = {spec.key() for spec in sweep.specs(dataset, model, cell.ham)}
            cells = summarize(frame[frame["key"].isin(keys)])
            parts.append(cells.assign(trial=trial.number, study=name, _target=order))
    if not parts:
        return pd.DataFrame(columns=BEST_COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    table["_rank"] = table["optimizer"].map(_kind_rank)
    table = table.sort_values(["_target", "_rank", "trial"], kind="stable")
    return table[BEST_COLUMNS].reset_index(drop=True)


def best_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The best cell per dataset x model x optimizer kind (cells.best_per_group)."""
    return best_per_group(cells, GROUP_BY)[BEST_COLUMNS]


def write_best(path: Path, best: pd.DataFrame) -> None:
    """best.csv, atomically (metrics x100 like the report; empty = not applicable)."""
    with atomic_path(path) as tmp:
        best.to_csv(tmp, index=False, columns=BEST_COLUMNS)


def format_best(best: pd.DataFrame) -> str:
    """The summary table: val and test mean ± std (x100) of the best cell per optimizer."""
    from hamgraph.models import MODEL_DISPLAY

    if best.empty:
        return "no completed trials yet\n"
    table = pd.DataFrame({
        "dataset": best["dataset"],
        "model": [MODEL_DISPLAY.get(m, m) for m in best["model"]],
        "optimizer": best["label"],
        "val": [format_mean_std(m, s) for m, s in zip(best.val_mean, best.val_std, strict=True)],
        "test": [format_mean_std(m, s)
                 for m, s in zip(best.test_mean, best.test_std, strict=True)],
        "n": best["n"].astype(int),
        "trial": best["trial"].astype(int),
    })
    title = "best cell per dataset x model and optimizer (x100; mean ± sample std over runs)"
    return title + "\n" + table.to_string(index=False) + "\n"
