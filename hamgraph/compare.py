"""Published results beside ours: the shipped tables, user tables, and the cell comparison.

A *published table* is a CSV with one row per source x dataset x model x optimizer:

    source      short name of the source, e.g. "ham-paper"
    dataset     registry name (hamgraph.data.registry); paper spellings such as "Computers",
                "Coauthor CS" or "molhiv" are mapped to it on load
    model       gcn | gat | sage | gcnplus (aliases: gatv2, graphsage, gcn+)
    optimizer   adam (the base optimizer alone) | ham (alpha > 0) | nham (alpha < 0)
    mean, std   the test metric x100, as printed (std: the sample std over the runs)
    runs        how many runs the mean and std are over
    metric      accuracy | rocauc | ap | f1
    split       the split protocol (a registry protocol such as "per-class-20/500/1000", or words)
    paper       the citation (title, venue, section)
    table       where the mean and std are printed, e.g. "Table 14"
    alpha, beta optional: the published best (alpha, beta) of ham / nham rows
    best_table  optional: where alpha and beta are printed, e.g. "Table 16"

Shipped tables live in `hamgraph/published/<name>.csv` (package data; `list_sources()`); the
HAM paper's is "ham-paper", checked number by number against the paper's transcription by
tests/test_published.py. Users pass the path of their own CSV in the same format instead of a
name; a bad file raises UserInputError naming the file, the row and the column.

`compare_cells(ours, published)` is pure (DataFrames in, a DataFrame out): every one of our
cells gets the published value beside it, the difference, and whether the difference is within
noise. It never invents a published number: a cell the source does not have gets NaN / NA.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from hamgraph.data.registry import DATASETS, resolve_dataset
from hamgraph.errors import UnknownNameError, UserInputError
from hamgraph.models import resolve_model

log = logging.getLogger(__name__)

__all__ = [
    "COMPARE_COLUMNS",
    "MIN_WELCH_RUNS",
    "NOISE_LEVEL",
    "OPTIMIZERS",
    "PUBLISHED_COLUMNS",
    "compare_cells",
    "list_sources",
    "load_published",
    "normalize_dataset",
    "welch_p",
]

REQUIRED_COLUMNS = (
    "source", "dataset", "model", "optimizer", "mean", "std", "runs", "metric", "split",
    "paper", "table",
)
OPTIONAL_COLUMNS = ("alpha", "beta", "best_table")
PUBLISHED_COLUMNS = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)  # the column order of a loaded table
OPTIMIZERS = ("adam", "ham", "nham")
METRICS = ("accuracy", "rocauc", "ap", "f1")
NOISE_LEVEL = 0.05  # a difference is within noise unless Welch's test rejects at this level
MIN_WELCH_RUNS = 3  # Welch's test only when both sides have at least this many runs
_FLOAT_SLACK = 1e-9  # |delta| <= larger std, up to float rounding of the printed numbers

_PACKAGE_DIR = "published"

# paper spellings -> registry names (display names of the registry are accepted as well)
_DATASET_ALIASES = {
    "computer": "amazon-computer",
    "computers": "amazon-computer",
    "amazon-computers": "amazon-computer",
    "photo": "amazon-photo",
    "cs": "coauthor-cs",
    "physics": "coauthor-physics",
    "ratings": "amazon-ratings",
    "arxiv": "ogbn-arxiv",
    "molhiv": "ogbg-molhiv",
    "molpcba": "ogbg-molpcba",
    "ppa": "ogbg-ppa",
    "code2": "ogbg-code2",
}
_MODEL_ALIASES = {"gatv2": "gat", "graphsage": "sage", "gcn+": "gcnplus", "gcn-plus": "gcnplus"}


# ---------------------------------------------------------------------------------------------
# names


def normalize_dataset(name: str) -> str:
    """A dataset name as papers write it ("Computers", "Coauthor CS", "Cora (public)",
    "ogbg_molhiv") -> its registry name. Raises UnknownNameError listing the registry names.
    """
    text = str(name).strip().lower()
    by_display = {info.display.lower(): info.name for info in DATASETS.values()}
    if text in by_display:
        return by_display[text]
    key = "-".join(text.replace("_", " ").replace("-", " ").split())
    key = _DATASET_ALIASES.get(key, key)
    return resolve_dataset(key).name


def _normalize_model(name: str, task: str) -> str:
    key = str(name).strip().lower()
    return resolve_model(_MODEL_ALIASES.get(key, key), task)


# ---------------------------------------------------------------------------------------------
# loading


def list_sources() -> list[str]:
    """The names of the shipped published tables (e.g. ["ham-paper"]), sorted."""
    folder = resources.files("hamgraph").joinpath(_PACKAGE_DIR)
    if not folder.is_dir():
        return []
    return sorted(
        entry.name.removesuffix(".csv") for entry in folder.iterdir() if entry.name.endswith(".csv")
    )


def load_published(source: str | Path) -> pd.DataFrame:
    """A published table: a shipped name (see `list_sources()`) or the path of a user CSV.

    Returns one row per source x dataset x model x optimizer with the columns
    PUBLISHED_COLUMNS: names normalized to the registry's, mean / std / alpha / beta as floats
    (alpha, beta NaN where not given), runs as int. Raises UnknownNameError for a name that is
    neither shipped nor an existing file, UserInputError naming the file, row and column for a
    malformed table.
    """
    text = str(source).strip()
    shipped = list_sources()
    if text in shipped:
        ref = resources.files("hamgraph").joinpath(_PACKAGE_DIR, f"{text}.csv")
        with resources.as_file(ref) as path:
            return _read_table(Path(path), label=f"{text} ({_PACKAGE_DIR}/{text}.csv)")
    path = Path(text).expanduser()
    if path.is_file():
        return _read_table(path, label=str(path))
    raise UnknownNameError(
        f"unknown published source {text!r}: not a file; shipped sources: "
        f"{', '.join(shipped) or '(none)'}, or give the path of a CSV file with the columns "
        f"{', '.join(REQUIRED_COLUMNS)}"
    )


def _read_table(path: Path, label: str) -> pd.DataFrame:
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserInputError(f"published table {label}: cannot read it as CSV: {exc}") from None
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        raise UserInputError(
            f"published table {label}: missing column(s) {', '.join(map(repr, missing))} "
            f"(needs {', '.join(REQUIRED_COLUMNS)}; optional {', '.join(OPTIONAL_COLUMNS)})"
        )
    if raw.empty:
        raise UserInputError(f"published table {label}: no rows")
    for column in OPTIONAL_COLUMNS:
        if column not in raw.columns:
            raw[column] = ""
    rows = [_parse_row(record, label, i + 2) for i, record in enumerate(raw.to_dict("records"))]
    table = pd.DataFrame(rows, columns=list(PUBLISHED_COLUMNS))
    key = ["source", "dataset", "model", "optimizer", "metric"]
    dup = table.duplicated(key, keep=False)
    if dup.any():
        lines = [i + 2 for i in np.flatnonzero(dup.to_numpy())]
        raise UserInputError(
            f"published table {label}: rows {', '.join(map(str, lines))} repeat the same "
            f"{' x '.join(key)}"
        )
    if (table["mean"] <= 1.0).all() and (table["mean"] > 0).any():
        log.warning("published table %s: every mean is <= 1; the format wants values x100", label)
    return table


def _parse_row(record: dict[str, str], label: str, line: int) -> dict[str, object]:
    def bad(column: str, why: str) -> UserInputError:
        value = record.get(column, "")
        return UserInputError(
            f"published table {label}, line {line}, column {column!r}: {why} (got {value!r})"
        )

    def text(column: str) -> str:
        value = str(record.get(column, "")).strip()
        if not value:
            raise bad(column, "empty; every row must name it")
        return value

    def number(column: str, required: bool = True) -> float:
        value = str(record.get(column, "")).strip()
        if not value and not required:
            return math.nan
        try:
            result = float(value)
        except ValueError:
            raise bad(column, "not a number") from None
        if not math.isfinite(result):
            raise bad(column, "not a finite number")
        return result

    try:
        dataset = normalize_dataset(text("dataset"))
    except UnknownNameError as exc:
        raise bad("dataset", str(exc)) from None
    task = resolve_dataset(dataset).task
    try:
        model = _normalize_model(text("model"), task)
    except UnknownNameError as exc:
        raise bad("model", str(exc)) from None
    optimizer = text("optimizer").lower()
    if optimizer not in OPTIMIZERS:
        raise bad("optimizer", f"valid names: {', '.join(OPTIMIZERS)}")
    metric = text("metric").lower()
    if metric not in METRICS:
        raise bad("metric", f"valid names: {', '.join(METRICS)}")
    mean, std = number("mean"), number("std")
    if std < 0:
        raise bad("std", "must be >= 0")
    runs = number("runs")
    if runs < 1 or runs != int(runs):
        raise bad("runs", "must be a whole number >= 1")
    alpha, beta = number("alpha", required=False), number("beta", required=False)
    if math.isnan(alpha) != math.isnan(beta):
        raise bad("beta" if math.isnan(beta) else "alpha", "give alpha and beta together")
    if not math.isnan(alpha):
        if optimizer == "adam":
            raise bad("alpha", "an adam row has no (alpha, beta)")
        if (optimizer == "ham") != (alpha > 0):
            raise bad("alpha", f"{optimizer} needs alpha {'> 0' if optimizer == 'ham' else '< 0'}")
    return {
        "source": text("source"),
        "dataset": dataset,
        "model": model,
        "optimizer": optimizer,
        "mean": mean,
        "std": std,
        "runs": int(runs),
        "metric": metric,
        "split": text("split"),
        "paper": text("paper"),
        "table": text("table"),
        "alpha": alpha,
        "beta": beta,
        "best_table": str(record.get("best_table", "")).strip(),
    }


# ---------------------------------------------------------------------------------------------
# comparison

OURS_REQUIRED = ("dataset", "model", "optimizer", "mean", "std", "n")
OURS_OPTIONAL = ("values", "alpha", "beta", "metric")

COMPARE_COLUMNS = (
    "dataset", "model", "optimizer",
    "ours_mean", "ours_std", "ours_n",
    "published_mean", "published_std", "published_runs",
    "delta", "within_noise", "welch_p", "has_published",
    "ours_alpha", "ours_beta", "published_alpha", "published_beta", "same_best",
    "published_metric", "published_split", "source", "paper", "table", "best_table",
)


def _ours_stats(row: pd.Series) -> tuple[float, float, int]:
    """(mean, sample std, n) of our cell: from its per-run values when given."""
    values = row.get("values")
    if isinstance(values, (Sequence, np.ndarray)) and not isinstance(values, str):
        arr = np.asarray(values, dtype=float)
        arr = arr[np.isfinite(arr)]
        if arr.size:
            std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
            return float(arr.mean()), std, int(arr.size)
    n = row["n"]
    return float(row["mean"]), float(row["std"]), int(n) if pd.notna(n) else 0


def welch_p(
    mean_a: float, std_a: float, n_a: int, mean_b: float, std_b: float, n_b: int
) -> float:
    """Two-sided p of Welch's t-test from summary statistics (sample std); NaN unless both
    sides have >= MIN_WELCH_RUNS runs and a positive pooled variance.
    """
    if n_a < MIN_WELCH_RUNS or n_b < MIN_WELCH_RUNS:
        return math.nan
    if not (math.isfinite(std_a) and math.isfinite(std_b)) or std_a**2 / n_a + std_b**2 / n_b <= 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ttest_ind_from_stats(
            mean_a, std_a, n_a, mean_b, std_b, n_b, equal_var=False
        )
    return float(result.pvalue)


def compare_cells(
    ours: pd.DataFrame,
    published: pd.DataFrame,
    level: float = NOISE_LEVEL,
    dataset_map: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Our cells beside the published ones; one output row per row of `ours`, in its order.

    `ours`: one row per (dataset, model, optimizer) with `mean`, `std` (sample std) and `n`
    (runs), all metrics x100; optionally `values` (the per-run test metrics x100; then mean,
    std and n are taken from them), `alpha`, `beta` (our best) and `metric` (then a published
    row counts only if its metric is the same). Names as in the registry; optimizer adam | ham |
    nham. `published`: a table from `load_published` (one source: several rows for one cell
    raise ValueError). `dataset_map` (ours -> published dataset name, e.g. {"cora-public":
    "cora"}) compares a cell with a published row of another dataset on purpose; the output
    keeps our name and shows the published row's `published_split`.

    Output columns COMPARE_COLUMNS. `delta` = ours - published. `within_noise` (nullable
    boolean): |delta| <= the larger of the two stds and, where both sides have >= 3 runs, Welch's
    t-test (`welch_p`, from summary statistics: the published side has no per-run values) does
    not reject at `level`. `same_best` (nullable boolean): our (alpha, beta) equals the
    published best. A cell the source does not have gets NaN / <NA> in every published column,
    `has_published` False: no number is made up.
    """
    missing = [c for c in OURS_REQUIRED if c not in ours.columns]
    if missing:
        raise ValueError(f"compare_cells: `ours` lacks column(s) {', '.join(missing)}")
    has_metric = "metric" in ours.columns
    key_cols = ["dataset", "model", "optimizer", *(["metric"] if has_metric else [])]
    pub = published.copy()
    for column in ("dataset", "model", "optimizer", "metric"):
        pub[column] = pub[column].astype(str).str.strip().str.lower()
    dup = pub.duplicated(key_cols, keep=False)
    if dup.any():
        cells = sorted({" x ".join(map(str, r)) for r in pub.loc[dup, key_cols].to_numpy()})
        raise ValueError(
            f"compare_cells: the published table has several rows for {', '.join(cells[:3])}"
            f"{' ...' if len(cells) > 3 else ''}; compare one source at a time"
        )
    lookup = {tuple(r[c] for c in key_cols): r for r in pub.to_dict("records")}

    rows = []
    for _, row in ours.iterrows():
        key = tuple(str(row[c]).strip().lower() for c in key_cols)
        mean, std, n = _ours_stats(row)
        out: dict[str, object] = dict(zip(["dataset", "model", "optimizer"], key[:3], strict=True))
        if dataset_map and key[0] in dataset_map:
            key = (str(dataset_map[key[0]]).strip().lower(), *key[1:])
        out.update(ours_mean=mean, ours_std=std, ours_n=n)
        out["ours_alpha"] = float(row["alpha"]) if pd.notna(row.get("alpha", np.nan)) else np.nan
        out["ours_beta"] = float(row["beta"]) if pd.notna(row.get("beta", np.nan)) else np.nan
        hit = lookup.get(key)
        if hit is None:
            out.update(has_published=False, within_noise=pd.NA, same_best=pd.NA)
            rows.append(out)
            continue
        p_mean, p_std, p_runs = float(hit["mean"]), float(hit["std"]), int(hit["runs"])
        delta = mean - p_mean
        larger = max((s for s in (std, p_std) if math.isfinite(s)), default=0.0)
        p_value = welch_p(mean, std, n, p_mean, p_std, p_runs)
        within = abs(delta) <= larger + _FLOAT_SLACK and not (p_value < level)
        p_alpha = float(hit.get("alpha", np.nan))
        p_beta = float(hit.get("beta", np.nan))
        best = (out["ours_alpha"], out["ours_beta"], p_alpha, p_beta)
        comparable = not any(math.isnan(float(v)) for v in best)
        same = (
            math.isclose(out["ours_alpha"], p_alpha) and math.isclose(out["ours_beta"], p_beta)
            if comparable
            else pd.NA
        )
        out.update(
            published_mean=p_mean,
            published_std=p_std,
            published_runs=p_runs,
            delta=delta,
            within_noise=bool(within),
            welch_p=p_value,
            has_published=True,
            published_alpha=p_alpha,
            published_beta=p_beta,
            same_best=same,
            published_metric=hit["metric"],
            published_split=hit["split"],
            source=hit["source"],
            paper=hit["paper"],
            table=hit["table"],
            best_table=hit.get("best_table", "") or "",
        )
        rows.append(out)
    result = pd.DataFrame(rows, columns=list(COMPARE_COLUMNS))
    for column in ("within_noise", "same_best"):
        result[column] = result[column].astype("boolean")
    result["has_published"] = result["has_published"].astype(bool)
    result["ours_n"] = result["ours_n"].astype(int)
    result["published_runs"] = result["published_runs"].astype("Int64")
    for column in (
        "ours_mean", "ours_std", "published_mean", "published_std", "delta", "welch_p",
        "ours_alpha", "ours_beta", "published_alpha", "published_beta",
    ):
        result[column] = result[column].astype(float)
    return result
