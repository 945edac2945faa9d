"""Figures of `hamgraph report`: heatmaps, curves, diagnostics, report.html links, no matplotlib."""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import pytest
from test_report_factory import cell_results, write_results

from hamgraph.report import figures as plots
from hamgraph.report import write_report

PNG = b"\x89PNG\r\n\x1a\n"


def _rows() -> list:
    rows = cell_results("cora", "gcn", "adam", [0.8, 0.81, 0.79], [0.79, 0.8, 0.78])
    for alpha in (10, 200):
        for beta in (0.0, 0.1):
            v = 0.8 + alpha / 10000 + beta / 10
            rows += cell_results("cora", "gcn", "ham", [v, v, v], [v, v - 0.01, v], alpha, beta)
    rows += cell_results("cora", "gcn", "nham", [0.82] * 3, [0.8] * 3, -10, 0.01)
    # a single (alpha, beta) cell: curves and diagnostics, no heatmap
    rows += cell_results("squirrel", "gat", "adam", [0.4] * 3, [0.4] * 3)
    rows += cell_results("squirrel", "gat", "ham", [0.45] * 3, [0.43] * 3, 1, 0.1)
    # an ablation swept over two cells: a heatmap of its own, beside the default setting's
    for alpha in (10, 200):
        rows += cell_results("cora", "gcn", "ham", [0.7] * 3, [0.7] * 3, alpha, 0.1,
                             ham={"sign_source": "previous"})  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_results(tmp_path_factory.mktemp("plots") / "res", _rows())
    write_report([root], ["csv", "html"], None, figures="all")
    return root / "report"


def test_figures_written_as_png_and_pdf(report: Path) -> None:
    figures = report / "figures"
    stems = {p.stem for p in figures.glob("*.png")}
    assert stems == {
        "heatmap_cora_gcn", "heatmap_cora_gcn_sign_source_previous", "curves_cora_gcn",
        "diagnostics_cora_gcn",
        "curves_squirrel_gat", "diagnostics_squirrel_gat",
    }  # fmt: skip
    for stem in stems:
        png = (figures / f"{stem}.png").read_bytes()
        assert png.startswith(PNG) and len(png) > 1000
        assert (figures / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    # no temp files left; the figure cache is the only hidden file
    assert [p.name for p in figures.glob(".*")] == [plots.CACHE_NAME]


def test_report_html_links_every_figure(report: Path) -> None:
    page = (report / "report.html").read_text()
    links = set(re.findall(r'<img src="([^"]+)"', page))
    assert links == {f"figures/{p.name}" for p in (report / "figures").glob("*.png")}
    for link in links:
        assert (report / link).is_file()


def test_without_matplotlib_tables_still_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    root = write_results(tmp_path / "res", _rows(), histories=False)
    with caplog.at_level(logging.WARNING):
        write_report([root], ["csv", "html"], None)
    assert "install hamgraph[plots]" in caplog.text
    assert (root / "report" / "main.csv").is_file()
    assert not (root / "report" / "figures").exists()
    assert "<img" not in (root / "report" / "report.html").read_text()


def test_missing_history_files_are_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = cell_results("squirrel", "gat", "adam", [0.4] * 2, [0.4] * 2)
    root = write_results(tmp_path / "res", rows)
    shutil.rmtree(root / "records")  # runs.csv without the records the histories are read from
    with caplog.at_level(logging.WARNING):
        write_report([root], ["csv"], None)
    assert "skipping history" in caplog.text
    assert not list((root / "report").glob("figures/*.png"))
