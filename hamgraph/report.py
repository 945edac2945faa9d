"""`hamgraph report`: result dirs -> paper tables (CSV / LaTeX / Markdown), plots, report.html.

Input: one or more result dirs (from `hamgraph run` or `hamgraph sweep`), each holding `runs.csv`
(one row per finished run, the result store's format) and `history/<key>.csv` (per-epoch stats).
Several dirs are concatenated; a run key that appears twice is kept once (an "ok" row wins over a
"failed" one, then the later input wins).

What the tables show (REFERENCE §1):

- Main table: rows `GCN`, `GCN+HAM`, `GCN+nHAM`, `GAT`, ...; columns the datasets, one table per
  family of the dataset registry (homophilic, heterophilic, graph). A cell is the test metric,
  mean ± sample std (ddof=1) over the runs, ×100, two decimals. For HAM / nHAM the (alpha, beta)
  cell with the best mean *validation* metric is shown. Among the cells with the most successful
  runs only: a cell that lost runs (diverged) or was cut short is not preferred over a complete one.
- Bold: the best value of an architecture block (e.g. GCN, GCN+HAM, GCN+nHAM) for a dataset,
  compared at the shown precision, when the block has at least two values. When several values tie
  for the best at two decimals, all of them are bold *and* underlined (none is preferred by digits
  the reader cannot see).
- † : the HAM / nHAM cell differs from the Adam baseline of the same model with p < 0.05 in a
  two-sided paired t-test (`scipy.stats.ttest_rel`) over the runs both have, matched by
  (run, seed). With fewer than `MIN_PAIRS` matched runs no test is made (a note says so).
- * : partial results. A cell with fewer successful runs than expected (as many as the cell of
  the dataset with the most runs) or with failed runs is marked and explained in the notes
  ("n=3 of 5, 1 failed: ..."), never silently averaged. Fewer runs than the protocol's (a grid
  that overrides `runs`) is said once per dataset and model in the notes, without a mark.
- Missing cells are `–`.

Files (in `--out`, default `<first path>/report/`): main.{csv,tex,md}, best_params.{csv,tex,md}
(per `--format`), figures/*.{png,pdf} (when matplotlib is installed), report.html.
main.csv is long/tidy: one row per (dataset, model, optimizer) with mean/std/val_mean/val_std
×100 (unrounded), n, expected, failed, p_value, marks and the note.

Known limits: runs are grouped by (dataset, model, optimizer, alpha, beta) only; two result dirs
run with different other hyperparameters (lr, epochs, ...) for the same cell are not told apart
beyond their (run, seed) (a warning is logged and one of them is kept). Stale figures from an
earlier report in the same output dir are left in place (report.html links only the new ones).
Nothing is written when the input is bad: everything is read and checked before the first write.
"""

from __future__ import annotations

import html
import logging
import math
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.io.formats.style import Styler

from hamgraph.atomic import atomic_write_text
from hamgraph.data.registry import DatasetInfo, resolve_dataset
from hamgraph.errors import HamgraphError, UnknownNameError, UserInputError

log = logging.getLogger(__name__)

VALID_FORMATS = ("csv", "latex", "md")
RUNS_FILE = "runs.csv"
# The runs.csv columns the report needs (the store writes more: best_epoch, epochs, seconds, ...).
REQUIRED_COLUMNS = (
    "key", "dataset", "model", "optimizer", "alpha", "beta", "run", "seed",
    "metric", "val", "test", "status",
)  # fmt: skip
OPTIMIZERS = ("adam", "ham", "nham")
STATUSES = ("ok", "failed")
CELL_KEYS = ["dataset", "model", "optimizer", "alpha", "beta"]

SIGNIFICANCE_LEVEL = 0.05  # † when p < this
MIN_PAIRS = 3  # fewest (run, seed)-matched pairs for the paired t-test (n=2 has df=1: useless)
DECIMALS = 2  # shown precision of the ×100 metric; ties are judged at this precision
MISSING = "–"

FAMILY_ORDER = ("homophilic", "heterophilic", "graph", "other")
FAMILY_TITLE = {
    "homophilic": "Homophilic node classification",
    "heterophilic": "Heterophilic node classification",
    "graph": "Graph classification",
    "other": "Other datasets",
}
OPTIMIZER_SUFFIX = {"adam": "", "ham": "+HAM", "nham": "+nHAM"}
OPTIMIZER_LABEL = {"adam": "Adam", "ham": "HAM", "nham": "nHAM"}
METRIC_SHORT = {"accuracy": "acc", "rocauc": "ROC-AUC", "ap": "AP", "f1": "F1"}
# Used only while hamgraph.models (owned by the models stage) cannot be imported.
_FALLBACK_MODEL_DISPLAY = {"gcn": "GCN", "gat": "GAT", "sage": "SAGE", "gcnplus": "GCN+"}


# --------------------------------------------------------------------------------------------
# Reading and checking the input
# --------------------------------------------------------------------------------------------


def check_formats(formats: Sequence[str]) -> list[str]:
    """Normalize the `--format` list; unknown names are a UserInputError listing the valid ones."""
    wanted = [str(f).strip().lower() for f in formats if str(f).strip()]
    if not wanted:
        raise UserInputError(f"report: no output format given; valid: {', '.join(VALID_FORMATS)}")
    bad = [f for f in wanted if f not in VALID_FORMATS]
    if bad:
        raise UserInputError(
            f"report: unknown format {', '.join(map(repr, bad))}; valid: {', '.join(VALID_FORMATS)}"
        )
    return list(dict.fromkeys(wanted))


def _read_one(root: Path) -> pd.DataFrame:
    path = root / RUNS_FILE
    if not root.is_dir():
        raise UserInputError(f"report: {root}: not a directory (expected a result dir)")
    if not path.is_file():
        raise UserInputError(f"report: {root}: no {RUNS_FILE} (not a hamgraph result dir)")
    try:
        frame = pd.read_csv(path, dtype={"key": str, "reason": str, "history": str})
    except pd.errors.EmptyDataError:
        raise UserInputError(f"report: {path}: empty file, no header and no runs") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"report: {path}: not a readable CSV ({first})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserInputError(
            f"report: {path}: not a hamgraph runs.csv, missing columns: {', '.join(missing)}"
        )
    if frame.empty:
        raise UserInputError(f"report: {path}: no runs (header only)")
    frame = frame.copy()
    for col in ("dataset", "model", "optimizer", "status", "metric", "key"):
        frame[col] = frame[col].astype(str).str.strip()
    frame["optimizer"] = frame["optimizer"].str.lower()
    frame["status"] = frame["status"].str.lower()
    for col, allowed in (("optimizer", OPTIMIZERS), ("status", STATUSES)):
        bad = frame.loc[~frame[col].isin(allowed), col]
        if not bad.empty:
            raise UserInputError(
                f"report: {path}: row {bad.index[0] + 2}: {col} {bad.iloc[0]!r} is not one of "
                f"{', '.join(allowed)}"
            )
    for col in ("alpha", "beta", "val", "test", "run", "seed"):
        numeric = pd.to_numeric(frame[col], errors="coerce")
        bad = frame[col].notna() & numeric.isna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise UserInputError(
                f"report: {path}: row {row + 2}: {col} {frame[col].iloc[row]!r} is not a number"
            )
        frame[col] = numeric.astype(float)
    for col in ("run", "seed"):
        if frame[col].isna().any():
            row = int(frame[col].isna().to_numpy().nonzero()[0][0])
            raise UserInputError(f"report: {path}: row {row + 2}: {col} is empty")
        frame[col] = frame[col].astype(int)
    ham_rows = frame["optimizer"] != "adam"
    if (frame.loc[ham_rows, "alpha"].isna() | frame.loc[ham_rows, "beta"].isna()).any():
        row = int((ham_rows & frame["alpha"].isna() | ham_rows & frame["beta"].isna()).idxmax())
        raise UserInputError(f"report: {path}: row {row + 2}: a HAM / nHAM run without alpha/beta")
    # Adam rows carry no (alpha, beta); make them equal (NaN) so they form one cell.
    frame.loc[~ham_rows, ["alpha", "beta"]] = math.nan
    frame["reason"] = frame["reason"].fillna("").astype(str) if "reason" in frame else ""
    frame["history"] = frame["history"].fillna("").astype(str) if "history" in frame else ""
    frame["_root"] = str(root)
    return frame


def load_runs(paths: Sequence[Path]) -> pd.DataFrame:
    """Read and check every `runs.csv`, concatenate them and drop duplicate keys.

    Raises UserInputError (one line, naming the file) for a missing, empty or foreign runs.csv.
    """
    if not paths:
        raise UserInputError("report: no result dir given")
    frames = [_read_one(Path(p)) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    frame["_order"] = range(len(frame))
    finite = frame["val"].map(math.isfinite) & frame["test"].map(math.isfinite)
    frame["_ok"] = (frame["status"] == "ok") & finite.astype(bool)
    # Keep one row per key: ok over failed, then the later input.
    frame = frame.sort_values(["_ok", "_order"]).drop_duplicates("key", keep="last")
    # The same cell, run and seed under two keys: other settings differed between the inputs.
    run_keys = [*CELL_KEYS, "run", "seed"]
    dup = frame.duplicated(run_keys, keep="last")
    if dup.any():
        first = frame.loc[dup].iloc[0]
        log.warning(
            "report: %d runs share (dataset, model, optimizer, alpha, beta, run, seed) with "
            "another key (different settings?), keeping one of each; first: %s",
            int(dup.sum()),
            first["key"],
        )
        frame = frame.loc[~dup]
    return frame.sort_values("_order").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Names and facts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetFacts:
    name: str
    display: str
    family: str
    runs: int | None  # the protocol's run count; None for names the registry does not know
    metric: str
    stats: str  # "#nodes / #edges" text, "" when unknown
    order: int


def _registry_order() -> dict[str, int]:
    from hamgraph.data.registry import DATASETS

    return {name: i for i, name in enumerate(DATASETS)}


def _stats_text(name: str) -> str:
    """#nodes / #edges from the stats cache of `hamgraph datasets`, or "". Never loads a dataset."""
    from hamgraph.data import catalog

    try:
        stats = catalog.cached_stats(name)
    except HamgraphError as exc:  # e.g. a name the registry does not know
        log.debug("report: no stats for %s: %s", name, exc)
        return ""
    if not stats or not stats.get("nodes") or not stats.get("edges_undirected"):
        return ""
    return f"{int(stats['nodes']):,} nodes / {int(stats['edges_undirected']):,} edges"


def dataset_facts(frame: pd.DataFrame) -> dict[str, DatasetFacts]:
    order = _registry_order()
    facts: dict[str, DatasetFacts] = {}
    for i, name in enumerate(sorted(frame["dataset"].unique())):
        metrics = frame.loc[frame["dataset"] == name, "metric"].dropna().unique()
        info: DatasetInfo | None
        try:
            info = resolve_dataset(name)
        except UnknownNameError:
            log.warning("report: dataset %r is not in the registry; listed under 'other'", name)
            info = None
        metric = str(metrics[0]) if len(metrics) else (info.metric if info else "")
        facts[name] = DatasetFacts(
            name=name,
            display=info.display if info else name,
            family=info.family if info else "other",
            runs=info.runs if info else None,
            metric=metric,
            stats=_stats_text(name) if info else "",
            order=order.get(name, len(order) + i),
        )
    return facts


def model_display() -> dict[str, str]:
    try:
        from hamgraph.models import MODEL_DISPLAY
    except ImportError:
        return dict(_FALLBACK_MODEL_DISPLAY)
    return dict(MODEL_DISPLAY)


def _model_order(models: Sequence[str], display: dict[str, str]) -> list[str]:
    known = [m for m in display if m in models]
    return known + sorted(m for m in models if m not in display)


def row_label(model_display: str, optimizer: str) -> str:
    """ "GCN", "GCN+HAM", "GCN+nHAM"; "GCN+ w/ HAM" for names that already end in "+"."""
    if optimizer == "adam":
        return model_display
    if model_display.endswith("+"):
        return f"{model_display} w/ {OPTIMIZER_LABEL[optimizer]}"
    return model_display + OPTIMIZER_SUFFIX[optimizer]


def fmt_param(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{value:g}"


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def summarize_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, model, optimizer, alpha, beta): n, failed, means/stds ×100, runs."""
    rows = []
    for keys, group in frame.groupby(CELL_KEYS, dropna=False, sort=False):
        ok = group[group["_ok"]]
        failed = group[~group["_ok"]]
        # A run that failed in one input and succeeded in another only counts as ok.
        ok_runs = set(zip(ok["run"], ok["seed"], strict=True))
        retried = [(r, s) in ok_runs for r, s in zip(failed["run"], failed["seed"], strict=True)]
        failed = failed.loc[~pd.Series(retried, index=failed.index, dtype=bool)]
        reasons = [r for r in dict.fromkeys(failed["reason"]) if r]
        rows.append(
            dict(
                zip(CELL_KEYS, keys, strict=True),
                n=len(ok),
                failed=len(failed.drop_duplicates(["run", "seed"])),
                mean=ok["test"].mean() * 100 if len(ok) else math.nan,
                std=ok["test"].std(ddof=1) * 100 if len(ok) > 1 else math.nan,
                val_mean=ok["val"].mean() * 100 if len(ok) else math.nan,
                val_std=ok["val"].std(ddof=1) * 100 if len(ok) > 1 else math.nan,
                reasons="; ".join(reasons),
                test_by_run=dict(
                    zip(zip(ok["run"], ok["seed"], strict=True), ok["test"], strict=True)
                ),
                keys=list(ok["key"]),
                roots=list(ok["_root"]),
                histories=list(ok["history"]),
            )
        )
    return pd.DataFrame(rows)


def select_best(cells: pd.DataFrame) -> pd.DataFrame:
    """The Adam cell and, per HAM / nHAM, the (alpha, beta) cell with the best mean validation.

    Candidates are the cells with the most successful runs of their (dataset, model, optimizer);
    among equal mean validation the cell with smaller |alpha|, then smaller beta wins.
    Adds `cells_searched` and `cells_skipped` (partial cells not considered).
    """
    chosen = []
    for (_, _, optimizer), group in cells.groupby(["dataset", "model", "optimizer"], sort=False):
        group = group.copy()
        if optimizer == "adam":
            row = group.iloc[0].copy()
            row["cells_searched"], row["cells_skipped"] = 1, 0
            chosen.append(row)
            continue
        complete = group[(group["n"] == group["n"].max()) & (group["n"] > 0)]
        if complete.empty:  # every run of every cell failed: report the failure, no selection
            row = group.iloc[0].copy()
            row["alpha"] = row["beta"] = math.nan
            row["n"] = 0
            row["failed"] = int(group["failed"].max())
            row["cells_searched"], row["cells_skipped"] = 0, len(group)
            row["reasons"] = "; ".join(r for r in dict.fromkeys(group["reasons"]) if r)
            chosen.append(row)
            continue
        complete = complete.assign(_abs_alpha=complete["alpha"].abs()).sort_values(
            ["val_mean", "_abs_alpha", "beta"], ascending=[False, True, True]
        )
        row = complete.iloc[0].drop("_abs_alpha").copy()
        row["cells_searched"] = len(complete)
        row["cells_skipped"] = len(group) - len(complete)
        chosen.append(row)
    return pd.DataFrame(chosen).reset_index(drop=True)


def paired_test(ham: dict, base: dict) -> tuple[float, int]:
    """Two-sided paired t-test of two {(run, seed): test} maps over their common runs.

    Returns (p, pairs); p is NaN when there are fewer than MIN_PAIRS pairs or no variation.
    """
    from scipy.stats import ttest_rel

    common = sorted(set(ham) & set(base))
    if len(common) < MIN_PAIRS:
        return math.nan, len(common)
    a = [ham[k] for k in common]
    b = [base[k] for k in common]
    if all(x == y for x, y in zip(a, b, strict=True)):
        return math.nan, len(common)
    with warnings.catch_warnings():  # identical differences: scipy warns, p is still defined
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_rel(a, b).pvalue)
    return p, len(common)


def build_main(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """-> (main: one row per (dataset, model, optimizer), cells: every (alpha, beta) cell)."""
    facts = dataset_facts(frame)
    display = model_display()
    cells = summarize_cells(frame)
    main = select_best(cells)

    # Expected runs: as many as the cell of the dataset with the most runs (ok + failed), so a
    # grid that deliberately overrode `runs` is not "partial"; the protocol's count is noted.
    most = cells.assign(total=cells["n"] + cells["failed"]).groupby("dataset")["total"].max()
    main["expected"] = [int(most[d]) for d in main["dataset"]]
    main["protocol_runs"] = [facts[d].runs or 0 for d in main["dataset"]]
    main["family"] = [facts[d].family for d in main["dataset"]]
    main["dataset_display"] = [facts[d].display for d in main["dataset"]]
    main["metric"] = [facts[d].metric for d in main["dataset"]]
    main["model_display"] = [display.get(m, m) for m in main["model"]]
    main["row"] = [
        row_label(display.get(m, m), o)
        for m, o in zip(main["model"], main["optimizer"], strict=True)
    ]

    # Significance against the Adam cell of the same (dataset, model).
    base = {(r.dataset, r.model): r.test_by_run for r in main.itertuples() if r.optimizer == "adam"}
    p_values, pairs = [], []
    for r in main.itertuples():
        if r.optimizer == "adam" or (r.dataset, r.model) not in base or r.n == 0:
            p_values.append(math.nan)
            pairs.append(0)
            continue
        p, k = paired_test(r.test_by_run, base[(r.dataset, r.model)])
        p_values.append(p)
        pairs.append(k)
    main["p_value"] = p_values
    main["pairs"] = pairs
    main["significant"] = main["p_value"] < SIGNIFICANCE_LEVEL
    has_base = [(d, m) in base for d, m in zip(main["dataset"], main["model"], strict=True)]
    main["untested"] = (
        (main["optimizer"] != "adam")
        & (main["n"] > 0)
        & pd.Series(has_base, index=main.index)
        & (main["pairs"] < MIN_PAIRS)
    )

    # Partial results.
    main["partial"] = (main["n"] < main["expected"]) | (main["failed"] > 0)
    main["note"] = [_note(r) for r in main.itertuples()]

    # Bold / ties per architecture block and dataset, at the shown precision.
    # Compare the printed text, not round(): they differ at ...5 boundaries of binary floats.
    main["shown"] = [
        float(f"{v:.{DECIMALS}f}") if math.isfinite(v) else math.nan for v in main["mean"]
    ]
    main["best"] = False
    main["tie"] = False
    for _, block in main.groupby(["dataset", "model"], sort=False):
        values = block["shown"].dropna()
        if len(values) < 2:
            continue
        winners = values.index[values == values.max()]
        main.loc[winners, "best"] = True
        if len(winners) > 1:
            main.loc[winners, "tie"] = True

    main["_family_order"] = [FAMILY_ORDER.index(f) for f in main["family"]]
    main["_dataset_order"] = [facts[d].order for d in main["dataset"]]
    model_rank = {m: i for i, m in enumerate(_model_order(list(main["model"].unique()), display))}
    main["_model_order"] = main["model"].map(model_rank)
    main["_opt_order"] = main["optimizer"].map({o: i for i, o in enumerate(OPTIMIZERS)})
    main = main.sort_values(
        ["_family_order", "_dataset_order", "_model_order", "_opt_order"]
    ).reset_index(drop=True)
    main.attrs["stats"] = {d: f.stats for d, f in facts.items()}
    return main, cells


def _note(r: Any) -> str:
    parts = []
    if r.n < r.expected or r.failed:
        text = f"n={r.n} of {r.expected}"
        if r.failed:
            text += f", {r.failed} failed"
            if r.reasons:
                reason = r.reasons if len(r.reasons) <= 120 else r.reasons[:117] + "..."
                text += f" ({reason})"
        parts.append(text)
    if r.optimizer == "adam" and r.expected < r.protocol_runs:
        parts.append(f"{r.expected} runs per cell; the protocol has {r.protocol_runs}")
    if r.optimizer != "adam" and r.cells_skipped:
        parts.append(
            f"{r.cells_skipped} of {r.cells_searched + r.cells_skipped} (alpha, beta) cells "
            "with fewer runs not considered"
        )
    if r.untested:
        parts.append(f"no significance test ({r.pairs} paired runs < {MIN_PAIRS})")
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

MAIN_CSV_COLUMNS = [
    "family", "dataset", "dataset_display", "metric", "model", "model_display", "optimizer",
    "row", "alpha", "beta", "mean", "std", "n", "expected", "failed", "val_mean", "val_std",
    "p_value", "pairs", "significant", "best", "tie", "partial", "cells_searched",
    "cells_skipped", "note",
]  # fmt: skip


def _cell_text(r: pd.Series, fmt: str) -> str:
    """The shown text of one main-table cell; bold/underline are applied by the renderer."""
    if r["n"] == 0 or pd.isna(r["mean"]):
        return ("--" if fmt == "latex" else MISSING) + _marks(r, fmt)
    mean = f"{r['mean']:.{DECIMALS}f}"
    std = "" if pd.isna(r["std"]) else f"{r['std']:.{DECIMALS}f}"
    if fmt == "latex":
        text = mean + (f" $\\pm$ {std}" if std else "")
    else:
        text = mean + (f" ± {std}" if std else "")
    return text + _marks(r, fmt)


def _marks(r: pd.Series, fmt: str) -> str:
    marks = []
    if r["significant"]:
        marks.append("\\dagger" if fmt == "latex" else "†")
    if r["partial"]:
        marks.append("*")
    if not marks:
        return ""
    if fmt == "latex":
        return "$^{" + ",".join(marks) + "}$"
    if fmt == "html":
        return "<sup>" + "".join(marks) + "</sup>"
    return "".join(marks).replace("*", "\\*")  # Markdown: a literal asterisk


def _header(name: str, main: pd.DataFrame) -> tuple[str, str]:
    sub = main.loc[main["dataset"] == name].iloc[0]
    metric = METRIC_SHORT.get(sub["metric"], sub["metric"])
    stats = main.attrs.get("stats", {}).get(name, "")
    return sub["dataset_display"], f"{metric}, {stats}" if stats else metric


def family_tables(main: pd.DataFrame, fmt: str) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """Per family: (family, text table [rows x (display, sub) columns], marks table "b"/"bt"/"")."""
    out = []
    for family in FAMILY_ORDER:
        part = main[main["family"] == family]
        if part.empty:
            continue
        datasets = list(dict.fromkeys(part["dataset"]))
        rows = list(dict.fromkeys(part.sort_values(["_model_order", "_opt_order"])["row"]))
        columns = pd.MultiIndex.from_tuples([_header(d, main) for d in datasets])
        text = pd.DataFrame(
            [[MISSING if fmt != "latex" else "--"] * len(datasets)] * len(rows),
            index=pd.Index(rows),
            columns=columns,
            dtype=object,
        )
        marks = pd.DataFrame("", index=pd.Index(rows), columns=columns, dtype=object)
        for _, r in part.iterrows():
            j = datasets.index(r["dataset"])
            text.loc[r["row"], columns[j]] = _cell_text(r, fmt)
            marks.loc[r["row"], columns[j]] = ("b" if r["best"] else "") + ("u" if r["tie"] else "")
        out.append((family, text, marks))
    return out


def _block_starts(main: pd.DataFrame, rows: Sequence[str]) -> set[str]:
    """Row labels that start a new architecture block (a rule goes above them)."""
    model_of = dict(zip(main["row"], main["model"], strict=False))
    starts, previous = set(), None
    for i, row in enumerate(rows):
        model = model_of.get(row)
        if i and model != previous:
            starts.add(row)
        previous = model
    return starts


def _latex_escape(text: str) -> str:
    """Escape LaTeX specials; non-ASCII is folded to ASCII (pdflatex without extra packages)."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "replace").decode("ascii")
    special = {
        "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
        "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    }  # fmt: skip
    return "".join(special.get(ch, ch) for ch in text)


def _styler_latex(text: pd.DataFrame, marks: pd.DataFrame, multicol: bool) -> str:
    """Body cells are LaTeX already; labels are escaped here. Returns the tabular only."""
    styler = text.style.apply(
        lambda _: marks.map(
            lambda m: (
                ("textbf: --rwrap;" if "b" in m else "")
                + ("underline: --rwrap;" if "u" in m else "")
            )
        ),
        axis=None,
    )
    styler = styler.format_index(escape="latex", axis=0).format_index(escape="latex", axis=1)
    return styler.to_latex(
        hrules=True,
        column_format="l" + "c" * text.shape[1],
        multicol_align="c" if multicol else "naive-l",
    )


def _insert_rules(tabular: str, starts: set[str]) -> str:
    if not starts:
        return tabular
    escaped = {_latex_escape(s) for s in starts}
    lines = []
    for line in tabular.splitlines():
        label = line.split(" & ", 1)[0].strip()
        if label in escaped:
            lines.append("\\midrule")
        lines.append(line)
    return "\n".join(lines) + "\n"


def _footnote(fmt: str) -> str:
    """The legend under every main table."""
    pm, dagger = ("$\\pm$", "$^{\\dagger}$") if fmt == "latex" else ("±", "†")
    times, less = ("$\\times$", "$<$") if fmt == "latex" else ("×", "<")
    star = "\\*" if fmt == "md" else "*"
    missing = "--" if fmt == "latex" else MISSING
    bold = {"latex": r"\textbf{bold}", "md": "**bold**", "html": "<b>bold</b>"}[fmt]
    under = {"latex": r"\underline{underlined}", "md": "<u>underlined</u>",
             "html": "<u>underlined</u>"}[fmt]  # fmt: skip
    test = "scipy.stats.ttest\\_rel" if fmt == "latex" else "scipy.stats.ttest_rel"
    return (
        f"Test metric, mean {pm} sample std over runs, {times}100; HAM / nHAM at the (alpha, beta) "
        f"with the best mean validation metric. {bold}: best of the architecture for the dataset; "
        f"bold and {under}: tied best at {DECIMALS} decimals. {dagger}: p {less} "
        f"{SIGNIFICANCE_LEVEL:g} vs the Adam baseline of the same model, two-sided paired t-test "
        f"({test}) over runs matched by (run, seed); not tested with fewer than {MIN_PAIRS} pairs. "
        f"{star}: partial results (see notes). {missing}: no result."
    )


def _notes(part: pd.DataFrame) -> list[str]:
    return [
        f"{r['dataset_display']}, {r['row']}: {r['note']}" for _, r in part.iterrows() if r["note"]
    ]


def main_latex(main: pd.DataFrame) -> str:
    chunks = [
        "% hamgraph report: main table. Needs \\usepackage{booktabs}.",
    ]
    for family, text, marks in family_tables(main, "latex"):
        tabular = _styler_latex(text, marks, multicol=True)
        tabular = _insert_rules(tabular, _block_starts(main, list(text.index)))
        notes = _notes(main[main["family"] == family])
        chunk = (
            "\\begin{table}[t]\n\\centering\n"
            f"\\caption{{{_latex_escape(FAMILY_TITLE[family])}}}\n"
            f"\\label{{tab:hamgraph-{family}}}\n" + tabular
        )
        chunk += "\\par\\smallskip\n{\\footnotesize " + _footnote("latex")
        for note in notes:
            chunk += "\\\\\n$^{*}$ " + _latex_escape(note)
        chunks.append(chunk + "\\par}\n\\end{table}\n")
    return "\n".join(chunks)


def _md_table(text: pd.DataFrame, marks: pd.DataFrame | None, corner: str = "") -> str:
    def style(value: str, mark: str) -> str:
        if value in (MISSING, "") or not mark:
            return value
        if "u" in mark:
            value = f"<u>{value}</u>"
        return f"**{value}**" if "b" in mark else value

    def esc(value: str) -> str:
        return str(value).replace("|", "\\|")

    headers = [corner] + [
        f"{a} ({b})" if isinstance(c, tuple) else str(c)
        for c in text.columns
        for a, b in [c if isinstance(c, tuple) else (c, "")]
    ]
    lines = [
        "| " + " | ".join(esc(h) for h in headers) + " |",
        "|" + "---|" + "---:|" * (len(headers) - 1),
    ]
    for i, label in enumerate(text.index):
        cells = [
            style(str(text.iat[i, j]), "" if marks is None else str(marks.iat[i, j]))
            for j in range(text.shape[1])
        ]
        lines.append("| " + " | ".join(esc(c) for c in [str(label), *cells]) + " |")
    return "\n".join(lines) + "\n"


def main_markdown(main: pd.DataFrame) -> str:
    chunks = ["# Results\n"]
    for family, text, marks in family_tables(main, "md"):
        chunks.append(f"## {FAMILY_TITLE[family]}\n")
        chunks.append(_md_table(text, marks))
        notes = _notes(main[main["family"] == family])
        if notes:
            chunks.append("Notes:\n\n" + "\n".join(f"- \\* {n}" for n in notes) + "\n")
    chunks.append(_footnote("md") + "\n")
    return "\n".join(chunks)


def main_csv(main: pd.DataFrame) -> str:
    out = main[MAIN_CSV_COLUMNS].copy()
    for col in ("alpha", "beta"):
        out[col] = out[col].map(fmt_param)
    return out.to_csv(index=False, float_format="%.6g")


# ---- best parameters ------------------------------------------------------------------------

BEST_CSV_COLUMNS = [
    "family", "dataset", "dataset_display", "model", "model_display", "optimizer", "alpha",
    "beta", "val_mean", "mean", "n", "cells_searched", "cells_skipped",
]  # fmt: skip


def best_params_frame(main: pd.DataFrame) -> pd.DataFrame:
    return main[(main["optimizer"] != "adam")].reset_index(drop=True)


def best_params_wide(main: pd.DataFrame) -> pd.DataFrame:
    """Rows: datasets (by family); columns: (model, HAM/nHAM); cells "alpha, beta" or "–"."""
    best = best_params_frame(main)
    if best.empty:
        return pd.DataFrame()
    datasets = list(dict.fromkeys(best["dataset_display"]))
    pairs = list(
        dict.fromkeys(
            zip(
                best.sort_values(["_model_order", "_opt_order"])["model_display"],
                best.sort_values(["_model_order", "_opt_order"])["optimizer"],
                strict=True,
            )
        )
    )
    columns = pd.MultiIndex.from_tuples([(m, OPTIMIZER_LABEL[o]) for m, o in pairs])
    wide = pd.DataFrame(MISSING, index=pd.Index(datasets), columns=columns, dtype=object)
    for _, r in best.iterrows():
        if pd.notna(r["alpha"]):
            column = (r["model_display"], OPTIMIZER_LABEL[r["optimizer"]])
            wide.loc[r["dataset_display"], column] = (
                f"{fmt_param(r['alpha'])}, {fmt_param(r['beta'])}"
            )
    return wide


def best_csv(main: pd.DataFrame) -> str:
    out = best_params_frame(main)[BEST_CSV_COLUMNS].copy()
    for col in ("alpha", "beta"):
        out[col] = out[col].map(fmt_param)
    return out.to_csv(index=False, float_format="%.6g")


def best_markdown(main: pd.DataFrame) -> str:
    wide = best_params_wide(main)
    if wide.empty:
        return "# Best (alpha, beta)\n\nNo HAM / nHAM runs.\n"
    text = wide.copy()
    text.columns = [f"{m} {k}" for m, k in wide.columns]
    return (
        "# Best (alpha, beta)\n\nPer dataset and model, the (alpha, beta) with the best mean "
        "validation metric.\n\n" + _md_table(text, None, corner="dataset")
    )


def best_latex(main: pd.DataFrame) -> str:
    wide = best_params_wide(main)
    header = "% hamgraph report: best (alpha, beta). Needs \\usepackage{booktabs}.\n"
    if wide.empty:
        return header + "% no HAM / nHAM runs\n"
    text = wide.map(lambda v: "--" if v == MISSING else _latex_escape(v))
    marks = pd.DataFrame("", index=text.index, columns=text.columns)
    tabular = _styler_latex(text, marks, multicol=True)
    return (
        header + "\\begin{table}[t]\n\\centering\n"
        "\\caption{Best $(\\alpha, \\beta)$ by mean validation metric}\n"
        "\\label{tab:hamgraph-best-params}\n" + tabular + "\\end{table}\n"
    )


# ---- html ------------------------------------------------------------------------------------

_HTML_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.6em; text-align: center; }
thead { border-bottom: 1px solid #333; } table { border-top: 2px solid #333;
  border-bottom: 2px solid #333; }
th.row_heading { text-align: left; }
.notes, .foot { font-size: 0.85em; color: #333; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


def _styler_html(text: pd.DataFrame, marks: pd.DataFrame, uuid: str) -> str:
    styler = Styler(text, uuid=uuid, cell_ids=False).apply(
        lambda _: marks.map(
            lambda m: (
                ("font-weight: bold;" if "b" in m else "")
                + ("text-decoration: underline;" if "u" in m else "")
            )
        ),
        axis=None,
    )
    return styler.to_html()


def report_html(main: pd.DataFrame, figures: Sequence[Path], sources: Sequence[Path]) -> str:
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>hamgraph report</title>",
        f"<style>{_HTML_CSS}</style></head><body>",
        "<h1>hamgraph report</h1>",
        "<p>Inputs: " + ", ".join(f"<code>{html.escape(str(s))}</code>" for s in sources) + "</p>",
    ]
    for family, text, marks in family_tables(main, "html"):
        parts.append(f"<h2>{html.escape(FAMILY_TITLE[family])}</h2>")
        text = text.map(
            lambda v: (
                html.escape(v).replace("&lt;sup&gt;", "<sup>").replace("&lt;/sup&gt;", "</sup>")
            )
        )
        text.index = [html.escape(str(i)) for i in text.index]
        text.columns = pd.MultiIndex.from_tuples(
            [(html.escape(a), html.escape(b)) for a, b in text.columns]
        )
        marks = marks.set_axis(text.index, axis=0).set_axis(text.columns, axis=1)
        parts.append(_styler_html(text, marks, f"main-{family}"))
        notes = _notes(main[main["family"] == family])
        if notes:
            parts.append(
                "<ul class='notes'>"
                + "".join(f"<li>* {html.escape(n)}</li>" for n in notes)
                + "</ul>"
            )
    parts.append(f"<p class='foot'>{_footnote('html')}</p>")
    wide = best_params_wide(main)
    if not wide.empty:
        parts.append("<h2>Best (alpha, beta) by mean validation metric</h2>")
        safe = wide.map(html.escape)
        safe.index = [html.escape(str(i)) for i in safe.index]
        marks = pd.DataFrame("", index=safe.index, columns=safe.columns)
        parts.append(_styler_html(safe, marks, "best-params"))
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            rel = html.escape(fig.as_posix(), quote=True)
            parts.append(
                f'<figure><img src="{rel}" alt="{html.escape(fig.stem)}">'
                f"<figcaption>{html.escape(fig.stem)}</figcaption></figure>"
            )
    else:
        parts.append("<p class='foot'>No figures (see the log).</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _resolve_out(paths: Sequence[Path], out: Path | None) -> Path:
    target = Path(out) if out is not None else Path(paths[0]) / "report"
    if target.exists() and not target.is_dir():
        raise UserInputError(f"report: --out {target} exists and is not a directory")
    return target


def write_report(paths: list[Path], formats: list[str], out: Path | None) -> int:
    """Read result dirs, write the tables (per `formats`), the figures and report.html.

    Raises UserInputError on bad input (before anything is written). Returns 0.
    """
    wanted = check_formats(formats)
    paths = [Path(p) for p in paths]
    frame = load_runs(paths)
    target = _resolve_out(paths, out)
    main, cells = build_main(frame)

    writers: dict[str, list[tuple[str, Callable[[pd.DataFrame], str]]]] = {
        "csv": [("main.csv", main_csv), ("best_params.csv", best_csv)],
        "latex": [("main.tex", main_latex), ("best_params.tex", best_latex)],
        "md": [("main.md", main_markdown), ("best_params.md", best_markdown)],
    }
    rendered = [(name, fn(main)) for fmt in wanted for name, fn in writers[fmt]]

    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in rendered:
        atomic_write_text(target / name, text)
        written.append(target / name)

    from hamgraph.plots import write_figures

    figures = write_figures(frame, main, cells, target / "figures")
    written.extend(target / f for f in figures)
    written.extend(target / f.with_suffix(".pdf") for f in figures)
    atomic_write_text(target / "report.html", report_html(main, figures, paths))
    written.append(target / "report.html")

    n_ok = int(frame["_ok"].sum())
    log.info(
        "report: %d runs (%d ok, %d failed) from %d dir(s) -> %s",
        len(frame),
        n_ok,
        len(frame) - n_ok,
        len(paths),
        target,
    )
    for path in written:
        log.info("  wrote %s", path)
    return 0
