"""Cells: the unit every table and every "best" is about.

A cell = dataset x model x optimizer identity (base optimizer and its options, HAM settings
or none). A cell's runs differ only in `run` / `seed`. The end-of-run summary, the sweep's
trials and `best.csv`, and the report's tables and `best_params` all group runs by
`CELL_COLUMNS` of `runs.csv` and pick the best cell with `select_best`:

    the highest mean validation metric among the cells with at least one ok run and no failed
    run; ties (equal means) go to the smaller |alpha|, then the smaller beta, then the cell
    label in string order, so the choice never depends on the order in which runs finished.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd

from hamgraph.specs import PROTOCOL_BASE, HamSettings, OptimizerSpec, normalize_options

# The runs.csv columns that identify a cell, in table order.
CELL_COLUMNS: tuple[str, ...] = (
    "dataset", "model", "optimizer", "base", "base_options",
    "alpha", "beta", "clamp", "mask_beta", "sign_source",
)
# runs.csv columns that are not settings: the run's place in the protocol, its outcome and
# provenance. Every other column (the cell columns, and any a newer hamgraph or a plug-in adds,
# e.g. a searched lr) tells configurations apart: see `setting_columns`.
NON_SETTING_COLUMNS: frozenset[str] = frozenset({
    "key", "run", "seed", "metric", "val", "test", "best_epoch", "epochs", "seconds", "status",
    "reason", "hamgraph_version", "device", "history",
})
# The summary columns after the cell columns and the label (metrics x100, sample std).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "metric", "n", "failed", "val_mean", "val_std", "test_mean", "test_std",
)


def setting_columns(columns: Sequence[str]) -> list[str]:
    """The columns of a runs table that identify a configuration, in table order:
    `CELL_COLUMNS` first, then every other column that is not in `NON_SETTING_COLUMNS` and
    does not start with "_" (columns added by readers, e.g. the report's `_root`). Rows that
    agree on all of them are runs of one configuration and differ only in run / seed.

    Known limit: an unknown column is taken for a setting; an outcome column added by a newer
    hamgraph must be listed in NON_SETTING_COLUMNS, or it would split configurations per run.
    """
    present = set(columns)
    extra = [
        c for c in columns
        if c not in CELL_COLUMNS and c not in NON_SETTING_COLUMNS and not str(c).startswith("_")
    ]  # fmt: skip
    return [c for c in CELL_COLUMNS if c in present] + extra


def optimizer_of_row(row: pd.Series | dict) -> OptimizerSpec:
    """The OptimizerSpec behind a runs.csv / summary row (the inverse of `store.run_row`)."""
    options = json.loads(row["base_options"]) if row["base_options"] else {}
    ham = None
    alpha = row["alpha"]
    if alpha != "" and alpha is not None and not (isinstance(alpha, float) and math.isnan(alpha)):
        ham = HamSettings(
            alpha=float(alpha),
            beta=float(row["beta"]),
            clamp=float(row["clamp"]),
            mask_beta=str(row["mask_beta"]).lower() == "true",
            sign_source=row["sign_source"],
        )
    return OptimizerSpec(base=row["base"], base_options=normalize_options(options), ham=ham)


def cell_label(row: pd.Series | dict, params_kind: str = "NodeParams") -> str:
    """The optimizer part of a cell as shown in tables: "adam", "ham(200, 0.1)", ..."""
    return optimizer_of_row(row).label(PROTOCOL_BASE[params_kind])


def _params_kind(dataset: str) -> str:
    from hamgraph.data.registry import resolve_dataset

    try:
        task = resolve_dataset(dataset).task
    except KeyError:
        return "NodeParams"
    return "GraphParams" if task == "graph" else "NodeParams"


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.csv rows -> one row per cell, in order of first appearance.

    Columns: CELL_COLUMNS, label, SUMMARY_COLUMNS. n counts ok runs, failed the others;
    val/test means and sample stds are over the ok runs, x100 (std NaN for n = 1).
    """
    columns = [*CELL_COLUMNS, "label", *SUMMARY_COLUMNS]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    frame = runs.copy()
    ok = frame["status"] == "ok"
    frame["n"] = ok.astype(int)
    frame["failed"] = (~ok).astype(int)
    for metric in ("val", "test"):
        frame[metric] = (100 * frame[metric].astype(float)).where(ok)
    grouped = frame.groupby(list(CELL_COLUMNS), sort=False, dropna=False)
    table = grouped.agg(
        metric=("metric", "first"),
        n=("n", "sum"),
        failed=("failed", "sum"),
        val_mean=("val", "mean"),
        val_std=("val", "std"),
        test_mean=("test", "mean"),
        test_std=("test", "std"),
    ).reset_index()
    table["label"] = [
        cell_label(row, _params_kind(row["dataset"])) for _, row in table.iterrows()
    ]
    return table[columns]


def select_best(cells: pd.DataFrame) -> pd.Series | None:
    """The best of some cells (rows of `summarize`) by the module's rule; None if none qualifies."""
    eligible = cells[(cells["n"] > 0) & (cells["failed"] == 0) & cells["val_mean"].notna()]
    if eligible.empty:
        return None
    order = eligible.assign(
        _neg_val=-eligible["val_mean"],
        _abs_alpha=eligible["alpha"].abs().fillna(0.0),
        _beta=eligible["beta"].fillna(0.0),
    ).sort_values(["_neg_val", "_abs_alpha", "_beta", "label"], kind="stable")
    return eligible.loc[order.index[0]]


def best_per_group(cells: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """`select_best` within each group of `by` (e.g. dataset, model, optimizer), in order."""
    rows = []
    for _, group in cells.groupby(list(by), sort=False, dropna=False):
        best = select_best(group)
        if best is not None:
            rows.append(best)
    return pd.DataFrame(rows, columns=cells.columns).reset_index(drop=True)


def format_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """"84.50 ± 0.98", "84.50" (no std), "–" (no value)."""
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def format_summary(table: pd.DataFrame) -> str:
    """The summary as aligned text: one line per cell, mean ± std (x100) of val and test."""
    if table.empty:
        return "no finished runs\n"
    rows = pd.DataFrame(
        {
            "dataset": table["dataset"],
            "model": table["model"],
            "optimizer": table["label"],
            "metric": table["metric"],
            "val": [format_mean_std(m, s) for m, s in zip(table.val_mean, table.val_std,
                                                          strict=True)],
            "test": [format_mean_std(m, s) for m, s in zip(table.test_mean, table.test_std,
                                                           strict=True)],
            "n": table["n"].astype(int),
            "failed": table["failed"].astype(int),
        }
    )
    return rows.to_string(index=False) + "\n"
