"""The report's tables as typed rows: runs (the store's frame) -> `ReportTables`. Pure: no I/O.

The unit is the cell of `hamgraph.cells` (dataset x model x optimizer identity, alpha and beta
included). A *method* is a cell without its (alpha, beta): the model with one optimizer setting
("GCN", "GCN+HAM", "GCN+HAM (sign_source=previous)", "GCN (sgd(momentum=0.9))"). Every method
is one row of the main table; its shown cell is the one `cells.best_per_group` picks among the
method's (alpha, beta) cells (THE best rule: highest mean validation among cells with an ok run
and no failed run; ties to smaller |alpha|, smaller beta, label), the same cell a sweep's
best.csv names. A method with a single cell whose runs partly failed still shows that cell
(there is nothing to choose), marked partial; a method whose cells all had failed runs
shows `–`. When a method's cells differ in more than (alpha, beta) (a sweep over lr, dropout,
`model.hidden`), `MainCell.searched` names the shown cell's values of the settings they differ
in ("lr=0.002"); the renderers list them under the main tables and in best_params.

What a main-table value is (`metric`): "test" = the test metric at the best-validation epoch,
"val" = the best validation metric (as the HAM paper's graph tables); mean ± sample std over
the ok runs, x100. Marks (per value):

- bold: the best value of an architecture block (dataset x model) at the shown precision when
  the block has two values or more; tied best values are bold and underlined.
- †: a HAM / nHAM value differs from the baseline of the same model and base optimizer with
  p < SIGNIFICANCE_LEVEL, two-sided paired t-test over the runs matched by (run, seed);
  no test with fewer than MIN_PAIRS pairs (a note says so).
- *: partial: fewer ok runs than the dataset's fullest cell, or failed runs (a note says which).

With a published table (`hamgraph.compare`), every value gets the published value of the same
dataset x model x optimizer beside it, the difference and whether it is within noise; only
methods on the protocol's base optimizer with default HAM settings have a published
counterpart, every other value shows `–` there. A dataset variant (cora-public) is compared with
its base's published row and the notes name both splits.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pandas as pd

from hamgraph.cells import (
    CELL_COLUMNS,
    SEARCHED_COLUMNS,
    best_per_group,
    cell_key,
    graph_plugin_datasets,
    optimizer_of_row,
    searched_settings,
    settings_text,
    summarize,
)
from hamgraph.data.registry import DATASETS, describe_split, resolve_dataset
from hamgraph.errors import UnknownNameError
from hamgraph.model_names import MODEL_DISPLAY
from hamgraph.specs import PROTOCOL_BASE, HamSettings, OptimizerSpec

ShownMetric = Literal["test", "val"]
METRICS: tuple[ShownMetric, ...] = ("test", "val")
SIGNIFICANCE_LEVEL = 0.05  # † when p < this
MIN_PAIRS = 3  # fewest (run, seed)-matched pairs for the paired t-test (n=2 has df=1: useless)
DECIMALS = 2  # shown precision of the x100 metric; bold and ties are judged at this precision
MISSING = "–"
# The cell columns without (alpha, beta) and the params (a sweep searches them): one
# main-table row per distinct value of these.
METHOD_COLUMNS: tuple[str, ...] = tuple(c for c in CELL_COLUMNS if c not in SEARCHED_COLUMNS)

FAMILY_ORDER = ("homophilic", "heterophilic", "graph", "other")
FAMILY_TITLE = {
    "homophilic": "Homophilic node classification",
    "heterophilic": "Heterophilic node classification",
    "graph": "Graph classification",
    "other": "Other datasets",
}
METRIC_SHORT = {"accuracy": "acc", "rocauc": "ROC-AUC", "ap": "AP", "f1": "F1"}
_KIND_ORDER = {"baseline": 0, "ham": 1, "nham": 2}
_HAM_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(HamSettings) if f.name not in ("alpha", "beta")
}


# ---------------------------------------------------------------------------------------------
# typed rows


@dataclass(frozen=True)
class RunRef:
    """One ok run behind a shown value: where its record is, and what it was run with."""

    root: str  # the result dir
    key: str
    run: int
    seed: int
    hamgraph_version: str
    device: str


@dataclass(frozen=True)
class DatasetColumn:
    """A dataset column of a main table; every fact from the registry (nothing cached)."""

    name: str
    display: str
    family: str
    metric: str  # of the runs (the registry's for known names)
    split: str  # the registry's split protocol, "" for names the registry does not know
    split_text: str  # the split in words
    protocol_runs: int | None
    base: str  # the dataset whose published row is compared (itself unless a variant)

    @property
    def header(self) -> str:
        return f"{self.display} ({METRIC_SHORT.get(self.metric, self.metric)})"


@dataclass(frozen=True)
class Comparison:
    """A published value beside ours (`hamgraph.compare.compare_cells`); NaN / None = none."""

    mean: float
    std: float
    runs: int | None
    delta: float  # ours - published
    within_noise: bool | None
    welch_p: float
    alpha: float  # the published best (NaN when not given)
    beta: float
    same_best: bool | None
    split: str
    source: str
    table: str
    best_table: str

    @property
    def has_value(self) -> bool:
        return math.isfinite(self.mean)


@dataclass(frozen=True)
class MainCell:
    """One value of a main table: a method's shown cell on one dataset."""

    dataset: str
    model: str
    model_display: str
    optimizer: str  # runs.csv's optimizer: ham | nham | the base's short name
    method: str  # the optimizer setting without (alpha, beta): "ham", "ham (sign_source=...)"
    row: str  # the row label: "GCN+HAM"
    family: str
    cell_label: str  # the shown cell as `cells.summarize` labels it, "" when none
    settings: str  # its params that differ from the preset ("lr=0.001, dropout=0.5"), or ""
    searched: str  # the settings its method's cells differ in, at its values ("lr=0.002"), or ""
    alpha: float  # NaN for baselines and when no cell is shown
    beta: float
    selected: bool  # chosen by `cells.best_per_group` (False: the only cell, or none)
    mean: float  # the shown metric (x100)
    std: float
    test_mean: float
    test_std: float
    val_mean: float
    val_std: float
    values: tuple[float, ...]  # the shown metric per ok run (x100), in (run, seed) order
    n: int
    expected: int
    failed: int
    p_value: float
    pairs: int
    significant: bool
    untested: bool  # a HAM value with a baseline but too few pairs for the test
    partial: bool
    best: bool
    tie: bool
    cells_searched: int  # (alpha, beta) cells the rule could choose from
    cells_skipped: int  # cells with failed runs or no ok run
    note: str
    runs: tuple[RunRef, ...]
    standard: bool  # protocol base, no options, default HAM settings: may have a published value
    compare: Comparison | None = None

    @property
    def is_ham(self) -> bool:
        return self.optimizer in ("ham", "nham")


@dataclass(frozen=True)
class FamilyTable:
    """One main table: the datasets of one family (registry order) x the methods."""

    family: str
    title: str
    columns: tuple[DatasetColumn, ...]
    rows: tuple[str, ...]  # row labels in order
    block_starts: frozenset[str]  # rows that start a new model (a rule above them)
    cells: tuple[MainCell, ...]
    notes: tuple[str, ...]  # per value: partial results, protocol runs, untested
    provenance: tuple[str, ...]  # hamgraph versions and devices behind the values
    splits: tuple[str, ...]  # which split each dataset used (and the published one's)

    def cell(self, row: str, dataset: str) -> MainCell | None:
        for c in self.cells:
            if c.row == row and c.dataset == dataset:
                return c
        return None


@dataclass(frozen=True)
class ReportTables:
    """Everything the renderers and the plots need."""

    metric: ShownMetric
    families: tuple[FamilyTable, ...]
    grid: pd.DataFrame  # every cell (`cells.summarize` + "row"), for the heatmaps
    compare_source: str | None  # the published source compared with, None without --compare
    compare_citation: str  # the paper(s) of the published values ("" without)

    @property
    def cells(self) -> tuple[MainCell, ...]:
        return tuple(c for t in self.families for c in t.cells)

    @property
    def ham_cells(self) -> tuple[MainCell, ...]:
        """The HAM / nHAM values: the rows of best_params."""
        return tuple(c for c in self.cells if c.is_ham)


# ---------------------------------------------------------------------------------------------
# names


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _norm(value: object) -> object:
    return None if _missing(value) else value


def _protocol_base(dataset: str, graph_plugins: frozenset[str] = frozenset()) -> str:
    if dataset in graph_plugins:  # a user's graph dataset (cells.graph_plugin_datasets)
        return PROTOCOL_BASE["GraphParams"]
    try:
        task = resolve_dataset(dataset).task
    except UnknownNameError:
        task = "node"
    return PROTOCOL_BASE["GraphParams" if task == "graph" else "NodeParams"]


def _base_text(spec: OptimizerSpec) -> str:
    return OptimizerSpec(spec.base, spec.base_options, None).label()


def method_text(spec: OptimizerSpec, protocol_base: str) -> str:
    """The optimizer setting without (alpha, beta): "adam", "sgd(momentum=0.9)", "ham",
    "ham (sign_source=previous)", "nham (mask_beta=False) on sgd"."""
    if spec.ham is None:
        return _base_text(spec)
    extra = [
        f"{name}={getattr(spec.ham, name)}"
        for name, default in _HAM_DEFAULTS.items()
        if getattr(spec.ham, name) != default
    ]
    text = spec.ham.kind + (f" ({', '.join(extra)})" if extra else "")
    if spec.base != protocol_base or spec.base_options:
        text += f" on {_base_text(spec)}"
    return text


def row_label(model_display: str, spec: OptimizerSpec, protocol_base: str) -> str:
    """ "GCN", "GCN+HAM", "GCN+nHAM", "GCN+ w/ HAM", "GCN+HAM (sign_source=previous)",
    "GCN (sgd(momentum=0.9))", "GCN+HAM on sgd"."""
    if spec.ham is None:
        if spec.base == protocol_base and not spec.base_options:
            return model_display
        return f"{model_display} ({_base_text(spec)})"
    name = {"ham": "HAM", "nham": "nHAM"}[spec.ham.kind]
    joined = f" w/ {name}" if model_display.endswith("+") else f"+{name}"
    text = model_display + joined
    rest = method_text(spec, protocol_base)[len(spec.ham.kind):]
    return text + rest


def is_standard(spec: OptimizerSpec, protocol_base: str) -> bool:
    """The protocol's base optimizer with no options and default HAM settings (a method a
    published table can have)."""
    if spec.base != protocol_base or spec.base_options:
        return False
    return spec.ham is None or all(
        getattr(spec.ham, name) == default for name, default in _HAM_DEFAULTS.items()
    )


def dataset_column(name: str, metric: str, plugin: dict[str, str] | None = None) -> DatasetColumn:
    """The column of a dataset: registry facts, or (a user's dataset: `plugin`, from runs.csv's
    plug-in columns; the plug-in is never imported) its display name, target and split."""
    if plugin is not None:
        return DatasetColumn(name, plugin["display"] or name, "other", metric,
                             f"user dataset {plugin['target']}", plugin["split"], None, name)
    try:
        info = resolve_dataset(name)
    except UnknownNameError:
        return DatasetColumn(name, name, "other", metric, "", "", None, name)
    return DatasetColumn(
        name=name,
        display=info.display,
        family=info.family,
        metric=metric or info.metric,
        split=info.split,
        split_text=describe_split(info),
        protocol_runs=info.runs,
        base=info.base_name,
    )


def _dataset_order(name: str) -> tuple[int, str]:
    order = {n: i for i, n in enumerate(DATASETS)}
    return (order.get(name, len(order)), name)


def _model_order(model: str) -> tuple[int, str]:
    order = {m: i for i, m in enumerate(MODEL_DISPLAY)}
    return (order.get(model, len(order)), model)


def fmt_param(value: float) -> str:
    return "" if _missing(value) else f"{value:g}"


# ---------------------------------------------------------------------------------------------
# numbers


def paired_test(
    a: dict[tuple[int, int], float], b: dict[tuple[int, int], float]
) -> tuple[float, int]:
    """Two-sided paired t-test of two {(run, seed): value} maps over their common runs.

    Returns (p, pairs); p is NaN with fewer than MIN_PAIRS pairs or no difference at all.
    """
    from scipy.stats import ttest_rel

    common = sorted(set(a) & set(b))
    if len(common) < MIN_PAIRS:
        return math.nan, len(common)
    x, y = [a[k] for k in common], [b[k] for k in common]
    if x == y:
        return math.nan, len(common)
    with warnings.catch_warnings():  # constant differences: scipy warns, p is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(ttest_rel(x, y).pvalue), len(common)


def _cell_key(row: pd.Series | dict) -> tuple:
    return cell_key(row)


def _method_key(row: pd.Series | dict) -> tuple:
    return tuple(_norm(row[c]) for c in METHOD_COLUMNS)


@dataclass
class _Method:
    """A method on one dataset while the tables are built (mutable scratch)."""

    key: tuple
    dataset: str
    model: str
    spec: OptimizerSpec  # of its first cell (alpha, beta of that cell; ignore them)
    cells: pd.DataFrame
    chosen: pd.Series | None
    selected: bool


def _stat(cell: pd.Series | None, name: str) -> float:
    if cell is None or not cell["n"]:
        return math.nan
    return float(cell[name])


def _reasons(runs: pd.DataFrame) -> str:
    reasons = [r for r in dict.fromkeys(runs.loc[runs["status"] != "ok", "reason"]) if r]
    text = "; ".join(reasons)
    return text if len(text) <= 120 else text[:117] + "..."


def build_tables(
    runs: pd.DataFrame,
    metric: ShownMetric = "test",
    published: pd.DataFrame | None = None,
) -> ReportTables:
    """The report's tables from runs (the store's frame, one row per run, plus a `_root`
    column naming its result dir; duplicates already removed).

    `published`: a table of `hamgraph.compare.load_published` to compare with, or None.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r}: valid: {', '.join(METRICS)}")
    cells = summarize(runs)
    by_cell: dict[tuple, pd.DataFrame] = {}
    for _, group in runs.groupby(list(CELL_COLUMNS), sort=False, dropna=False):
        by_cell[_cell_key(group.iloc[0])] = group

    # one _Method per (dataset, method): its cells and the one the rule picks
    best = best_per_group(cells, METHOD_COLUMNS)
    chosen = {_method_key(r): r for _, r in best.iterrows()}
    methods: list[_Method] = []
    for _, group in cells.groupby(list(METHOD_COLUMNS), sort=False, dropna=False):
        first = group.iloc[0]
        key = _method_key(first)
        pick = chosen.get(key)
        selected = pick is not None
        if pick is None and len(group) == 1:
            pick = first  # nothing to choose: show the only cell (its failed runs are noted)
        methods.append(
            _Method(
                key, first["dataset"], first["model"], optimizer_of_row(first), group, pick,
                selected,
            )
        )

    # expected runs: as many as the fullest cell of the dataset (ok + failed)
    totals = cells.assign(total=cells["n"] + cells["failed"]).groupby("dataset")["total"].max()
    user_datasets, user_models, plugin_lines = _plugin_facts(runs)
    columns = {
        d: dataset_column(d, str(cells.loc[cells["dataset"] == d, "metric"].iloc[0]),
                          user_datasets.get(d))
        for d in cells["dataset"].unique()
    }
    lower_is_better = {
        str(d) for d, flag in zip(cells["dataset"], cells["higher_is_better"], strict=True)
        if not flag
    }

    def shown_by_run(cell: pd.Series | None) -> dict[tuple[int, int], float]:
        if cell is None:
            return {}
        group = by_cell[_cell_key(cell)]
        ok = group[group["status"] == "ok"].sort_values(["run", "seed"])
        return {
            (int(r), int(s)): 100 * float(v)
            for r, s, v in zip(ok["run"], ok["seed"], ok[metric], strict=True)
        }

    baselines = {
        (m.dataset, m.model, m.spec.base, m.spec.base_options): shown_by_run(m.chosen)
        for m in methods
        if m.spec.ham is None
    }

    built: list[MainCell] = []
    graph_plugins = graph_plugin_datasets(runs)
    for m in methods:
        protocol = _protocol_base(m.dataset, graph_plugins)
        display = user_models.get(m.model) or MODEL_DISPLAY.get(m.model, m.model)
        column = columns[m.dataset]
        cell = m.chosen
        values = shown_by_run(cell)
        group = by_cell[_cell_key(cell)] if cell is not None else m.cells.iloc[:0]
        ok = group[group["status"] == "ok"] if cell is not None else group
        n = int(cell["n"]) if cell is not None else 0
        failed = int(cell["failed"]) if cell is not None else int(m.cells["failed"].sum())
        expected = int(totals[m.dataset])
        eligible = int(((m.cells["n"] > 0) & (m.cells["failed"] == 0)).sum())
        base_key = (m.dataset, m.model, m.spec.base, m.spec.base_options)
        p_value, pairs, untested = math.nan, 0, False
        if m.spec.ham is not None and base_key in baselines and n:
            p_value, pairs = paired_test(values, baselines[base_key])
            untested = pairs < MIN_PAIRS
        mean_col, std_col = f"{metric}_mean", f"{metric}_std"
        notes = []
        if cell is None:
            notes.append(
                f"no (alpha, beta) cell without failed runs: {len(m.cells)} cells, "
                f"{int(m.cells['failed'].sum())} failed runs"
                + (f" ({_reasons(by_cell[_cell_key(m.cells.iloc[0])])})" if len(m.cells) else "")
            )
        elif n < expected or failed:
            text = f"n={n} of {expected}"
            if failed:
                text += f", {failed} failed"
                reason = _reasons(group)
                if reason:
                    text += f" ({reason})"
            notes.append(text)
        if m.spec.ham is None and column.protocol_runs and expected < column.protocol_runs:
            if m.spec.base == protocol and not m.spec.base_options:
                notes.append(f"{expected} runs per cell; the protocol has {column.protocol_runs}")
        if m.spec.ham is not None and cell is not None and not m.selected:
            notes.append("the only (alpha, beta) cell, shown although it has failed runs")
        if m.spec.ham is not None and m.selected and len(m.cells) > eligible:
            notes.append(
                f"{len(m.cells) - eligible} of {len(m.cells)} (alpha, beta) cells with failed "
                "runs not considered"
            )
        if untested:
            notes.append(f"no significance test ({pairs} paired runs < {MIN_PAIRS})")
        built.append(
            MainCell(
                dataset=m.dataset,
                model=m.model,
                model_display=display,
                optimizer=str(m.cells.iloc[0]["optimizer"]),
                method=method_text(m.spec, protocol),
                row=row_label(display, m.spec, protocol),
                family=column.family,
                cell_label=str(cell["label"]) if cell is not None else "",
                settings=str(cell["settings"]) if cell is not None else "",
                searched=settings_text(searched_settings(m.cells, cell))
                if cell is not None else "",
                alpha=float(cell["alpha"]) if cell is not None and not _missing(cell["alpha"])
                else math.nan,
                beta=float(cell["beta"]) if cell is not None and not _missing(cell["beta"])
                else math.nan,
                selected=m.selected,
                mean=_stat(cell, mean_col),
                std=_stat(cell, std_col),
                test_mean=_stat(cell, "test_mean"),
                test_std=_stat(cell, "test_std"),
                val_mean=_stat(cell, "val_mean"),
                val_std=_stat(cell, "val_std"),
                values=tuple(values.values()),
                n=n,
                expected=expected,
                failed=failed,
                p_value=p_value,
                pairs=pairs,
                significant=bool(p_value < SIGNIFICANCE_LEVEL),
                untested=untested,
                partial=cell is None or n < expected or failed > 0,
                best=False,
                tie=False,
                cells_searched=eligible if m.spec.ham is not None or len(m.cells) > 1 else 1,
                cells_skipped=len(m.cells) - eligible
                if m.spec.ham is not None or len(m.cells) > 1 else 0,
                note="; ".join(notes),
                runs=tuple(
                    RunRef(
                        str(r["_root"]), str(r["key"]), int(r["run"]), int(r["seed"]),
                        str(r["hamgraph_version"]), str(r["device"]),
                    )
                    for _, r in ok.sort_values(["run", "seed"]).iterrows()
                ),
                standard=is_standard(m.spec, protocol),
            )
        )

    built = _mark_best(built, lower_is_better)
    if published is not None:
        built = _compare(built, published, columns)
    grid = cells.copy()
    grid["method"] = [
        method_text(optimizer_of_row(r), _protocol_base(r["dataset"], graph_plugins))
        for _, r in cells.iterrows()
    ]
    source = None if published is None else ", ".join(dict.fromkeys(published["source"]))
    citation = "" if published is None else "; ".join(dict.fromkeys(published["paper"]))
    return ReportTables(
        metric=metric,
        families=_families(built, columns, published is not None, plugin_lines),
        grid=grid,
        compare_source=source,
        compare_citation=citation,
    )


def _plugin_facts(
    runs: pd.DataFrame,
) -> tuple[dict[str, dict[str, str]], dict[str, str], tuple[str, ...]]:
    """From runs.csv's plug-in columns (no import of a plug-in): user datasets by name
    ({display, target, split}), user models' display names by name, and one provenance line
    per plug-in (target and source hash)."""
    import json

    datasets: dict[str, dict[str, str]] = {}
    models: dict[str, str] = {}
    lines: dict[str, None] = {}
    if "plugin_options" not in runs.columns:
        return datasets, models, ()
    for _, r in runs.iterrows():
        sources = dict(
            part.split("=", 1) for part in str(r["plugin_sources"]).split() if "=" in part
        )
        options = json.loads(r["plugin_options"]) if r["plugin_options"] else {}
        if r["dataset_target"]:
            split = options.get("dataset", {}).get("settings", {}).get("split")
            datasets[str(r["dataset"])] = {
                "display": str(r["dataset_display"]), "target": str(r["dataset_target"]),
                "split": f"stated split {json.dumps(split, sort_keys=True)}" if split
                else "the split(s) shipped with the data",
            }
        for kind in ("dataset", "model", "metric"):
            target = str(r[f"{kind}_target"])
            if target:
                name = {"dataset": r["dataset_display"], "model": r["model_display"],
                        "metric": r["metric"]}[kind]
                extra = options.get(kind, {}).get("options") or {}
                shown = f" {json.dumps(extra, sort_keys=True)}" if extra else ""
                lines[f"user {kind} {name} = {target}{shown} (source "
                      f"{sources.get(kind, '?')})"] = None
        if r["model_target"]:
            models[str(r["model"])] = str(r["model_display"])
    return datasets, models, tuple(lines)


def _mark_best(built: list[MainCell], lower_is_better: set[str] | None = None) -> list[MainCell]:
    """Bold (and underline ties) per dataset x model at the shown precision (the lowest value
    on datasets whose metric is lower-is-better)."""
    out = list(built)
    blocks: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(out):
        if math.isfinite(c.mean):
            blocks.setdefault((c.dataset, c.model), []).append(i)
    for members in blocks.values():
        if len(members) < 2:
            continue
        # compare the printed text, not round(): they differ at ...5 boundaries of binary floats
        shown = {i: float(f"{out[i].mean:.{DECIMALS}f}") for i in members}
        pick = min if out[members[0]].dataset in (lower_is_better or set()) else max
        top = pick(shown.values())
        winners = [i for i in members if shown[i] == top]
        for i in winners:
            out[i] = dataclasses.replace(out[i], best=True, tie=len(winners) > 1)
    return out


def _compare(
    built: list[MainCell],
    published: pd.DataFrame,
    columns: dict[str, DatasetColumn],
) -> list[MainCell]:
    from hamgraph.compare import compare_cells

    wanted = [i for i, c in enumerate(built) if c.standard and c.n > 0]
    empty = Comparison(math.nan, math.nan, None, math.nan, None, math.nan, math.nan, math.nan,
                       None, "", "", "", "")  # fmt: skip
    out = [dataclasses.replace(c, compare=empty) for c in built]
    if not wanted:
        return out
    ours = pd.DataFrame(
        {
            "dataset": [built[i].dataset for i in wanted],
            "model": [built[i].model for i in wanted],
            "optimizer": [built[i].optimizer if built[i].is_ham else "adam" for i in wanted],
            "mean": [built[i].mean for i in wanted],
            "std": [built[i].std for i in wanted],
            "n": [built[i].n for i in wanted],
            "values": [list(built[i].values) for i in wanted],
            "alpha": [built[i].alpha for i in wanted],
            "beta": [built[i].beta for i in wanted],
            "metric": [columns[built[i].dataset].metric for i in wanted],
        }
    )
    variants = {d: c.base for d, c in columns.items() if c.base != d}
    result = compare_cells(ours, published, dataset_map=variants or None)
    for i, (_, r) in zip(wanted, result.iterrows(), strict=True):
        if not r["has_published"]:
            continue

        def maybe(value: object) -> bool | None:
            return None if value is pd.NA or _missing(value) else bool(value)

        out[i] = dataclasses.replace(
            out[i],
            compare=Comparison(
                mean=float(r["published_mean"]),
                std=float(r["published_std"]),
                runs=int(r["published_runs"]),
                delta=float(r["delta"]),
                within_noise=maybe(r["within_noise"]),
                welch_p=float(r["welch_p"]),
                alpha=float(r["published_alpha"]),
                beta=float(r["published_beta"]),
                same_best=maybe(r["same_best"]),
                split=str(r["published_split"]),
                source=str(r["source"]),
                table=str(r["table"]),
                best_table=str(r["best_table"]),
            ),
        )
    return out


def _families(
    built: list[MainCell], columns: dict[str, DatasetColumn], compared: bool,
    plugin_lines: tuple[str, ...] = (),
) -> tuple[FamilyTable, ...]:
    def row_order(c: MainCell) -> tuple:
        kind = c.optimizer if c.is_ham else "baseline"
        standard = c.row in (c.model_display, f"{c.model_display}+HAM", f"{c.model_display}+nHAM",
                             f"{c.model_display} w/ HAM", f"{c.model_display} w/ nHAM")
        return (_model_order(c.model), _KIND_ORDER[kind], not standard, c.row)

    tables = []
    for family in FAMILY_ORDER:
        members = [c for c in built if c.family == family]
        if not members:
            continue
        datasets = sorted(dict.fromkeys(c.dataset for c in members), key=_dataset_order)
        ordered = sorted(members, key=lambda c: (row_order(c), _dataset_order(c.dataset)))
        rows = tuple(dict.fromkeys(c.row for c in ordered))
        model_of = {c.row: c.model for c in ordered}
        starts = frozenset(
            r for i, r in enumerate(rows) if i and model_of[r] != model_of[rows[i - 1]]
        )
        cols = tuple(columns[d] for d in datasets)
        notes = tuple(
            f"{columns[c.dataset].display}, {c.row}: {c.note}"
            for c in sorted(members, key=lambda c: (_dataset_order(c.dataset), row_order(c)))
            if c.note
        )
        tables.append(
            FamilyTable(
                family=family,
                title=FAMILY_TITLE[family],
                columns=cols,
                rows=rows,
                block_starts=starts,
                cells=tuple(ordered),
                notes=notes,
                provenance=_provenance(members) + tuple(
                    line for line in plugin_lines
                    if any(f" {c.model_display} = " in line or f" {columns[c.dataset].display} = "
                           in line for c in members) or line.startswith("user metric")
                ),
                splits=_splits(cols, members, compared),
            )
        )
    return tuple(tables)


def _provenance(members: Sequence[MainCell]) -> tuple[str, ...]:
    """"hamgraph 0.3.0 on cuda (NVIDIA H100): 12 runs" per version x device of the shown runs."""
    counts: dict[tuple[str, str], int] = {}
    for c in members:
        for r in c.runs:
            key = (r.hamgraph_version or "unknown version", r.device or "unknown device")
            counts[key] = counts.get(key, 0) + 1
    return tuple(
        f"hamgraph {v} on {d}: {k} run{'s' if k != 1 else ''}"
        for (v, d), k in sorted(counts.items())
    )


def _splits(
    cols: Sequence[DatasetColumn], members: Sequence[MainCell], compared: bool
) -> tuple[str, ...]:
    lines = []
    for col in cols:
        text = f"{col.display}: {col.split or 'unknown (not in the registry)'}"
        if col.split_text and col.split_text != col.split:
            text += f" ({col.split_text})"
        if compared:
            published = sorted(
                {
                    c.compare.split
                    for c in members
                    if c.dataset == col.name and c.compare is not None and c.compare.has_value
                }
            )
            if published and published != [col.split]:
                target = "" if col.base == col.name else f" (the published row of {col.base})"
                text += f"; published{target}: {', '.join(published)}"
        lines.append(text)
    return tuple(lines)
