"""Published tables (hamgraph/published/*.csv), their loader, and compare_cells.

The shipped HAM-paper table is checked number by number against the transcription of the
paper in ../shared/published/ham-paper-iclr2026.md (Tables 12-18) and the paper's best
(alpha, beta) in ../shared/REFERENCE.md §1 (Tables 13, 16, 19): the markdown is parsed here.
"""

from __future__ import annotations

import math
import os
import re
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hamgraph.compare import (
    COMPARE_COLUMNS,
    PUBLISHED_COLUMNS,
    compare_cells,
    list_sources,
    load_published,
    normalize_dataset,
    welch_p,
)
from hamgraph.data.paths import MIRROR_ENV
from hamgraph.data.registry import resolve_dataset
from hamgraph.errors import UnknownNameError, UserInputError
from hamgraph.presets import paper_best

REPO = Path(__file__).resolve().parents[1]
PAPER_MD = Path("published") / "ham-paper-iclr2026.md"


def _shared_dir() -> Path:
    """../shared (next to the repo; CI's $HAMGRAPH_MIRROR is ../shared/datasets)."""
    candidates = [REPO.parent / "shared"]
    if os.environ.get(MIRROR_ENV):
        candidates.insert(0, Path(os.environ[MIRROR_ENV]).resolve().parent)
    for path in candidates:
        if (path / PAPER_MD).is_file() and (path / "REFERENCE.md").is_file():
            return path
    pytest.skip(f"no {PAPER_MD} and REFERENCE.md next to the repo (../shared)")


# ---------------------------------------------------------------------------------------------
# parsing the markdown transcription


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _md_tables(text: str) -> list[list[list[str]]]:
    """Every markdown table of `text` as rows of cells (the |---| separator dropped)."""
    tables, current = [], []
    for line in [*text.splitlines(), ""]:
        if line.strip().startswith("|"):
            if not re.fullmatch(r"\|?\s*(:?-+:?\s*\|\s*)+:?-*:?\s*\|?", line.strip()):
                current.append(_cells(line))
        elif current:
            tables.append(current)
            current = []
    return tables


def _sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## ", text, flags=re.M)
    return {part.splitlines()[0].strip(): part for part in parts[1:]}


def _mean_std(cell: str) -> tuple[float, float]:
    mean, std = cell.split("±")
    return float(mean), float(std)


_METRIC_WORDS = {
    "Accuracy": "accuracy", "Avg. Precision": "ap", "AUROC": "rocauc", "F1 score": "f1",
}


def _expected_rows(shared: Path) -> dict[tuple[str, str, str], dict]:
    """(dataset, model, optimizer) -> the row the shipped CSV must hold, from the two files."""
    text = (shared / PAPER_MD).read_text()
    sections = _sections(text)
    graph_runs = int(re.search(r"(\d+) seeds", text).group(1))
    expected: dict[tuple[str, str, str], dict] = {}

    # Table 12 (means) + Table 13 (best alpha, beta) for graph classification
    (t12,) = _md_tables(sections[next(s for s in sections if s.startswith("Table 12"))])
    (t13,) = _md_tables(sections[next(s for s in sections if s.startswith("Table 13"))])
    datasets = t12[0][1:]
    metric_row = next(row for row in t12 if row[0] == "Metric")
    best = {row[0]: row[1:] for row in t13}
    for label, optimizer in (("GCN", "adam"), ("GCN + HAM", "ham")):
        row = next(r for r in t12 if r[0] == label)
        for i, dataset in enumerate(datasets):
            mean, std = _mean_std(row[1 + i])
            metric = _METRIC_WORDS[metric_row[1 + i].rstrip(" ↑").strip()]
            alpha, beta = (
                (float(best["α"][i]), float(best["β"][i])) if optimizer == "ham" else (None, None)
            )
            expected[(dataset, "gcnplus", optimizer)] = dict(
                mean=mean, std=std, runs=graph_runs, metric=metric, table="Table 12",
                alpha=alpha, beta=beta, best_table="Table 13" if optimizer == "ham" else "",
            )

    # REFERENCE §1: best (alpha, beta) of node classification, HAM (Table 16), nHAM (Table 19)
    ref = (shared / "REFERENCE.md").read_text()
    section1 = ref.split("\n## 1.", 1)[1].split("\n## 2.", 1)[0]
    ham_text = section1.split("alpha > 0 (alpha, beta):", 1)[1]
    nham_text = ham_text.split("alpha < 0 (nHAM):", 1)[1]
    best_node: dict[tuple[str, str, str], tuple[float, float]] = {}
    for kind, chunk in (("ham", ham_text), ("nham", nham_text)):
        table = _md_tables(chunk)[0]
        models = [m.lower() for m in table[0][1:]]
        for row in table[1:]:
            for model, cell in zip(models, row[1:], strict=True):
                a, b = (float(v) for v in cell.split(","))
                best_node[(row[0], model, kind)] = (a, b)
    assert len(best_node) == 2 * 13 * 3

    # Tables 14 + 17 (homophilic) and 15 + 18 (heterophilic)
    for title in (s for s in sections if s.startswith("Tables ")):
        numbers = re.findall(r"\d+", title.split(":")[0])
        main_table, nham_table = (f"Table {n}" for n in numbers)
        (table,) = _md_tables(sections[title])
        datasets = table[0][1:]
        for row in table[1:]:
            model, _, variant = row[0].partition("+")
            optimizer = {"": "adam", "HAM": "ham", "nHAM": "nham"}[variant]
            for dataset, cell in zip(datasets, row[1:], strict=True):
                mean, std = _mean_std(cell)
                info = resolve_dataset(dataset)
                alpha, beta = best_node.get((dataset, model.lower(), optimizer), (None, None))
                expected[(dataset, model.lower(), optimizer)] = dict(
                    mean=mean, std=std, runs=info.runs, metric=info.metric,
                    table=nham_table if optimizer == "nham" else main_table,
                    alpha=alpha, beta=beta,
                    best_table={"adam": "", "ham": "Table 16", "nham": "Table 19"}[optimizer],
                )
    return expected


# ---------------------------------------------------------------------------------------------
# the shipped table


def test_ham_paper_table_matches_the_paper_transcription() -> None:
    expected = _expected_rows(_shared_dir())
    table = load_published("ham-paper")
    assert len(expected) == 8 + 9 * 8 + 9 * 5  # Table 12: 2 x 4; node: 9 rows x 13 datasets
    got = {(r.dataset, r.model, r.optimizer): r for r in table.itertuples()}
    assert set(got) == set(expected), "rows missing or extra"
    for key, want in expected.items():
        row = got[key]
        assert (row.mean, row.std, row.runs, row.metric) == (
            want["mean"], want["std"], want["runs"], want["metric"]
        ), key
        assert row.table == want["table"] and row.best_table == want["best_table"], key
        if want["alpha"] is None:
            assert math.isnan(row.alpha) and math.isnan(row.beta), key
        else:
            assert (row.alpha, row.beta) == (want["alpha"], want["beta"]), key
        assert row.split == resolve_dataset(row.dataset).split, key


def test_every_row_names_its_source_and_table() -> None:
    table = load_published("ham-paper")
    assert list(table.columns) == list(PUBLISHED_COLUMNS)
    assert (table["source"] == "ham-paper").all()
    assert table["paper"].str.contains("Hyperbolic Aware Minimization").all()
    assert table["paper"].str.contains("ICLR 2026").all()
    assert table["table"].str.fullmatch(r"Table \d+").all()
    tuned = table["optimizer"] != "adam"
    assert table.loc[tuned, "best_table"].str.fullmatch(r"Table \d+").all()
    assert table.loc[tuned, ["alpha", "beta"]].notna().all().all()
    assert (table.loc[table["optimizer"] == "ham", "alpha"] > 0).all()
    assert (table.loc[table["optimizer"] == "nham", "alpha"] < 0).all()


def test_published_best_agrees_with_the_paper_best_presets() -> None:
    table = load_published("ham-paper")
    for row in table[table["optimizer"] != "adam"].itertuples():
        assert paper_best(row.dataset, row.model, row.optimizer) == (row.alpha, row.beta)


def test_shipped_sources_are_package_data() -> None:
    assert "ham-paper" in list_sources()
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["hamgraph"]
    for name in list_sources():
        assert any(fnmatch(f"published/{name}.csv", p) for p in patterns), name


# ---------------------------------------------------------------------------------------------
# user tables

_HEADER = "source,dataset,model,optimizer,mean,std,runs,metric,split,paper,table"


def _write(tmp_path: Path, lines: list[str], header: str = _HEADER) -> Path:
    path = tmp_path / "mine.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_user_csv_maps_paper_names_to_the_registry(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        [
            "me,Computers,GATv2,adam,83.1,0.5,3,accuracy,random-60/20/20,my paper,Table 1",
            "me,Coauthor CS,GraphSAGE,ADAM,95.0,0.1,3,accuracy,random-60/20/20,my paper,Table 1",
            "me,molhiv,GCN+,adam,80.0,1.0,2,rocauc,ogb-official,my paper,Table 2",
            "me,Cora (public),gcn,adam,81.5,0.5,10,accuracy,public,my paper,Table 3",
        ],
    )
    table = load_published(str(path))
    assert table[["dataset", "model", "optimizer"]].values.tolist() == [
        ["amazon-computer", "gat", "adam"],
        ["coauthor-cs", "sage", "adam"],
        ["ogbg-molhiv", "gcnplus", "adam"],
        ["cora-public", "gcn", "adam"],
    ]
    assert table["alpha"].isna().all() and (table["best_table"] == "").all()
    assert normalize_dataset("amazon_ratings") == "amazon-ratings"


@pytest.mark.parametrize(
    ("line", "column", "why"),
    [
        ("me,cora,gcn,adam,abc,0.5,5,accuracy,s,p,t", "mean", "not a number"),
        ("me,cora,gcn,adam,81,-1,5,accuracy,s,p,t", "std", ">= 0"),
        ("me,cora,gcn,adam,81,0.5,2.5,accuracy,s,p,t", "runs", "whole number"),
        ("me,coraa,gcn,adam,81,0.5,5,accuracy,s,p,t", "dataset", "valid names"),
        ("me,cora,gcnplus,adam,81,0.5,5,accuracy,s,p,t", "model", "valid names: gcn"),
        ("me,cora,gcn,sgd,81,0.5,5,accuracy,s,p,t", "optimizer", "adam, ham, nham"),
        ("me,cora,gcn,adam,81,0.5,5,auc,s,p,t", "metric", "valid names"),
        ("me,cora,gcn,adam,81,0.5,5,accuracy,s,p,", "table", "every row must name it"),
        ("me,cora,gcn,adam,81,0.5,5,accuracy,s,,t", "paper", "every row must name it"),
        (",cora,gcn,adam,81,0.5,5,accuracy,s,p,t", "source", "every row must name it"),
    ],
)
def test_bad_user_rows_name_file_line_and_column(
    tmp_path: Path, line: str, column: str, why: str
) -> None:
    path = _write(tmp_path, ["me,cora,gcn,ham,81,0.5,5,accuracy,s,p,t", line])
    with pytest.raises(UserInputError, match=re.escape(str(path))) as info:
        load_published(path)
    assert f"line 3, column {column!r}" in str(info.value) and why in str(info.value)


def test_bad_alpha_beta(tmp_path: Path) -> None:
    header = _HEADER + ",alpha,beta"
    cases = [
        ("me,cora,gcn,nham,81,0.5,5,accuracy,s,p,t,10,0.1", "'alpha': nham needs alpha < 0"),
        ("me,cora,gcn,ham,81,0.5,5,accuracy,s,p,t,10,", "'beta': give alpha and beta together"),
        ("me,cora,gcn,adam,81,0.5,5,accuracy,s,p,t,10,0", "an adam row has no"),
    ]
    for line, message in cases:
        with pytest.raises(UserInputError, match=re.escape(message)):
            load_published(_write(tmp_path, [line], header))
    line = "me,cora,gcn,nham,81,0.5,5,accuracy,s,p,t,-10,0"
    ok = load_published(_write(tmp_path, [line], header))
    assert (ok.loc[0, "alpha"], ok.loc[0, "beta"]) == (-10.0, 0.0)


def test_missing_column_duplicates_and_unknown_source(tmp_path: Path) -> None:
    header = _HEADER.replace(",std", "")
    path = _write(tmp_path, ["me,cora,gcn,adam,81,5,accuracy,s,p,t"], header)
    with pytest.raises(UserInputError, match=rf"{re.escape(str(path))}: missing column.*'std'"):
        load_published(path)
    row = "me,cora,gcn,adam,81,0.5,5,accuracy,s,p,t"
    with pytest.raises(UserInputError, match="rows 2, 3 repeat"):
        load_published(_write(tmp_path, [row, row.replace("81", "82")]))
    with pytest.raises(UserInputError, match="no rows"):
        load_published(_write(tmp_path, []))
    with pytest.raises(UnknownNameError, match=r"shipped sources: .*ham-paper"):
        load_published("no-such-paper")
    with pytest.raises(UnknownNameError, match="not a file"):
        load_published(tmp_path / "missing.csv")


# ---------------------------------------------------------------------------------------------
# compare_cells


def _published(*rows: tuple) -> pd.DataFrame:
    """Published rows (dataset, model, optimizer, mean, std, runs[, alpha, beta, metric])."""
    records = []
    for row in rows:
        dataset, model, optimizer, mean, std, runs, *rest = row
        alpha, beta, metric = (*rest, "accuracy")[:3] if rest else (np.nan, np.nan, "accuracy")
        records.append(
            dict(source="src", dataset=dataset, model=model, optimizer=optimizer, mean=mean,
                 std=std, runs=runs, metric=metric, split="s", paper="p", table="Table 1",
                 alpha=alpha, beta=beta, best_table="")
        )
    return pd.DataFrame(records, columns=list(PUBLISHED_COLUMNS))


def _ours(*rows: dict) -> pd.DataFrame:
    cell = {"dataset": "cora", "model": "gcn", "optimizer": "adam"}
    return pd.DataFrame([{**cell, **r} for r in rows])


def test_delta_and_welch_match_the_textbook_formula() -> None:
    pub = _published(("cora", "gcn", "adam", 81.32, 0.30, 5))
    out = compare_cells(_ours(dict(mean=81.0, std=0.5, n=5)), pub)
    assert list(out.columns) == list(COMPARE_COLUMNS)
    row = out.iloc[0]
    assert row["delta"] == pytest.approx(-0.32)
    # Welch: t = d / sqrt(s1^2/n1 + s2^2/n2), Welch-Satterthwaite degrees of freedom
    va, vb = 0.5**2 / 5, 0.30**2 / 5
    t = -0.32 / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 4)
    assert row["welch_p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert out["within_noise"].tolist() == [True]
    assert bool(row["has_published"]) and row["published_runs"] == 5


def test_per_run_values_give_the_two_sample_welch_test() -> None:
    a = [80.1, 81.4, 80.9, 79.8, 81.0]
    b = [82.0, 81.2, 82.5, 81.9]
    pub = _published(("cora", "gcn", "adam", float(np.mean(b)), float(np.std(b, ddof=1)), 4))
    # the summary columns are ignored when per-run values are given
    out = compare_cells(_ours(dict(mean=0.0, std=0.0, n=1, values=a)), pub).iloc[0]
    expected = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert out["welch_p"] == pytest.approx(expected, rel=1e-9)
    assert (out["ours_mean"], out["ours_n"]) == (pytest.approx(np.mean(a)), 5)
    assert out["ours_std"] == pytest.approx(np.std(a, ddof=1))
    assert welch_p(1.0, 1.0, 2, 1.0, 1.0, 5) != welch_p(1.0, 1.0, 2, 1.0, 1.0, 5)  # NaN: 2 runs


def test_within_noise_needs_small_delta_and_no_welch_rejection() -> None:
    pub = _published(
        ("cora", "gcn", "adam", 81.0, 1.0, 100),
        ("cora", "gcn", "ham", 81.0, 0.3, 5),
        ("cora", "gat", "adam", 81.0, 0.3, 2),
        ("cora", "sage", "adam", 81.32, 0.12, 5),
    )
    ours = pd.DataFrame(
        [
            # |delta| 0.5 <= std 1.0, but 100 runs each: Welch rejects (p ~ 5e-4)
            dict(dataset="cora", model="gcn", optimizer="adam", mean=81.5, std=1.0, n=100),
            # |delta| 0.6 > larger std 0.4
            dict(dataset="cora", model="gcn", optimizer="ham", mean=81.6, std=0.4, n=5),
            # 2 published runs: no Welch test, |delta| 0.2 <= 0.3 decides
            dict(dataset="cora", model="gat", optimizer="adam", mean=81.2, std=0.1, n=5),
            # |delta| equal to the larger std, up to float rounding: within
            dict(dataset="cora", model="sage", optimizer="adam", mean=81.44, std=0.05, n=5),
        ]
    )
    out = compare_cells(ours, pub)
    assert out["welch_p"].iloc[0] < 0.01
    assert out["within_noise"].tolist() == [False, False, True, True]
    assert math.isnan(out["welch_p"].iloc[2]) and not math.isnan(out["welch_p"].iloc[3])


def test_cells_without_published_value_get_nothing_made_up() -> None:
    pub = _published(("cora", "gcn", "adam", 81.32, 0.30, 5))
    ours = pd.DataFrame(
        [
            dict(dataset="cora-public", model="gcn", optimizer="adam", mean=81.5, std=0.5, n=5),
            dict(dataset="cora", model="gcn", optimizer="adam", mean=81.0, std=0.5, n=5),
            dict(dataset="cora", model="gcn", optimizer="nham", mean=81.0, std=0.5, n=5),
        ]
    )
    out = compare_cells(ours, pub)
    assert out["dataset"].tolist() == ["cora-public", "cora", "cora"], "our order kept"
    assert out["has_published"].tolist() == [False, True, False]
    for i in (0, 2):
        row = out.iloc[i]
        assert pd.isna(row["within_noise"]) and pd.isna(row["same_best"])
        for column in ("published_mean", "published_std", "published_runs", "delta", "welch_p"):
            assert pd.isna(row[column]), column
    assert out["within_noise"].dtype == "boolean"
    # on purpose: our public-split cell beside the paper's cell of the base dataset
    mapped = compare_cells(ours, pub, dataset_map={"cora-public": "cora"})
    assert mapped["dataset"].iloc[0] == "cora-public"
    assert mapped["published_mean"].iloc[0] == 81.32 and mapped["published_split"].iloc[0] == "s"
    assert mapped["delta"].iloc[0] == pytest.approx(81.5 - 81.32)


def test_best_alpha_beta_beside_the_published_best() -> None:
    table = load_published("ham-paper")
    ours = pd.DataFrame(
        [
            dict(dataset="cora", model="gcn", optimizer="ham", mean=81.4, std=0.4, n=5,
                 alpha=200.0, beta=0.1),
            dict(dataset="citeseer", model="gat", optimizer="ham", mean=68.9, std=0.3, n=5,
                 alpha=10.0, beta=0.01),
            dict(dataset="cora", model="gcn", optimizer="adam", mean=81.3, std=0.3, n=5),
        ]
    )
    out = compare_cells(ours, table)
    assert out["published_alpha"].tolist()[:2] == [200.0, 10.0]
    assert out["published_beta"].tolist()[:2] == [0.1, 0.0]
    assert out["same_best"].tolist()[:2] == [True, False] and pd.isna(out["same_best"].iloc[2])
    assert out["table"].tolist() == ["Table 14", "Table 14", "Table 14"]
    assert out["best_table"].tolist()[:2] == ["Table 16", "Table 16"]


def test_metric_must_match_when_ours_states_it() -> None:
    table = load_published("ham-paper")  # minesweeper is scored by ROC-AUC
    ours = pd.DataFrame(
        [
            dict(dataset="minesweeper", model="gcn", optimizer="adam", mean=90.0, std=1.0, n=3,
                 metric=m)
            for m in ("accuracy", "rocauc")
        ]
    )
    out = compare_cells(ours, table)
    assert out["has_published"].tolist() == [False, True]
    assert out["published_mean"].iloc[1] == 97.46


def test_compare_rejects_ambiguous_published_and_incomplete_ours() -> None:
    pub = _published(("cora", "gcn", "adam", 81.0, 1.0, 5), ("cora", "gcn", "adam", 80.0, 1.0, 5))
    with pytest.raises(ValueError, match="several rows for cora x gcn x adam"):
        compare_cells(_ours(dict(mean=81.0, std=0.5, n=5)), pub)
    with pytest.raises(ValueError, match=r"lacks column.*std"):
        compare_cells(_ours(dict(mean=1.0, n=1)), pub)
