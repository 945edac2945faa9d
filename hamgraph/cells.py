"""Cells: the unit every table and every "best" is about.

A cell = dataset x model x optimizer identity (base optimizer and its options, HAM settings
or none) x params (runs.csv's `params`: lr, dropout, hidden, epochs, ..., so two sweep
trials with different lr are two cells) x plug-in options (runs.csv's `plugin_options`: a
sweep's `model.hidden` keeps the readable model name). A cell's runs differ only in `run` /
`seed`. The end-of-run summary, the sweep's trials and `best.csv`, and the report's tables and
`best_params` all group runs by `CELL_COLUMNS` of `runs.csv` and pick the best cell with
`select_best`:

    the highest mean validation metric (the lowest for a user's metric whose
    `higher_is_better` is false) among the cells with at least one ok run and no failed
    run, and among those only the cells with the most ok runs (a pruned trial's partial cell
    never wins); ties (equal means) go to the smaller |alpha|, then the smaller beta, then the
    cell label, then the canonical settings key (runs.csv's `params` JSON, then its
    `plugin_options` JSON, both with sorted keys) in string order, so the choice never depends
    on the order in which runs finished nor on how a caller spells the `settings` display text
    (a sweep lists its searched settings first, a report sorts them by name).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import pandas as pd

from hamgraph.errors import UserInputError
from hamgraph.specs import PROTOCOL_BASE, HamSettings, OptimizerSpec, normalize_options

# The runs.csv columns that identify a cell, in table order.
# `plugin_options`: the options of a user's dataset / model / metric ("" for built-ins), so
# the cells of a sweep over `model.hidden` (one readable model name) stay apart.
CELL_COLUMNS: tuple[str, ...] = (
    "dataset", "model", "optimizer", "base", "base_options",
    "alpha", "beta", "clamp", "mask_beta", "sign_source", "params", "plugin_options",
)
# The cell columns a search varies (HAM's step, the params, a plug-in's options): a method is
# a cell without them.
SEARCHED_COLUMNS: tuple[str, ...] = ("alpha", "beta", "params", "plugin_options")
# Shown after "label" in every summary: the params that differ from the protocol's preset.
SETTINGS = "settings"
# runs.csv columns that are not settings: the run's place in the protocol, its outcome and
# provenance. Every other column (the cell columns, and any a newer hamgraph or a plug-in adds,
# e.g. a searched lr) tells configurations apart: see `setting_columns`.
NON_SETTING_COLUMNS: frozenset[str] = frozenset({
    "key", "run", "seed", "metric", "val", "test", "best_epoch", "epochs", "seconds", "status",
    "reason", "hamgraph_version", "device", "history",
    "plugin_sources",  # provenance of a plug-in's code: a change marks runs stale, same cell
})
# The last tie-break of `select_best`: runs.csv's JSON texts (sorted keys), one spelling each.
TIE_COLUMNS: tuple[str, ...] = ("params", "plugin_options")
# The summary columns after the cell columns and the label (metrics x100, sample std).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "metric", "n", "failed", "val_mean", "val_std", "test_mean", "test_std",
    "higher_is_better",  # False only for a user's lower-is-better metric
)


def cell_key(row: pd.Series | dict) -> tuple:
    """The identity of a row's cell (runs.csv or summary row): its CELL_COLUMNS, with missing
    values (NaN, "") as None. Every grouping by cell (summaries, reports, verdicts) uses it."""
    out = []
    for column in CELL_COLUMNS:
        value = row.get(column)
        if isinstance(value, str):
            out.append(value or None)
        else:
            out.append(None if value is None or pd.isna(value) else value)
    return tuple(out)


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


def _params_kind(dataset: str, graph_plugins: frozenset[str] = frozenset()) -> str:
    from hamgraph.data.registry import resolve_dataset

    if dataset in graph_plugins:
        return "GraphParams"
    try:
        task = resolve_dataset(dataset).task
    except KeyError:
        return "NodeParams"
    return "GraphParams" if task == "graph" else "NodeParams"


def cell_settings(row: pd.Series | dict) -> dict[str, object]:
    """The params of a cell that differ from the protocol's preset for its dataset x model
    (all its params when there is no preset to compare with); {} when runs.csv had none."""
    text = row.get("params", "")
    if not isinstance(text, str) or not text:
        return {}
    params = json.loads(text)
    plugins = row.get("plugin_options", "")
    plugins = json.loads(plugins) if isinstance(plugins, str) and plugins else {}
    try:
        from hamgraph.data.registry import resolve_dataset
        from hamgraph.presets import PLUGIN_GRAPH_PRESET, PLUGIN_PRESET, default_params

        if "dataset" in plugins:  # a user's dataset: the one plug-in preset of its task
            graph = plugins["dataset"].get("task") == "graph"
            preset = dataclasses.asdict(PLUGIN_GRAPH_PRESET if graph else PLUGIN_PRESET)
        else:  # a user's model on a built-in dataset: gcn's row (as `grid.specs_for`)
            preset = dataclasses.asdict(default_params(resolve_dataset(row["dataset"]),
                                                       row["model"], "model" in plugins))
    except (KeyError, ValueError, LookupError, UserInputError):
        preset = {}
    return {k: v for k, v in sorted(params.items()) if k not in preset or preset[k] != v}


def _plugin_option_values(text: object) -> dict[str, object]:
    """runs.csv's `plugin_options` -> {"model.hidden": 32, "dataset.nodes": 60, ...}."""
    if not isinstance(text, str) or not text:
        return {}
    out: dict[str, object] = {}
    for kind, entry in json.loads(text).items():
        for option, value in (entry.get("options") or {}).items():
            out[f"{kind}.{option}"] = value
    return out


def varying_plugin_options(frame: pd.DataFrame) -> dict[str, dict[str, object]]:
    """For each distinct `plugin_options` text of `frame`: the plug-in options (as
    `model.<option>`) whose values differ among the cells of the same dataset x model, e.g.
    a sweep over `model.hidden`; {} where a dataset x model has one option set (a grid gives
    each option set its own readable name)."""
    out: dict[str, dict[str, object]] = {}
    if "plugin_options" not in frame.columns:
        return out
    for _, group in frame.groupby(["dataset", "model"], sort=False, dropna=False):
        texts = [t for t in dict.fromkeys(group["plugin_options"]) if isinstance(t, str)]
        if len(texts) < 2:
            continue
        values = {t: _plugin_option_values(t) for t in texts}
        names = {n for v in values.values() for n in v}
        varying = {n for n in names if len({json.dumps(v.get(n), sort_keys=True)
                                            for v in values.values()}) > 1}
        for text, given in values.items():
            out[text] = {n: given[n] for n in sorted(varying) if n in given}
    return out


def searched_settings(cells: pd.DataFrame, shown: pd.Series | dict) -> dict[str, object]:
    """The settings a search chose among `cells` (rows of `summarize`, e.g. one method's):
    the params and plug-in options (`model.hidden`) whose values differ among them, at the
    values of the `shown` cell; {} for one cell or cells that differ only in (alpha, beta)."""
    if len(cells) < 2:
        return {}
    values = [_setting_values(row) for _, row in cells.iterrows()]
    names = sorted({name for given in values for name in given})
    varying = [n for n in names
               if len({json.dumps(v.get(n), sort_keys=True, default=str) for v in values}) > 1]
    chosen = _setting_values(shown)
    return {name: chosen[name] for name in varying if name in chosen}


def _setting_values(row: pd.Series | dict) -> dict[str, object]:
    """A cell's params (all of them, runs.csv's `params`) and plug-in options."""
    text = row.get("params", "")
    params = json.loads(text) if isinstance(text, str) and text else {}
    return {**params, **_plugin_option_values(row.get("plugin_options", ""))}


def settings_text(settings: dict[str, object]) -> str:
    """"dropout=0.5, lr=0.001" (sorted by name), "" for none."""
    return ", ".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in settings.items()
    )


def graph_plugin_datasets(runs: pd.DataFrame) -> frozenset[str]:
    """The user datasets of graph-classification runs (runs.csv's plugin_options says so)."""
    if "plugin_options" not in runs.columns:
        return frozenset()
    graph = runs["plugin_options"].astype(str).str.contains('"task": "graph"', regex=False)
    return frozenset(str(d) for d in runs.loc[graph, "dataset"])


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """runs.csv rows -> one row per cell, in order of first appearance.

    Columns: CELL_COLUMNS, label, settings (`cell_settings` as text), SUMMARY_COLUMNS. n
    counts ok runs, failed the others; val/test means and sample stds are over the ok runs,
    x100 (std NaN for n = 1).
    """
    columns = [*CELL_COLUMNS, "label", SETTINGS, *SUMMARY_COLUMNS]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    frame = runs.copy()
    if "params" not in frame.columns:  # a table from before runs.csv had the params
        frame["params"] = ""
    if "higher_is_better" not in frame.columns:  # frames of older runs.csv files
        frame["higher_is_better"] = "true"
    if "plugin_options" not in frame.columns:  # frames of runs.csv files before plug-ins
        frame["plugin_options"] = ""
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
        higher_is_better=("higher_is_better", "first"),
    ).reset_index()
    table["higher_is_better"] = table["higher_is_better"].astype(str).str.lower() != "false"
    graph_plugins = graph_plugin_datasets(frame)
    table["label"] = [
        cell_label(row, _params_kind(row["dataset"], graph_plugins)) for _, row in table.iterrows()
    ]
    varying = varying_plugin_options(frame)
    table[SETTINGS] = [
        settings_text(dict(sorted({**cell_settings(row),
                                   **varying.get(row["plugin_options"], {})}.items())))
        for _, row in table.iterrows()
    ]
    return table[columns]


def select_best(cells: pd.DataFrame) -> pd.Series | None:
    """The best of some cells (rows of `summarize`) by the module's rule; None if none qualifies.

    Only the cells with the most ok runs compete: a mean over fewer runs (a pruned sweep
    trial, an unfinished cell) is never chosen over one over all of them.
    """
    eligible = cells[(cells["n"] > 0) & (cells["failed"] == 0) & cells["val_mean"].notna()]
    if eligible.empty:
        return None
    eligible = eligible[eligible["n"] == eligible["n"].max()]
    # the canonical settings key; never the `settings` display text, which callers spell
    # differently (best.csv: searched settings first; the report: sorted by name)
    ties = [c for c in TIE_COLUMNS if c in eligible.columns]
    sign = 1.0
    if "higher_is_better" in eligible.columns and not bool(eligible["higher_is_better"].iloc[0]):
        sign = -1.0  # a lower-is-better metric: the lowest mean is the best
    order = eligible.assign(
        _neg_val=-sign * eligible["val_mean"],
        _abs_alpha=eligible["alpha"].abs().fillna(0.0),
        _beta=eligible["beta"].fillna(0.0),
        **{f"_{c}": eligible[c].fillna("").astype(str) for c in ties},
    ).sort_values(["_neg_val", "_abs_alpha", "_beta", "label", *(f"_{c}" for c in ties)],
                  kind="stable")
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
