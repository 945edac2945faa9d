"""`hamgraph report`: numbers, selection, marks, notes, bad input, LaTeX / Markdown / HTML shape,
one row per optimizer setting, the one best rule, --metric, --compare."""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from test_report_factory import VERSION, cell_results, run_result, write_results

from hamgraph.cells import select_best, summarize
from hamgraph.cli import main as cli_main
from hamgraph.errors import UnknownNameError, UserInputError
from hamgraph.report import MIN_PAIRS, ReportOutcome, write_report
from hamgraph.report import figures as plots
from hamgraph.store import ResultStore

cell_rows = cell_results
run_row = run_result

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
    outcome = write_report([root], ["csv", "latex", "md", "html"], None)
    assert isinstance(outcome, ReportOutcome) and outcome.out == root / "report"
    assert (outcome.runs, outcome.failed) == (len(_rows()), 0)
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
    write_report([root], ["csv", "md"], None)
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
    write_report([first, second], ["csv"], out)
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
    write_report([root], ["latex", "md"], None)
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
    root = write_results(tmp_path / "res", cell_rows("cora", "gcn", "adam", [0.8], [0.8]))
    shutil.rmtree(root / "records")  # a runs.csv alone: the store reads it as it is
    text = (root / "runs.csv").read_text()
    (root / "runs.csv").write_text(text.replace(",ok,", ",done,"))
    assert "status 'done' is not one of ok, failed" in _bad(tmp_path, capsys, str(root))
    (root / "runs.csv").write_text(text.replace(",0.8,", ",high,", 1))
    assert "val 'high' is not a number" in _bad(tmp_path, capsys, str(root))


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


def test_store_written_failed_run_and_provenance(tmp_path: Path, no_plots: None) -> None:
    results = cell_rows("cora", "gcn", "adam", [0.75, 0.77, 0.76], [0.70, 0.72, 0.71])
    results += cell_rows("cora", "gcn", "ham", [0.8, 0.82, 0.81], [0.75, 0.77, 0.76], 200, 0.1,
                         device="cuda (NVIDIA H100)")  # fmt: skip
    results.append(run_row("cora", "gcn", "adam", 3, 0, 0, status="failed",
                           reason="TrainingDiverged: loss is nan"))  # fmt: skip
    write_results(tmp_path / "res", results, histories=False)
    write_report([tmp_path / "res"], ["csv", "md"], None)
    main = _main(tmp_path / "res" / "report")
    adam, ham = _row(main, "cora", "GCN"), _row(main, "cora", "GCN+HAM")
    assert (adam["n"], adam["failed"], adam["expected"]) == (3, 1, 4)
    assert bool(adam["partial"]) and bool(ham["partial"])  # HAM has no run 3 at all
    assert adam["mean"] == pytest.approx(71.0) and ham["mean"] == pytest.approx(76.0)
    assert (ham["alpha"], ham["beta"]) == (200, 0.1)
    assert "1 failed (TrainingDiverged: loss is nan)" in adam["note"]
    assert "4 runs per cell; the protocol has 5" in adam["note"]
    # the notes name the hamgraph versions and devices behind each table
    assert (adam["hamgraph_versions"], adam["devices"]) == (VERSION, "cpu")
    md = (tmp_path / "res" / "report" / "main.md").read_text()
    runs = f"hamgraph {VERSION} on cpu: 3 runs; hamgraph {VERSION} on cuda (NVIDIA H100): 3 runs"
    assert f"Runs: {runs}." in md
    assert "Splits: Cora: per-class-20/500/1000 (random split: 20 training nodes" in md


def test_headers_come_from_the_registry_not_the_stats_cache(
    tmp_path: Path, no_plots: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Headers must not depend on whether `hamgraph datasets` ran on this machine before."""
    from hamgraph.data import catalog

    rows = cell_rows("cora", "gcn", "adam", [0.8], [0.8])
    rows += cell_rows("citeseer", "gcn", "adam", [0.7], [0.7])
    root = write_results(tmp_path / "res", rows, histories=False)
    texts = []
    for cached in (False, True):
        cache = tmp_path / f"cache{cached}"
        monkeypatch.setenv("HAMGRAPH_DATA", str(cache))
        if cached:
            catalog._write_stats(
                cache / catalog.STATS_FILE, {"cora": {"nodes": 2708, "edges_undirected": 5278}}
            )
        write_report([root], ["md", "latex"], tmp_path / f"out{cached}")
        texts.append([(tmp_path / f"out{cached}" / n).read_text() for n in ("main.md", "main.tex")])
    assert texts[0] == texts[1]
    assert "| Cora (acc) | CiteSeer (acc) |" in texts[0][0] and "2,708" not in texts[0][0]


# ---- issue #9: one row per optimizer setting, the one best rule, --metric ----------------------


def _ablation_results() -> list:
    """{ham: {alpha: 200, beta: 0.1}}, the same with sign_source: previous, and with
    mask_beta: false: 3 cells x 2 runs = 6 distinct runs."""
    results = []
    for ham, tests in (
        ({}, [0.80, 0.82]),
        ({"sign_source": "previous"}, [0.70, 0.72]),
        ({"mask_beta": False}, [0.60, 0.62]),
    ):
        results += cell_rows("cora", "gcn", "ham", [0.9, 0.9], tests, 200, 0.1, ham=ham)
    return results


def test_ham_settings_are_distinct_rows(
    tmp_path: Path, no_plots: None, caplog: pytest.LogCaptureFixture
) -> None:
    root = write_results(tmp_path / "res", _ablation_results(), histories=False)
    assert len(ResultStore(root).frame()) == 6
    with caplog.at_level(logging.WARNING):
        outcome = write_report([root], ["csv", "md", "latex", "html"], None)
    assert outcome.runs == 6 and "keeping one" not in caplog.text
    main = _main(root / "report")
    assert list(main["row"]) == [
        "GCN+HAM", "GCN+HAM (mask_beta=False)", "GCN+HAM (sign_source=previous)",
    ]  # fmt: skip
    assert list(main["n"]) == [2, 2, 2]
    assert list(main["mean"]) == pytest.approx([81.0, 61.0, 71.0])
    assert set(main["cell"]) == {
        "ham(200, 0.1)", "ham(200, 0.1, mask_beta=False)", "ham(200, 0.1, sign_source=previous)",
    }  # fmt: skip
    md = (root / "report" / "main.md").read_text()
    assert "| GCN+HAM | **81.00 ± 1.41** |" in md
    assert "| GCN+HAM (sign_source=previous) | 71.00 ± 1.41 |" in md
    assert "| GCN+HAM (mask_beta=False) | 61.00 ± 1.41 |" in md
    best = pd.read_csv(root / "report" / "best_params.csv")
    assert sorted(best["method"]) == ["ham", "ham (mask_beta=False)", "ham (sign_source=previous)"]


def test_ham_settings_from_a_real_grid(tmp_path: Path, no_plots: None) -> None:
    """The same three settings trained by `hamgraph run` on the synthetic CSBM graph."""
    from hamgraph.grid import run_grid

    config = tmp_path / "grid.yaml"
    config.write_text(
        "name: ablation\nruns: 2\nepochs: 3\ngrid:\n  dataset: [csbm-h0.8-n200]\n"
        "  model: [gcn]\n  optimizer:\n"
        "    - {ham: {alpha: 200, beta: 0.1}}\n"
        "    - {ham: {alpha: 200, beta: 0.1, sign_source: previous}}\n"
        "    - {ham: {alpha: 200, beta: 0.1, mask_beta: false}}\n"
    )
    outcome = run_grid(config, out=tmp_path / "res", device="cpu")
    assert not outcome.failed
    assert len(ResultStore(tmp_path / "res").frame()) == 6
    write_report([tmp_path / "res"], ["csv"], None)
    main = _main(tmp_path / "res" / "report")
    assert len(main) == 3 and main["row"].is_unique and set(main["n"]) == {2}


def test_best_params_is_the_cell_of_the_one_best_rule_on_a_tie(
    tmp_path: Path, no_plots: None
) -> None:
    """Equal mean validation: the smaller |alpha| wins (cells.select_best), as in best.csv; a
    cell with a failed run is never chosen, even with the best validation and the most runs."""
    rows = cell_rows("cora", "gcn", "ham", [0.85, 0.87], [0.80, 0.80], 200, 0.1)
    rows += cell_rows("cora", "gcn", "ham", [0.86, 0.86], [0.70, 0.70], 10, 0.1)  # same mean val
    rows += cell_rows("cora", "gcn", "ham", [0.99, 0.99, 0.99], [0.9] * 3, 100, 0.0)
    rows.append(run_row("cora", "gcn", "ham", 3, 0, 0, 100, 0.0, status="failed", reason="nan"))
    root = write_results(tmp_path / "res", rows, histories=False)
    expected = select_best(summarize(ResultStore(root).frame()))
    assert (expected["alpha"], expected["beta"]) == (10, 0.1)
    write_report([root], ["csv", "md"], None)
    best = pd.read_csv(root / "report" / "best_params.csv")
    assert len(best) == 1 and (best["alpha"].iloc[0], best["beta"].iloc[0]) == (10, 0.1)
    assert best["cell"].iloc[0] == expected["label"] and bool(best["selected"].iloc[0])
    ham = _row(_main(root / "report"), "cora", "GCN+HAM")
    assert ham["mean"] == pytest.approx(70.0)
    assert "1 of 3 (alpha, beta) cells with failed runs not considered" in ham["note"]


def test_select_best_tie_break_ignores_how_settings_are_spelled() -> None:
    """Equal mean validation, |alpha|, beta and label: the winner is the same whether the
    `settings` text lists the searched setting first (a sweep's best.csv) or sorts by name
    (the report), so best.csv and `hamgraph report` name the same cell."""
    base = {"dataset": "cora", "model": "gcn", "optimizer": "adam", "base": "adam",
            "base_options": "", "alpha": math.nan, "beta": math.nan, "clamp": math.nan,
            "mask_beta": "", "sign_source": "", "plugin_options": "", "metric": "accuracy",
            "test": 0.7, "status": "ok", "higher_is_better": "true"}
    cell_a = '{"dropout": 0.3, "epochs": 5, "lr": 0.01}'
    cell_b = '{"dropout": 0.5, "epochs": 5, "lr": 0.001}'
    runs = pd.DataFrame([{**base, "params": params, "run": run, "val": val}
                         for params in (cell_b, cell_a) for run, val in ((0, 0.8), (1, 0.9))])
    cells = summarize(runs)
    assert cells["val_mean"].nunique() == 1 and cells["label"].nunique() == 1
    by_name = {cell_a: "dropout=0.3, lr=0.01", cell_b: "dropout=0.5, lr=0.001"}
    searched_first = {cell_a: "lr=0.01, dropout=0.3", cell_b: "lr=0.001, dropout=0.5"}
    # the two spellings order the cells the other way round
    assert (by_name[cell_a] < by_name[cell_b]) != (searched_first[cell_a] < searched_first[cell_b])
    picks = set()
    for spelling in (by_name, searched_first):
        for order in (cells, cells.iloc[::-1]):
            best = select_best(order.assign(settings=order["params"].map(spelling)))
            assert best is not None
            picks.add(best["params"])
    assert picks == {cell_a}  # the smaller params JSON: '{"dropout": 0.3' < '{"dropout": 0.5'


def test_metric_val_shows_the_best_validation(tmp_path: Path, no_plots: None) -> None:
    rows = cell_rows("cora", "gcn", "adam", [0.80, 0.82, 0.84], [0.70, 0.71, 0.72])
    root = write_results(tmp_path / "res", rows, histories=False)
    write_report([root], ["csv", "md"], tmp_path / "val", metric="val")
    write_report([root], ["csv", "md"], tmp_path / "test")
    val = _row(_main(tmp_path / "val"), "cora", "GCN")
    test = _row(_main(tmp_path / "test"), "cora", "GCN")
    assert val["mean"] == pytest.approx(82.0) and val["shown"] == "val"
    assert test["mean"] == pytest.approx(71.0) and test["shown"] == "test"
    assert "| GCN | 82.00 ± 2.00 |" in (tmp_path / "val" / "main.md").read_text()
    assert "Best validation metric, mean" in (tmp_path / "val" / "main.md").read_text()
    with pytest.raises(UserInputError, match="unknown --metric 'train'"):
        write_report([root], ["csv"], tmp_path / "x", metric="train")


def test_fewer_runs_than_the_protocol_is_noted_not_marked(tmp_path: Path, no_plots: None) -> None:
    """A grid with `runs: 2` is complete: no partial mark, but the notes name the protocol."""
    rows = cell_rows("cora", "gcn", "adam", [0.80, 0.81], [0.79, 0.80])
    rows += cell_rows("cora", "gcn", "ham", [0.82, 0.83], [0.81, 0.82], alpha=200, beta=0.1)
    root = write_results(tmp_path / "res", rows, histories=False)
    write_report([root], ["csv", "md"], None)
    main = _main(root / "report")
    adam, ham = _row(main, "cora", "GCN"), _row(main, "cora", "GCN+HAM")
    assert (adam["n"], adam["expected"]) == (2, 2) and not bool(adam["partial"])
    assert not bool(ham["partial"])
    md = (root / "report" / "main.md").read_text()
    assert "Cora, GCN: 2 runs per cell; the protocol has 5" in md
    assert "| GCN | 79.50 ± 0.71 |" in md  # no partial mark on the cell


# ---- issue #13: --compare ------------------------------------------------------------------------


def _compare_rows() -> list:
    # Cora GCN: published 81.32 ± 0.30 (5 runs), HAM 81.44 ± 0.43 at (200, 0.1) (ham-paper)
    rows = cell_rows("cora", "gcn", "adam", [0.8] * 5, [0.813, 0.816, 0.81, 0.812, 0.815])
    rows += cell_rows("cora", "gcn", "ham", [0.9] * 5, [0.70, 0.71, 0.70, 0.71, 0.70], 10, 0.1)
    rows += cell_rows("cora", "gcn", "ham", [0.8] * 5, [0.81] * 5, 10, 0.1,
                      ham={"sign_source": "previous"})  # fmt: skip
    return rows


def test_compare_side_by_side(tmp_path: Path) -> None:
    root = write_results(tmp_path / "x", _compare_rows())
    assert cli_main(["report", str(root), "--compare", "ham-paper", "--figures", "all"]) == 0
    report = root / "report"
    main = _main(report)
    adam, ham = _row(main, "cora", "GCN"), _row(main, "cora", "GCN+HAM")
    assert adam["published_mean"] == 81.32 and adam["published_std"] == 0.30
    assert adam["delta"] == pytest.approx(adam["mean"] - 81.32)
    assert bool(adam["within_noise"]) and adam["source"] == "ham-paper"
    assert ham["published_mean"] == 81.44 and not bool(ham["within_noise"])
    assert ham["welch_p"] < 0.05
    # no published value for the ablation: nothing made up
    ablation = _row(main, "cora", "GCN+HAM (sign_source=previous)")
    assert math.isnan(ablation["published_mean"]) and math.isnan(ablation["delta"])
    md = (report / "main.md").read_text()
    assert "| Cora (acc) ours | Cora (acc) published | Cora (acc) Δ |" in md
    line = next(x for x in md.splitlines() if x.startswith("| GCN |"))
    assert "81.32 ± 0.30" in line and "≈" in line
    assert "| GCN+HAM (sign_source=previous) | 81.00 ± 0.00† | – | – |" in md
    assert "Splits: Cora: per-class-20/500/1000" in md and "ham-paper Table 14" in md
    best = pd.read_csv(report / "best_params.csv")
    got = best[best["method"] == "ham"].iloc[0]
    assert (got["published_alpha"], got["published_beta"]) == (200, 0.1)
    assert not bool(got["same_best"])
    best_md = (report / "best_params.md").read_text()
    assert "| Cora | 10, 0.1 | 200, 0.1 ≠ | 10, 0.1 | – |" in best_md
    tex = (report / "main.tex").read_text()
    assert r"\multicolumn{3}{c}{Cora (acc)}" in tex and r"$\approx$" in tex
    assert r"\cmidrule(lr){2-4}" in tex
    page = (report / "report.html").read_text()
    assert '<th colspan="3">Cora (acc)</th>' in page and "figures/compare_cora.png" in page
    png = (report / "figures" / "compare_cora.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    assert (report / "figures" / "compare_cora.pdf").read_bytes().startswith(b"%PDF")


def test_compare_with_a_user_csv_and_a_variant(tmp_path: Path, no_plots: None) -> None:
    published = tmp_path / "mine.csv"
    published.write_text(
        "source,dataset,model,optimizer,mean,std,runs,metric,split,paper,table\n"
        "mine,cora,gcn,adam,50.0,1.0,3,accuracy,planetoid-public,My notes,T1\n"
    )
    rows = cell_rows("cora-public", "gcn", "adam", [0.8] * 3, [0.8, 0.81, 0.82])
    rows += cell_rows("citeseer", "gcn", "adam", [0.7] * 3, [0.7] * 3)
    root = write_results(tmp_path / "res", rows, histories=False)
    write_report([root], ["csv", "md", "latex"], None, compare=published)
    main = _main(root / "report")
    public = _row(main, "cora-public", "GCN")
    assert public["published_mean"] == 50.0 and public["published_split"] == "planetoid-public"
    assert not bool(public["within_noise"]) and public["delta"] == pytest.approx(31.0)
    assert math.isnan(_row(main, "citeseer", "GCN")["published_mean"])
    md = (root / "report" / "main.md").read_text()
    assert "Cora (public): planetoid-public" in md
    assert "| GCN | 70.00 ± 0.00 | – | – | 81.00 ± 1.00 | 50.00 ± 1.00 | +31.00 |" in md


def test_compare_unknown_source_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_results(tmp_path / "res", cell_rows("cora", "gcn", "adam", [0.8], [0.8]))
    with pytest.raises(UnknownNameError, match="unknown published source 'nope'"):
        write_report([root], ["csv"], None, compare="nope")
    assert not (root / "report").exists()
    assert cli_main(["report", str(root), "--compare", "nope"]) == 2
    assert "ham-paper" in capsys.readouterr().err


def test_latex_with_compare_compiles(tmp_path: Path, no_plots: None) -> None:
    root = write_results(tmp_path / "x", _compare_rows(), histories=False)
    write_report([root], ["latex"], None, compare="ham-paper")
    tex = (root / "report" / "main.tex").read_text()
    body = tex.replace(r"\{", "").replace(r"\}", "")
    assert body.count("{") == body.count("}") and tex.count("$") % 2 == 0
    test_latex_compiles(root / "report", tmp_path)


# ---- settings searched beside (alpha, beta) --------------------------------------------------


def _lr_search_results() -> list:
    """Adam and HAM on cora, each at two lr values (and HAM at two alphas): the winners differ
    (Adam: lr=0.01, HAM: lr=0.002), so a table that names one lr for both is caught."""
    results = cell_rows("cora", "gcn", "adam", [0.80, 0.82, 0.81], [0.78, 0.80, 0.79],
                        params={"lr": 0.01})  # fmt: skip
    results += cell_rows("cora", "gcn", "adam", [0.70, 0.71, 0.72], [0.70, 0.70, 0.70],
                         params={"lr": 0.002})  # fmt: skip
    for alpha, shift in ((200, 0.0), (10, -0.02)):
        results += cell_rows("cora", "gcn", "ham", [0.75 + shift] * 3, [0.74, 0.75, 0.76],
                             alpha, 0.1, params={"lr": 0.01})  # fmt: skip
        results += cell_rows("cora", "gcn", "ham", [0.86 + shift] * 3, [0.84, 0.85, 0.86],
                             alpha, 0.1, params={"lr": 0.002})  # fmt: skip
    return results


def test_searched_settings_named_in_every_format(tmp_path: Path, no_plots: None) -> None:
    root = write_results(tmp_path / "res", _lr_search_results(), histories=False)
    write_report([root], ["csv", "latex", "md", "html"], None)
    out = root / "report"
    best_csv = pd.read_csv(out / "best_params.csv")
    assert sorted(best_csv["row"]) == ["GCN", "GCN+HAM"]  # the csv had them already

    best_md = (out / "best_params.md").read_text()
    assert best_md.startswith("# Best settings\n") and "Best (alpha, beta)" not in best_md
    assert "| dataset | method | (alpha, beta) | settings |" in best_md
    assert "| Cora | GCN | – | lr=0.01 |" in best_md  # the tuned baseline has a row
    assert "|  | GCN+HAM | 200, 0.1 | lr=0.002 |" in best_md
    main_md = (out / "main.md").read_text()
    assert "- Chosen settings of GCN: Cora lr=0.01." in main_md
    assert "- Chosen settings of GCN+HAM: Cora lr=0.002." in main_md

    best_tex = (out / "best_params.tex").read_text()
    assert "Cora & GCN & -- & lr=0.01 \\\\" in best_tex
    assert " & GCN+HAM & 200, 0.1 & lr=0.002 \\\\" in best_tex
    assert "settings searched beside them" in best_tex
    main_tex = (out / "main.tex").read_text()
    assert "Chosen settings of GCN+HAM: Cora lr=0.002." in main_tex
    assert "Chosen settings of GCN: Cora lr=0.01." in main_tex
    test_latex_compiles(out, tmp_path)

    page = (out / "report.html").read_text()
    assert "<h2>Best settings by mean validation metric</h2>" in page
    assert "<th>settings</th>" in page
    assert '<th class="row">Cora</th><td>GCN</td><td>–</td><td>lr=0.01</td>' in page
    assert '<th class="row"></th><td>GCN+HAM</td><td>200, 0.1</td><td>lr=0.002</td>' in page
    assert "Chosen settings of GCN+HAM: Cora lr=0.002." in page


def test_searched_settings_with_compare_compile(tmp_path: Path, no_plots: None) -> None:
    root = write_results(tmp_path / "res", _lr_search_results(), histories=False)
    write_report([root], ["latex", "md"], None, compare="ham-paper")
    best_md = (root / "report" / "best_params.md").read_text()
    assert "| dataset | method | (alpha, beta) | settings | published (alpha, beta) |" in best_md
    assert re.search(r"\|  \| GCN\+HAM \| 200, 0\.1 \| lr=0\.002 \| [^|]+ [=≠] \|", best_md)
    test_latex_compiles(root / "report", tmp_path)


def test_without_searched_settings_best_params_keeps_its_shape(report: Path) -> None:
    """Cells that differ only in (alpha, beta): no settings column, no settings notes."""
    best_md = (report / "best_params.md").read_text()
    assert best_md.startswith("# Best (alpha, beta)\n") and "settings" not in best_md
    main_md = (report / "main.md").read_text()
    assert "Chosen settings" not in main_md and "settings" not in main_md
    assert "settings" not in (report / "best_params.tex").read_text()
    assert "Best (alpha, beta) by mean validation metric" in (report / "report.html").read_text()


# ---- the warning about settings beyond the cell columns ----------------------------------------


def _set_columns(root: Path, values: dict[str, dict[str, str]]) -> None:
    """Set runs.csv columns per key (as a plug-in run records its display name and target)."""
    import csv

    path = ResultStore(root).runs_csv
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for row in rows:
        row.update(values.get(row["key"], {}))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def test_plugin_columns_warn_only_when_they_differ_within_a_cell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from hamgraph.report import load_runs

    results = cell_rows("cora", "mod_a", "adam", [0.8, 0.81], [0.8, 0.81])
    results += cell_rows("cora", "mod_b", "adam", [0.7, 0.71], [0.7, 0.71])
    root = write_results(tmp_path / "res", results, histories=False)
    per_model = {
        "mod_a": {"model_display": "Model A", "model_target": "pkg.a:ModelA"},
        "mod_b": {"model_display": "Model B", "model_target": "pkg.b:ModelB"},
    }
    keys = {r.spec.key(): r.spec.model for r in results}
    _set_columns(root, {k: per_model[m] for k, m in keys.items()})
    with caplog.at_level(logging.WARNING, logger="hamgraph.report"):
        frame = load_runs([root])
    assert sorted(frame["model_target"].unique()) == ["pkg.a:ModelA", "pkg.b:ModelB"]
    assert "differ in settings" not in caplog.text  # constant per cell, differ across cells

    second_a = results[1].spec.key()  # run 1 of mod_a: another target than run 0
    _set_columns(root, {second_a: {"model_target": "pkg.c:ModelC"}})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hamgraph.report"):
        load_runs([root])
    assert "runs of one cell differ in settings beyond the cell columns (model_target)" in (
        caplog.text
    )
