"""`hamgraph report`: numbers, selection, marks, notes, bad input, LaTeX / Markdown / HTML shape."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_report_factory import cell_rows, run_row, write_results

from hamgraph import plots
from hamgraph.cli import main as cli_main
from hamgraph.errors import UserInputError
from hamgraph.report import MIN_PAIRS, write_report

CORA_ADAM = ([0.80, 0.81, 0.79, 0.80, 0.82], [0.791, 0.802, 0.783, 0.795, 0.811])
# Best mean validation (selected): alpha 200, beta 0.1. Best test: alpha 10, beta 0 (not selected).
CORA_HAM_BEST_VAL = ([0.86, 0.85, 0.86, 0.87, 0.86], [0.821, 0.815, 0.826, 0.83, 0.819])
CORA_HAM_BEST_TEST = ([0.80, 0.80, 0.81, 0.80, 0.80], [0.90, 0.91, 0.90, 0.92, 0.90])


def _rows() -> list[dict]:
    rows = cell_rows("cora", "gcn", "adam", *CORA_ADAM)
    rows += cell_rows("cora", "gcn", "ham", *CORA_HAM_BEST_VAL, alpha=200, beta=0.1)
    rows += cell_rows("cora", "gcn", "ham", *CORA_HAM_BEST_TEST, alpha=10, beta=0.0)
    # nHAM: only 2 runs -> partial and too few pairs for the test.
    rows += cell_rows("cora", "gcn", "nham", [0.83, 0.84], [0.80, 0.81], alpha=-10, beta=0.01)
    # citeseer: only the baseline -> GCN+HAM cell missing.
    rows += cell_rows("citeseer", "gcn", "adam", [0.7] * 5, [0.69, 0.7, 0.71, 0.7, 0.7])
    # squirrel (heterophilic, 10 runs): GAT with a tie at 2 decimals between Adam and nHAM.
    tests = [0.40, 0.41, 0.42, 0.43, 0.44, 0.40, 0.41, 0.42, 0.43, 0.44]
    rows += cell_rows("squirrel", "gat", "adam", [0.5] * 10, tests)
    tied = [t + (1e-7 if i % 2 else -1e-7) for i, t in enumerate(tests)]  # mean equal to 1e-8
    rows += cell_rows("squirrel", "gat", "nham", [0.51] * 10, tied, alpha=-200, beta=0.0)
    rows += cell_rows("squirrel", "gat", "ham", [0.49] * 10, [t - 0.05 for t in tests], 1, 0.1)
    return rows


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Table tests do not need figures (faster); plots have their own tests."""
    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)


@pytest.fixture
def report(tmp_path: Path, no_plots: None) -> Path:
    root = write_results(tmp_path / "res", _rows(), histories=False)
    assert write_report([root], ["csv", "latex", "md"], None) == 0
    return root / "report"


def _main(report: Path) -> pd.DataFrame:
    return pd.read_csv(report / "main.csv", keep_default_na=False, na_values=[""])


def _row(main: pd.DataFrame, dataset: str, row: str) -> pd.Series:
    found = main[(main["dataset"] == dataset) & (main["row"] == row)]
    assert len(found) == 1, (dataset, row, main[["dataset", "row"]])
    return found.iloc[0]


def test_files_written(report: Path) -> None:
    for name in ("main", "best_params"):
        for ext in ("csv", "tex", "md"):
            assert (report / f"{name}.{ext}").stat().st_size > 0
    assert (report / "report.html").is_file()
    assert not list(report.rglob("*.tmp"))


def test_mean_std_match_pandas(report: Path) -> None:
    main = _main(report)
    adam = _row(main, "cora", "GCN")
    expected = pd.Series(CORA_ADAM[1]) * 100
    assert adam["mean"] == pytest.approx(expected.mean(), rel=1e-5)
    assert adam["std"] == pytest.approx(expected.std(ddof=1), rel=1e-5)
    assert adam["n"] == 5 and adam["expected"] == 5 and adam["failed"] == 0
    shown = f"{expected.mean():.2f} ± {expected.std(ddof=1):.2f}"
    assert shown in (report / "main.md").read_text()


def test_ham_selected_by_best_mean_validation_not_test(report: Path) -> None:
    main = _main(report)
    ham = _row(main, "cora", "GCN+HAM")
    assert (ham["alpha"], ham["beta"]) == (200, 0.1)
    assert ham["mean"] == pytest.approx(pd.Series(CORA_HAM_BEST_VAL[1]).mean() * 100, rel=1e-5)
    best = pd.read_csv(report / "best_params.csv")
    got = best[(best["dataset"] == "cora") & (best["optimizer"] == "ham")].iloc[0]
    assert (got["alpha"], got["beta"]) == (200, 0.1)
    assert "| Cora | 200, 0.1 | -10, 0.01 |" in (report / "best_params.md").read_text()


def test_bold_best_and_ties_underlined(report: Path) -> None:
    main = _main(report)
    assert bool(_row(main, "cora", "GCN+HAM")["best"])
    assert not bool(_row(main, "cora", "GCN+HAM")["tie"])
    assert not bool(_row(main, "cora", "GCN")["best"])
    # Squirrel GAT: Adam and nHAM tie at two decimals -> both bold and underlined; HAM is not.
    for row in ("GAT", "GAT+nHAM"):
        assert bool(_row(main, "squirrel", row)["best"]) and bool(
            _row(main, "squirrel", row)["tie"]
        )
    assert not bool(_row(main, "squirrel", "GAT+HAM")["best"])
    md = (report / "main.md").read_text()
    assert "| GAT | **<u>42.00 ± 1.49</u>** |" in md
    assert "| GAT+nHAM | **<u>42.00 ± 1.49</u>** |" in md
    assert re.search(r"\| GCN\+HAM \| \*\*82\.\d\d ± \d\.\d\d†\*\* \|", md)
    tex = (report / "main.tex").read_text()
    assert tex.count(r"\underline{42.00 $\pm$ 1.49}") == 2
    assert r"\textbf{" in tex


def test_missing_cell_is_a_dash(report: Path) -> None:
    md = (report / "main.md").read_text()
    assert re.search(r"\| GCN\+HAM \| [^|]+ \| – \|", md), md  # cora value, citeseer missing
    assert "& --" in (report / "main.tex").read_text()


def test_significance_marks(report: Path) -> None:
    main = _main(report)
    ham = _row(main, "cora", "GCN+HAM")
    assert ham["pairs"] == 5 and ham["p_value"] < 0.05 and bool(ham["significant"])
    nham = _row(main, "cora", "GCN+nHAM")
    assert nham["pairs"] == 2 < MIN_PAIRS
    assert pd.isna(nham["p_value"]) and not bool(nham["significant"])
    assert "no significance test (2 paired runs < 3)" in nham["note"]
    tied = _row(main, "squirrel", "GAT+nHAM")
    assert tied["p_value"] > 0.05 and not bool(tied["significant"])
    md = (report / "main.md").read_text()
    nham_line = next(line for line in md.splitlines() if line.startswith("| GCN+nHAM |"))
    assert "†" not in nham_line
    assert "paired t-test (scipy.stats.ttest_rel)" in md


def test_partial_results_are_noted(tmp_path: Path, no_plots: None) -> None:
    rows = cell_rows("cora", "gcn", "adam", *CORA_ADAM)
    failed = run_row(
        "cora", "gcn", "adam", 4, 0, 0, status="failed", reason="TrainingDiverged: nan"
    )
    rows = [*rows[:4], failed]
    root = write_results(tmp_path / "res", rows, histories=False)
    assert write_report([root], ["csv", "md"], None) == 0
    adam = _row(_main(root / "report"), "cora", "GCN")
    assert (adam["n"], adam["expected"], adam["failed"]) == (4, 5, 1)
    assert bool(adam["partial"])
    assert adam["mean"] == pytest.approx(pd.Series(CORA_ADAM[1][:4]).mean() * 100, rel=1e-5)
    md = (root / "report" / "main.md").read_text()
    assert "\\* Cora, GCN: n=4 of 5, 1 failed (TrainingDiverged: nan)" in md
    assert re.search(r"\| GCN \| \d\d\.\d\d ± \d\.\d\d\\\* \|", md)


def test_fewer_runs_than_other_cells_is_noted(report: Path) -> None:
    main = _main(report)
    nham = _row(main, "cora", "GCN+nHAM")
    assert (nham["n"], nham["expected"]) == (2, 5) and bool(nham["partial"])
    assert "n=2 of 5" in nham["note"]


def test_family_split_follows_registry(report: Path) -> None:
    md = (report / "main.md").read_text()
    homo, hetero = md.index("## Homophilic"), md.index("## Heterophilic")
    assert homo < md.index("Cora (acc)") < md.index("CiteSeer (acc)") < hetero
    assert md.index("Squirrel (acc)") > hetero
    assert set(_main(report)["family"]) == {"homophilic", "heterophilic"}


def test_multiple_dirs_concatenated_and_deduplicated(tmp_path: Path, no_plots: None) -> None:
    rows = cell_rows("cora", "gcn", "adam", *CORA_ADAM)
    first = write_results(tmp_path / "a", rows[:3], histories=False)
    second = write_results(tmp_path / "b", rows[2:], histories=False)  # run 2 in both
    out = tmp_path / "out"
    assert write_report([first, second], ["csv"], out) == 0
    adam = _row(_main(out), "cora", "GCN")
    assert adam["n"] == 5
    assert adam["mean"] == pytest.approx(pd.Series(CORA_ADAM[1]).mean() * 100, rel=1e-5)
    assert not (first / "report").exists()


def test_latex_structure(report: Path) -> None:
    for name in ("main.tex", "best_params.tex"):
        tex = (report / name).read_text()
        body = tex.replace(r"\{", "").replace(r"\}", "")
        assert body.count("{") == body.count("}"), name
        assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") >= 1
        for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
            assert rule in tex
        assert tex.count("$") % 2 == 0
    main = (report / "main.tex").read_text()
    assert main.count(r"\begin{tabular}") == 2  # homophilic, heterophilic
    assert re.search(r"\\midrule\nGAT\+HAM", main) is None  # rules only between architectures


def test_latex_escapes_names(tmp_path: Path, no_plots: None) -> None:
    rows = cell_rows("my_data%", "gcn", "adam", [0.5, 0.6], [0.5, 0.6])
    rows += cell_rows("my_data%", "my_model", "adam", [0.5, 0.6], [0.5, 0.6])
    root = write_results(tmp_path / "res", rows, histories=False)
    assert write_report([root], ["latex", "md"], None) == 0
    tex = (root / "report" / "main.tex").read_text()
    assert r"my\_data\%" in tex and r"my\_model" in tex
    assert "my_data%" not in tex and "my_model" not in tex.replace(r"my\_model", "")


def _latex_engine() -> str | None:
    return next((e for e in ("pdflatex", "lualatex", "tectonic") if shutil.which(e)), None)


def test_latex_compiles(report: Path, tmp_path: Path) -> None:
    engine = _latex_engine()
    if engine is None:
        pytest.skip("no TeX engine (pdflatex / lualatex / tectonic) on PATH")
    doc = tmp_path / "doc.tex"
    doc.write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        f"\\input{{{(report / 'main.tex').as_posix()}}}\n"
        f"\\input{{{(report / 'best_params.tex').as_posix()}}}\n\\end{{document}}\n"
    )
    cmd = (
        [engine, doc.name]
        if engine == "tectonic"
        else [engine, "-interaction=nonstopmode", "-halt-on-error", doc.name]
    )
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0


def test_html_has_tables(report: Path) -> None:
    page = (report / "report.html").read_text()
    assert page.count("<table") == 3  # two families + best parameters
    assert "font-weight: bold" in page and "text-decoration: underline" in page
    assert "<sup>†</sup>" in page


# ---- bad input: exit 2, one line, nothing written ----------------------------------------------


def _bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    before = sorted(p for p in tmp_path.rglob("*"))
    assert cli_main(["report", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hamgraph: error: report:") and "\n" not in err, err
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written
    return err


def test_bad_input_no_runs_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert "no runs.csv" in _bad(tmp_path, capsys, str(tmp_path / "empty"))
    assert "not a directory" in _bad(tmp_path, capsys, str(tmp_path / "nope"))


def test_bad_input_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.csv").write_text("")
    assert "empty file" in _bad(tmp_path, capsys, str(tmp_path / "res"))
    write_results(tmp_path / "hdr", [], histories=False)  # header only
    assert "no runs (header only)" in _bad(tmp_path, capsys, str(tmp_path / "hdr"))


def test_bad_input_foreign_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "res").mkdir()
    pd.DataFrame({"epoch": [1, 2], "loss": [0.5, 0.4]}).to_csv(tmp_path / "res" / "runs.csv")
    err = _bad(tmp_path, capsys, str(tmp_path / "res"))
    assert "runs.csv: not a hamgraph runs.csv, missing columns: key, dataset" in err


def test_bad_input_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = cell_rows("cora", "gcn", "adam", [0.8], [0.8])
    rows[0]["optimizer"] = "sgd"
    write_results(tmp_path / "res", rows, histories=False)
    assert "optimizer 'sgd' is not one of adam, ham, nham" in _bad(
        tmp_path, capsys, str(tmp_path / "res")
    )


def test_bad_input_second_path_checked_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = write_results(tmp_path / "good", cell_rows("cora", "gcn", "adam", [0.8], [0.8]))
    err = _bad(tmp_path, capsys, str(good), str(tmp_path / "missing"))
    assert "missing" in err
    assert not (good / "report").exists()


def test_unknown_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_results(tmp_path / "good", cell_rows("cora", "gcn", "adam", [0.8], [0.8]))
    err = _bad(tmp_path, capsys, str(good), "--format", "csv,pdf")
    assert "unknown format 'pdf'; valid: csv, latex, md" in err
    with pytest.raises(UserInputError, match="no output format"):
        write_report([good], [" "], None)


# ---- the real result store and other stages -----------------------------------------------


def test_report_reads_what_the_result_store_writes(tmp_path: Path, no_plots: None) -> None:
    from hamgraph.report import REQUIRED_COLUMNS
    from hamgraph.specs import EpochStats, HamSettings, NodeParams, RunResult, RunSpec
    from hamgraph.store import RUN_COLUMNS, ResultStore

    assert set(REQUIRED_COLUMNS) <= set(RUN_COLUMNS)
    params = NodeParams(lr=1e-3, hidden=8, layers=2, dropout=0.5, weight_decay=0.0, epochs=2)
    store = ResultStore(tmp_path / "res")
    history = [EpochStats(e, 1.0 / e, 0.9, 0.8, 0.7, 1e-3, 3, 0.1) for e in (1, 2)]
    values = {None: [0.70, 0.72, 0.71], HamSettings(200.0, 0.1): [0.75, 0.77, 0.76]}
    for ham, tests in values.items():
        for run, test in enumerate(tests):
            spec = RunSpec("cora", "gcn", params, ham, run=run, seed=run)
            store.add(
                RunResult(spec, "accuracy", "ok", test + 0.05, test, 2, 2, 1.0, history=history)
            )
    failed = RunSpec("cora", "gcn", params, None, run=3, seed=3)
    store.add(
        RunResult(
            failed,
            "accuracy",
            "failed",
            float("nan"),
            float("nan"),
            0,
            1,
            1.0,
            reason="TrainingDiverged: loss is nan",
        )
    )
    assert write_report([tmp_path / "res"], ["csv", "md"], None) == 0
    main = _main(tmp_path / "res" / "report")
    adam, ham = _row(main, "cora", "GCN"), _row(main, "cora", "GCN+HAM")
    assert (adam["n"], adam["failed"], adam["expected"]) == (3, 1, 4)
    assert bool(adam["partial"]) and bool(ham["partial"])  # HAM has no run 3 at all
    assert adam["mean"] == pytest.approx(71.0) and ham["mean"] == pytest.approx(76.0)
    assert (ham["alpha"], ham["beta"]) == (200, 0.1)
    assert "1 failed (TrainingDiverged: loss is nan)" in adam["note"]
    assert "4 runs per cell; the protocol has 5" in adam["note"]


def test_dataset_stats_in_header_when_cached(
    tmp_path: Path, no_plots: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hamgraph.data import catalog

    # what `hamgraph datasets` caches for cora (the real values); citeseer is not cached
    cache = tmp_path / "cache"
    monkeypatch.setenv("HAMGRAPH_DATA", str(cache))
    cora = {"nodes": 2708, "edges_undirected": 5278}
    catalog._write_stats(cache / catalog.STATS_FILE, {"cora": cora})
    rows = cell_rows("cora", "gcn", "adam", [0.8], [0.8])
    rows += cell_rows("citeseer", "gcn", "adam", [0.7], [0.7])
    root = write_results(tmp_path / "res", rows, histories=False)
    assert write_report([root], ["md", "latex"], None) == 0
    md = (root / "report" / "main.md").read_text()
    assert "Cora (acc, 2,708 nodes / 5,278 edges)" in md and "CiteSeer (acc)" in md


def test_fewer_runs_than_the_protocol_is_noted_not_marked(tmp_path: Path, no_plots: None) -> None:
    """A grid with `runs: 2` is complete: no partial mark, but the notes name the protocol."""
    rows = cell_rows("cora", "gcn", "adam", [0.80, 0.81], [0.79, 0.80])
    rows += cell_rows("cora", "gcn", "ham", [0.82, 0.83], [0.81, 0.82], alpha=200, beta=0.1)
    root = write_results(tmp_path / "res", rows, histories=False)
    assert write_report([root], ["csv", "md"], None) == 0
    main = _main(root / "report")
    adam, ham = _row(main, "cora", "GCN"), _row(main, "cora", "GCN+HAM")
    assert (adam["n"], adam["expected"]) == (2, 2) and not bool(adam["partial"])
    assert not bool(ham["partial"])
    md = (root / "report" / "main.md").read_text()
    assert "Cora, GCN: 2 runs per cell; the protocol has 5" in md
    assert "| GCN | 79.50 ± 0.71 |" in md  # no partial mark on the cell
