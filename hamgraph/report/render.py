"""One renderer per format: `ReportTables` -> file name -> text. Pure: no I/O.

`render_csv` (main.csv, best_params.csv: long / tidy, unrounded), `render_latex` (main.tex,
best_params.tex: booktabs tables), `render_markdown` (main.md, best_params.md) and
`render_html` (report.html: the tables, the verdict and the figures), `render_verdict`
(verdict.csv and its long tables, verdict.tex, verdict.md). The three display formats draw the
same `Grid` (headers, rows, cells with bold / underline / marks); only the markup differs.
"""

from __future__ import annotations

import html
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hamgraph.cells import format_mean_std
from hamgraph.report.rows import (
    DECIMALS,
    MIN_PAIRS,
    MISSING,
    SIGNIFICANCE_LEVEL,
    FamilyTable,
    MainCell,
    ReportTables,
    fmt_param,
)
from hamgraph.report.verdict import MIN_RUNS, Verdict

# ---------------------------------------------------------------------------------------------
# the grid every display format draws


@dataclass(frozen=True)
class GridCell:
    text: str  # unicode: "81.50 ± 0.50", "–", "+0.12 ≈", "200, 0.1"
    marks: str = ""  # superscript marks: "†", "*"
    bold: bool = False
    underline: bool = False


@dataclass(frozen=True)
class Grid:
    corner: str
    groups: tuple[tuple[str, int], ...]  # top header (label, span); () for one header row
    columns: tuple[str, ...]  # the leaf headers
    rows: tuple[tuple[str, tuple[GridCell, ...]], ...]
    rule_before: frozenset[str] = frozenset()


_EMPTY = GridCell(MISSING)


def _delta_text(cell: MainCell) -> GridCell:
    cmp = cell.compare
    if cmp is None or not cmp.has_value:
        return _EMPTY
    return GridCell(f"{cmp.delta:+.{DECIMALS}f}" + (" ≈" if cmp.within_noise else ""))


def _value(cell: MainCell | None) -> GridCell:
    if cell is None:
        return _EMPTY
    marks = ("†" if cell.significant else "") + ("*" if cell.partial else "")
    return GridCell(format_mean_std(cell.mean, cell.std, DECIMALS), marks, cell.best, cell.tie)


def main_grid(table: FamilyTable, compared: bool) -> Grid:
    subs = ("ours", "published", "Δ") if compared else ("",)
    groups = tuple((c.header, len(subs)) for c in table.columns) if compared else ()
    columns = subs * len(table.columns) if compared else tuple(c.header for c in table.columns)
    rows = []
    for label in table.rows:
        cells: list[GridCell] = []
        for col in table.columns:
            cell = table.cell(label, col.name)
            cells.append(_value(cell))
            if compared:
                cmp = cell.compare if cell is not None else None
                has = cmp is not None and cmp.has_value
                cells.append(GridCell(format_mean_std(cmp.mean, cmp.std, DECIMALS)) if has
                             else _EMPTY)  # fmt: skip
                cells.append(_delta_text(cell) if cell is not None else _EMPTY)
        rows.append((label, tuple(cells)))
    return Grid("", groups, columns, tuple(rows), table.block_starts)


def settings_searched(tables: ReportTables) -> bool:
    """Whether some shown value was chosen among cells that differ in settings beyond
    (alpha, beta) (a sweep over lr, dropout, model.hidden, ...): then best_params lists them."""
    return any(c.searched for c in tables.cells if c.selected)


def _best_cells(tables: ReportTables) -> tuple[MainCell, ...]:
    """best_params' values: HAM / nHAM, and every value chosen among several cells (a tuned
    baseline), as best_params.csv."""
    return tuple(c for c in tables.cells if c.is_ham or c.cells_searched > 1)


def best_grid(tables: ReportTables) -> Grid | None:
    """Rows: datasets; columns: (model, HAM method) [x (ours, published)]: "alpha, beta".

    When settings beyond (alpha, beta) were searched (`settings_searched`): one row per
    dataset x method of `_best_cells`, columns method, (alpha, beta), settings [, published]."""
    if settings_searched(tables):
        return _best_settings_grid(tables)
    ham = tables.ham_cells
    if not ham:
        return None
    compared = tables.compare_source is not None
    pairs = list(dict.fromkeys((c.model_display, _short_method(c)) for c in ham))
    datasets: list[tuple[str, str]] = []
    for t in tables.families:
        datasets += [
            (c.name, c.display) for c in t.columns if any(h.dataset == c.name for h in ham)
        ]
    lookup = {(c.dataset, c.model_display, _short_method(c)): c for c in ham}
    rows = []
    for name, display in datasets:
        cells: list[GridCell] = []
        for model, method in pairs:
            c = lookup.get((name, model, method))
            cells.append(GridCell(_params(c.alpha, c.beta)) if c is not None and c.selected
                         else _EMPTY)  # fmt: skip
            if compared:
                cmp = c.compare if c is not None else None
                if cmp is None or math.isnan(cmp.alpha):
                    cells.append(_EMPTY)
                else:
                    same = " =" if cmp.same_best else (" ≠" if cmp.same_best is False else "")
                    cells.append(GridCell(_params(cmp.alpha, cmp.beta) + same))
        rows.append((display, tuple(cells)))
    labels = tuple(f"{m} {k}" for m, k in pairs)
    if compared:
        return Grid("dataset", tuple((label, 2) for label in labels), ("ours", "published") *
                    len(labels), tuple(rows))  # fmt: skip
    return Grid("dataset", (), labels, tuple(rows))


def _published_params(c: MainCell) -> GridCell:
    cmp = c.compare
    if cmp is None or math.isnan(cmp.alpha):
        return _EMPTY
    same = " =" if cmp.same_best else (" ≠" if cmp.same_best is False else "")
    return GridCell(_params(cmp.alpha, cmp.beta) + same)


def _best_settings_grid(tables: ReportTables) -> Grid | None:
    compared = tables.compare_source is not None
    wanted = set(_best_cells(tables))
    rows: list[tuple[str, tuple[GridCell, ...]]] = []
    starts: set[str] = set()
    for table in tables.families:
        for col in table.columns:
            members = [c for c in table.cells if c.dataset == col.name and c in wanted]
            for i, c in enumerate(members):
                label = col.display if i == 0 else ""
                if i == 0 and rows:
                    starts.add(label)
                cells = [
                    GridCell(c.row),
                    GridCell(_params(c.alpha, c.beta)) if c.is_ham and c.selected else _EMPTY,
                    GridCell(c.searched or MISSING) if c.selected else _EMPTY,
                ]
                if compared:
                    cells.append(_published_params(c))
                rows.append((label, tuple(cells)))
    if not rows:
        return None
    columns = ("method", "(alpha, beta)", "settings") + (
        ("published (alpha, beta)",) if compared else ()
    )
    return Grid("dataset", (), columns, tuple(rows), frozenset(starts))


def _best_title(tables: ReportTables) -> str:
    return "Best settings" if settings_searched(tables) else "Best (alpha, beta)"


def _short_method(c: MainCell) -> str:
    return {"ham": "HAM", "nham": "nHAM"}[c.optimizer] + c.method[len(c.optimizer):]


def _params(alpha: float, beta: float) -> str:
    return f"{fmt_param(alpha)}, {fmt_param(beta)}"


def legend(tables: ReportTables) -> str:
    """The text under every main table (unicode; each format converts it)."""
    what = (
        "Test metric at the epoch with the best validation metric"
        if tables.metric == "test"
        else "Best validation metric"
    )
    text = (
        f"{what}, mean ± sample std over runs, ×100; HAM / nHAM and every other swept optimizer "
        "at the (alpha, beta) with the best mean validation metric among the cells without "
        "failed runs (the rule of hamgraph.cells, as in a sweep's best.csv). Bold: best of the "
        f"architecture for the dataset; bold and underlined: tied best at {DECIMALS} decimals. "
        f"†: p < {SIGNIFICANCE_LEVEL:g} vs the baseline of the same model and base optimizer, "
        "two-sided paired t-test (scipy.stats.ttest_rel) over runs matched by (run, seed); not "
        f"tested with fewer than {MIN_PAIRS} pairs. *: partial results (see notes). "
        f"{MISSING}: no result."
    )
    if settings_searched(tables):
        text += (
            " Chosen settings (notes): the values of the settings searched beside (alpha, beta) "
            "(params such as lr, plug-in options such as model.hidden) of the shown cell, "
            "chosen by the same rule."
        )
    if tables.compare_source is not None:
        text += (
            f" Published: {tables.compare_source} ({tables.compare_citation}), as printed; "
            "Δ = ours - published; ≈: within noise (|Δ| <= the larger std and, where both "
            "sides have >= 3 runs, Welch's t-test does not reject at 0.05). Only the protocol's "
            f"base optimizer with default HAM settings has published values; {MISSING}: none."
        )
    return text


def _table_notes(table: FamilyTable, tables: ReportTables) -> list[str]:
    """Notes under one main table (unicode): partial results, splits, runs' provenance."""
    notes = [f"* {n}" for n in table.notes]
    display = {c.name: c.display for c in table.columns}
    for label in table.rows:
        chosen = [f"{display[c.dataset]} {c.searched}" for c in table.cells
                  if c.row == label and c.searched and c.selected]  # fmt: skip
        if chosen:
            notes.append(f"Chosen settings of {label}: " + "; ".join(chosen) + ".")
    notes.append("Splits: " + "; ".join(table.splits) + ".")
    notes.append("Runs: " + "; ".join(table.provenance) + "." if table.provenance else
                 "Runs: none shown.")  # fmt: skip
    if tables.compare_source is not None:
        where = sorted(
            {f"{c.compare.source} {c.compare.table}" for c in table.cells
             if c.compare is not None and c.compare.has_value}
        )  # fmt: skip
        notes.append("Published values from: " + (", ".join(where) if where else "none") + ".")
    return notes


# ---------------------------------------------------------------------------------------------
# CSV

MAIN_CSV_COLUMNS = [
    "family", "dataset", "dataset_display", "metric", "split", "shown", "model",
    "model_display", "optimizer", "method", "row", "cell", "alpha", "beta", "settings",
    "selected", "mean",
    "std", "test_mean", "test_std", "val_mean", "val_std", "n", "expected", "failed",
    "p_value", "pairs", "significant", "best", "tie", "partial", "cells_searched",
    "cells_skipped", "hamgraph_versions", "devices", "note",
]  # fmt: skip
COMPARE_CSV_COLUMNS = [
    "published_mean", "published_std", "published_runs", "delta", "within_noise", "welch_p",
    "published_alpha", "published_beta", "same_best", "published_split", "source", "table",
    "best_table",
]  # fmt: skip
BEST_CSV_COLUMNS = [
    "family", "dataset", "dataset_display", "model", "model_display", "optimizer", "method",
    "row", "cell", "alpha", "beta", "settings", "selected", "val_mean", "test_mean", "n",
    "cells_searched",
    "cells_skipped",
]  # fmt: skip


def _csv_records(tables: ReportTables) -> list[dict[str, object]]:
    records = []
    for table in tables.families:
        columns = {c.name: c for c in table.columns}
        for c in table.cells:
            col = columns[c.dataset]
            record: dict[str, object] = {
                "family": table.family, "dataset": c.dataset, "dataset_display": col.display,
                "metric": col.metric, "split": col.split, "shown": tables.metric,
                "model": c.model, "model_display": c.model_display, "optimizer": c.optimizer,
                "method": c.method, "row": c.row, "cell": c.cell_label,
                "alpha": fmt_param(c.alpha), "beta": fmt_param(c.beta), "settings": c.settings,
                "selected": c.selected,
                "mean": c.mean, "std": c.std, "test_mean": c.test_mean, "test_std": c.test_std,
                "val_mean": c.val_mean, "val_std": c.val_std, "n": c.n, "expected": c.expected,
                "failed": c.failed, "p_value": c.p_value, "pairs": c.pairs,
                "significant": c.significant, "best": c.best, "tie": c.tie,
                "partial": c.partial, "cells_searched": c.cells_searched,
                "cells_skipped": c.cells_skipped,
                "hamgraph_versions": " ".join(sorted({r.hamgraph_version for r in c.runs})),
                "devices": " ".join(sorted({r.device for r in c.runs})),
                "note": c.note,
            }  # fmt: skip
            if tables.compare_source is not None:
                cmp = c.compare
                has = cmp is not None and cmp.has_value
                record.update(
                    published_mean=cmp.mean if has else math.nan,
                    published_std=cmp.std if has else math.nan,
                    published_runs=cmp.runs if has else None,
                    delta=cmp.delta if has else math.nan,
                    within_noise=cmp.within_noise if has else None,
                    welch_p=cmp.welch_p if has else math.nan,
                    published_alpha=fmt_param(cmp.alpha) if has else "",
                    published_beta=fmt_param(cmp.beta) if has else "",
                    same_best=cmp.same_best if has else None,
                    published_split=cmp.split if has else "",
                    source=cmp.source if has else "",
                    table=cmp.table if has else "",
                    best_table=cmp.best_table if has else "",
                )
            records.append(record)
    return records


def render_csv(tables: ReportTables) -> dict[str, str]:
    """main.csv: one row per main-table value (+ the published columns with a comparison);
    best_params.csv: one row per HAM / nHAM value and per value chosen among several cells (a
    tuned baseline), with its `settings` (+ published_alpha, published_beta, same_best)."""
    records = _csv_records(tables)
    compared = tables.compare_source is not None
    main_cols = MAIN_CSV_COLUMNS + (COMPARE_CSV_COLUMNS if compared else [])
    main = pd.DataFrame(records, columns=main_cols)
    best_cols = BEST_CSV_COLUMNS + (
        ["published_alpha", "published_beta", "same_best", "source", "best_table"] if compared
        else []
    )  # fmt: skip
    # HAM / nHAM values, and every value chosen among several cells (a tuned baseline)
    tuned = main["optimizer"].isin(["ham", "nham"]) | (main["cells_searched"] > 1)
    best = main[tuned][best_cols]
    return {
        "main.csv": main.to_csv(index=False, float_format="%.6g"),
        "best_params.csv": best.to_csv(index=False, float_format="%.6g"),
    }


# ---------------------------------------------------------------------------------------------
# LaTeX

_LATEX_SPECIAL = {
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip
_LATEX_SYMBOLS = {
    "±": r"$\pm$", "–": "--", "Δ": r"$\Delta$", "≈": r"$\approx$", "≠": r"$\neq$",
    "×": r"$\times$", "†": r"$^{\dagger}$", "≥": r"$\geq$", "≤": r"$\leq$",
    "χ": r"$\chi$", "²": r"$^2$", "α": r"$\alpha$",
}  # fmt: skip


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and the report's symbols; other non-ASCII is folded to ASCII
    (pdflatex without extra packages)."""
    out = []
    for ch in str(text).replace("<=", "≤").replace(">=", "≥"):
        if ch in _LATEX_SYMBOLS:
            out.append(_LATEX_SYMBOLS[ch])
        elif ch in _LATEX_SPECIAL:
            out.append(_LATEX_SPECIAL[ch])
        else:
            folded = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
            out.append(folded if ch.isascii() else folded or "?")
    return "".join(out)


def _latex_cell(cell: GridCell) -> str:
    text = latex_escape(cell.text)
    if cell.underline:
        text = rf"\underline{{{text}}}"
    if cell.bold:
        text = rf"\textbf{{{text}}}"
    if cell.marks:
        marks = ",".join(r"\dagger" if m == "†" else m for m in cell.marks)
        text += f"$^{{{marks}}}$"
    return text


def _latex_tabular(grid: Grid) -> str:
    width = len(grid.columns)
    lines = [rf"\begin{{tabular}}{{l{'c' * width}}}", r"\toprule"]
    if grid.groups:
        heads, rules, start = [latex_escape(grid.corner)], [], 2
        for label, span in grid.groups:
            heads.append(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
            rules.append(rf"\cmidrule(lr){{{start}-{start + span - 1}}}")
            start += span
        lines.append(" & ".join(heads) + r" \\")
        lines.append(" ".join(rules))
        lines.append(" & ".join(["", *(latex_escape(c) for c in grid.columns)]) + r" \\")
    else:
        lines.append(
            " & ".join([latex_escape(grid.corner), *(latex_escape(c) for c in grid.columns)])
            + r" \\"
        )
    lines.append(r"\midrule")
    for label, cells in grid.rows:
        if label in grid.rule_before:
            lines.append(r"\midrule")
        lines.append(" & ".join([latex_escape(label), *(_latex_cell(c) for c in cells)]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_latex(tables: ReportTables) -> dict[str, str]:
    """main.tex (one table per family) and best_params.tex; need \\usepackage{booktabs}."""
    compared = tables.compare_source is not None
    chunks = ["% hamgraph report: main tables. Needs \\usepackage{booktabs}."]
    for table in tables.families:
        notes = [latex_escape(legend(tables))] + [
            latex_escape(n) for n in _table_notes(table, tables)
        ]
        chunks.append(
            "\\begin{table}[t]\n\\centering\n"
            + _latex_tabular(main_grid(table, compared))
            + f"\\caption{{{latex_escape(table.title)}}}\n"
            f"\\label{{tab:hamgraph-{table.family}}}\n"
            "\\par\\smallskip\n{\\footnotesize " + "\\\\\n".join(notes) + "\\par}\n\\end{table}\n"
        )
    best = best_grid(tables)
    head = f"% hamgraph report: {_best_title(tables).lower()}. Needs \\usepackage{{booktabs}}.\n"
    if best is None:
        best_text = head + "% no HAM / nHAM runs\n"
    else:
        caption = "Best $(\\alpha, \\beta)$ by mean validation metric"
        if settings_searched(tables):
            caption = (
                "Best $(\\alpha, \\beta)$ and settings searched beside them (the values of the "
                "cell with the best mean validation metric; -- for none)"
            )
        if compared:
            caption += f", beside the published best ({latex_escape(tables.compare_source)})"
        best_text = (
            head + "\\begin{table}[t]\n\\centering\n" + _latex_tabular(best)
            + f"\\caption{{{caption}}}\n\\label{{tab:hamgraph-best-params}}\n\\end{{table}}\n"
        )  # fmt: skip
    return {"main.tex": "\n".join(chunks), "best_params.tex": best_text}


# ---------------------------------------------------------------------------------------------
# Markdown


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("*", "\\*")


def _md_cell(cell: GridCell) -> str:
    text = _md_escape(cell.text)
    if cell.text == MISSING:
        return text + _md_escape(cell.marks)
    if cell.underline:
        text = f"<u>{text}</u>"
    text += _md_escape(cell.marks)
    return f"**{text}**" if cell.bold else text


def _md_table(grid: Grid) -> str:
    if grid.groups:
        leaves = []
        i = 0
        for label, span in grid.groups:
            leaves += [f"{label} {c}".strip() for c in grid.columns[i:i + span]]
            i += span
    else:
        leaves = list(grid.columns)
    headers = [grid.corner, *leaves]
    lines = [
        "| " + " | ".join(_md_escape(h) for h in headers) + " |",
        "|---|" + "---:|" * (len(headers) - 1),
    ]
    for label, cells in grid.rows:
        lines.append("| " + " | ".join([_md_escape(label), *(_md_cell(c) for c in cells)]) + " |")
    return "\n".join(lines) + "\n"


def render_markdown(tables: ReportTables) -> dict[str, str]:
    """main.md and best_params.md."""
    compared = tables.compare_source is not None
    chunks = ["# Results\n"]
    for table in tables.families:
        chunks.append(f"## {table.title}\n")
        chunks.append(_md_table(main_grid(table, compared)))
        chunks.append("\n".join(f"- {_md_escape(n)}" for n in _table_notes(table, tables)) + "\n")
    chunks.append(_md_escape(legend(tables)) + "\n")
    best = best_grid(tables)
    title = f"# {_best_title(tables)}\n\n"
    if best is None:
        best_text = title + "No HAM / nHAM runs.\n"
    elif settings_searched(tables):
        best_text = (
            title + "Per dataset and method (HAM / nHAM, and every method chosen among several "
            "cells), the (alpha, beta) and the settings searched beside them (params such as lr, "
            "plug-in options such as model.hidden) of the cell with the best mean validation "
            f"metric (cells without failed runs); {MISSING}: none"
            + (
                f"; published: the best of {tables.compare_source} (=: the same, ≠: another)"
                if compared
                else ""
            )
            + ".\n\n" + _md_table(best)
        )
    else:
        best_text = (
            title + "Per dataset and model, the (alpha, beta) with the best mean validation "
            "metric (cells without failed runs)"
            + (
                f", beside the published best of {tables.compare_source} (=: the same, ≠: another)"
                if compared
                else ""
            )
            + ".\n\n" + _md_table(best)
        )
    return {"main.md": "\n".join(chunks), "best_params.md": best_text}


# ---------------------------------------------------------------------------------------------
# HTML

_HTML_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em;
  border-top: 2px solid #333; border-bottom: 2px solid #333; }
th, td { padding: 0.25em 0.6em; text-align: center; }
thead { border-bottom: 1px solid #333; }
th.row { text-align: left; font-weight: normal; }
tr.rule { border-top: 1px solid #999; }
.notes, .foot { font-size: 0.85em; color: #333; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""


def _html_cell(cell: GridCell) -> str:
    text = html.escape(cell.text)
    style = ("font-weight: bold;" if cell.bold else "") + (
        "text-decoration: underline;" if cell.underline else ""
    )
    marks = f"<sup>{html.escape(cell.marks)}</sup>" if cell.marks else ""
    return f'<td style="{style}">{text}{marks}</td>' if style else f"<td>{text}{marks}</td>"


def _html_table(grid: Grid, css_id: str) -> str:
    parts = [f'<table id="{html.escape(css_id)}"><thead>']
    if grid.groups:
        parts.append(
            f"<tr><th>{html.escape(grid.corner)}</th>"
            + "".join(f'<th colspan="{s}">{html.escape(g)}</th>' for g, s in grid.groups)
            + "</tr>"
        )
        parts.append("<tr><th></th>" + "".join(f"<th>{html.escape(c)}</th>" for c in grid.columns)
                     + "</tr>")  # fmt: skip
    else:
        parts.append(
            f"<tr><th>{html.escape(grid.corner)}</th>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in grid.columns)
            + "</tr>"
        )
    parts.append("</thead><tbody>")
    for label, cells in grid.rows:
        rule = ' class="rule"' if label in grid.rule_before else ""
        parts.append(
            f'<tr{rule}><th class="row">{html.escape(label)}</th>'
            + "".join(_html_cell(c) for c in cells)
            + "</tr>"
        )
    parts.append("</tbody></table>")
    return "\n".join(parts)


def render_html(
    tables: ReportTables,
    figures: Sequence[Path] = (),
    inputs: Sequence[Path] = (),
    verdict: Verdict | None = None,
    figures_wanted: bool = True,
) -> dict[str, str]:
    """report.html: the main tables, best (alpha, beta), the verdict (when given), and the
    figures (PNG paths relative to the report dir)."""
    compared = tables.compare_source is not None
    parts = [
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>hamgraph report</title>",
        f"<style>{_HTML_CSS}</style></head><body>",
        "<h1>hamgraph report</h1>",
        "<p>Inputs: " + ", ".join(f"<code>{html.escape(str(s))}</code>" for s in inputs) + "</p>",
    ]
    if compared:
        parts.append(f"<p>Compared with <b>{html.escape(str(tables.compare_source))}</b>: "
                     f"{html.escape(tables.compare_citation)}</p>")  # fmt: skip
    for table in tables.families:
        parts.append(f"<h2>{html.escape(table.title)}</h2>")
        parts.append(_html_table(main_grid(table, compared), f"main-{table.family}"))
        parts.append(
            "<ul class='notes'>"
            + "".join(f"<li>{html.escape(n)}</li>" for n in _table_notes(table, tables))
            + "</ul>"
        )
    parts.append(f"<p class='foot'>{html.escape(legend(tables))}</p>")
    best = best_grid(tables)
    if best is not None:
        parts.append(f"<h2>{_best_title(tables)} by mean validation metric</h2>")
        parts.append(_html_table(best, "best-params"))
    if verdict is not None:
        parts.append(verdict_html(verdict))
    if figures:
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            rel = html.escape(fig.as_posix(), quote=True)
            parts.append(
                f'<figure><img src="{rel}" alt="{html.escape(fig.stem)}">'
                f"<figcaption>{html.escape(fig.stem)}</figcaption></figure>"
            )
    elif figures_wanted:
        parts.append("<p class='foot'>No figures (see the log).</p>")
    else:
        parts.append("<p class='foot'>No figures (--figures none).</p>")
    parts.append("</body></html>\n")
    return {"report.html": "\n".join(parts)}


# ---------------------------------------------------------------------------------------------
# the verdict (`report.verdict`): one row per setting

VERDICT_CSV_COLUMNS = [
    "setting", "baseline", "workloads", "runs_setting", "runs_baseline", "configs_setting",
    "configs_baseline", "wins", "ties", "losses", "wilcoxon_p", "mean_improvement",
    "mean_ci_low", "mean_ci_high", "iqm_improvement", "iqm_ci_low", "iqm_ci_high",
    "p_improvement", "p_ci_low", "p_ci_high", "mean_rank", "equal_k", "equal_k_delta",
    "equal_k_wins", "speedup", "time_workloads", "time_misses", "time_unmeasured", "run_misses",
]  # fmt: skip
VERDICT_HEADERS = (
    "vs", "Workloads", "W/T/L", "Wilcoxon p", "Mean impr. % [95% CI]", "IQM impr. % [95% CI]",
    "P(impr.) [95% CI]", "Mean rank", "Equal-k Δ (k)", "Speedup (misses)",
)  # fmt: skip


def _num(value: float, digits: int = 2) -> str:
    return MISSING if not math.isfinite(value) else f"{value:.{digits}f}"


def _p_text(p: float) -> str:
    if not math.isfinite(p):
        return MISSING
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _ci_text(point: float, ci: tuple[float, float], digits: int = 2, sign: bool = True) -> str:
    if not math.isfinite(point):
        return MISSING
    fmt = f"+.{digits}f" if sign else f".{digits}f"
    return f"{point:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def verdict_grid(verdict: Verdict) -> Grid:
    """The verdict table every display format draws."""
    rows = []
    for r in verdict.rows:
        speed = MISSING
        if math.isfinite(r.speedup) or r.time_misses:
            speed = (f"{r.speedup:.2f}×" if math.isfinite(r.speedup) else MISSING) + (
                f" ({r.time_misses} missed)" if r.time_misses else ""
            )
        rows.append((r.setting, (
            GridCell(r.baseline),
            GridCell(str(r.workloads)),
            GridCell(f"{r.wins}/{r.ties}/{r.losses}"),
            GridCell(_p_text(r.wilcoxon_p), bold=r.wilcoxon_p < SIGNIFICANCE_LEVEL),
            GridCell(_ci_text(r.mean_improvement, r.mean_ci),
                     bold=r.mean_ci[0] > 0 or r.mean_ci[1] < 0),
            GridCell(_ci_text(r.iqm_improvement, r.iqm_ci)),
            GridCell(_ci_text(r.p_improvement, r.p_ci, sign=False),
                     bold=r.p_ci[0] > 0.5 or r.p_ci[1] < 0.5),
            GridCell(_num(r.mean_rank)),
            GridCell(f"{r.equal_k_delta:+.2f} ({r.equal_k})"),
            GridCell(speed),
        )))  # fmt: skip
    return Grid(corner="Setting", groups=(), columns=VERDICT_HEADERS, rows=tuple(rows))


def verdict_legend(verdict: Verdict) -> str:
    what = "test metric at the best-validation epoch" if verdict.metric == "test" else (
        "best validation metric")  # fmt: skip
    return (
        f"Each HAM / nHAM setting against the baseline of the same model and base optimizer "
        f"(vs), over the workloads (dataset × model) where both have >= {MIN_RUNS} ok runs; "
        f"score = {what}, ×100, of the configuration the cells rule picks. W/T/L: workloads "
        f"where the per-workload two-sided test (paired t over (run, seed), Welch's t when fewer "
        f"than {MIN_PAIRS} runs pair) rejects at {SIGNIFICANCE_LEVEL:g} in favour of / does not "
        "reject / rejects against the setting. Wilcoxon p: signed-rank test of the per-workload "
        "differences of means. Mean / IQM impr.: normalized improvement 100 (setting - "
        "baseline) / baseline, its mean and interquartile mean over workloads, with a 95% "
        f"stratified-bootstrap CI ({verdict.resamples} resamples of the runs within each "
        "workload). P(impr.): probability that a run of the setting beats a run of the baseline "
        "(ties count half), averaged over workloads, same bootstrap. Mean rank: over the "
        "workloads that have every method (1 = best). Equal-k Δ: expected test score of the "
        "setting minus the baseline's when each is tuned with the same number k of "
        "configurations (Dodge et al.'s expected maximum, unbiased form). Speedup: geometric "
        "mean over workloads of the baseline's time-to-target / the setting's, training time "
        "only; target = the baseline's median best validation; missed = workloads where fewer "
        f"than half of the setting's runs reach it. Bold: significant at {SIGNIFICANCE_LEVEL:g} "
        f"or a CI that excludes no effect. {MISSING}: not available."
    )


def verdict_notes(verdict: Verdict) -> list[str]:
    """Notes under the verdict table (unicode): what stands behind each row, ranks, edges."""
    notes = []
    for r in verdict.rows:
        timed = r.workloads - r.time_unmeasured
        clock = (
            f"time-to-target on {timed} workloads (runs never reaching the target: "
            f"{r.run_misses})" if timed else "no time-to-target (no train_seconds)"
        )  # fmt: skip
        notes.append(
            f"{r.setting}: {r.workloads} workloads, {r.runs_setting} vs {r.runs_baseline} runs, "
            f"{r.configs_setting} vs {r.configs_baseline} configurations; {clock}"
        )
    rk = verdict.ranking
    if rk is not None:
        ranks = ", ".join(f"{m} {v:.2f}" for m, v in zip(rk.methods, rk.mean_ranks, strict=True))
        notes.append(
            f"Mean ranks over {len(rk.workloads)} workloads: {ranks}; Friedman χ² = "
            f"{rk.friedman_chi2:.2f}, p = {_p_text(rk.friedman_p)}; Nemenyi critical difference "
            f"(α = 0.05) = {rk.cd:.2f}"
        )
    notes += list(verdict.notes)
    return notes


def render_verdict(verdict: Verdict, formats: Sequence[str]) -> dict[str, str]:
    """verdict.csv, verdict_workloads.csv, verdict_ranks.csv, verdict_budget.csv (csv),
    verdict.tex (latex), verdict.md (md)."""
    out: dict[str, str] = {}
    if "csv" in formats:
        records = []
        for r in verdict.rows:
            record = {c: getattr(r, c) for c in VERDICT_CSV_COLUMNS if hasattr(r, c)}
            record.update(mean_ci_low=r.mean_ci[0], mean_ci_high=r.mean_ci[1],
                          iqm_ci_low=r.iqm_ci[0], iqm_ci_high=r.iqm_ci[1],
                          p_ci_low=r.p_ci[0], p_ci_high=r.p_ci[1])  # fmt: skip
            records.append(record)
        out["verdict.csv"] = pd.DataFrame(records, columns=VERDICT_CSV_COLUMNS).to_csv(index=False)
        out["verdict_workloads.csv"] = pd.DataFrame(
            [vars(p) for p in verdict.pairs]
        ).to_csv(index=False)
        rk = verdict.ranking
        ranks = pd.DataFrame(
            {"method": list(rk.methods), "mean_rank": list(rk.mean_ranks),
             "workloads": len(rk.workloads), "friedman_chi2": rk.friedman_chi2,
             "friedman_p": rk.friedman_p, "cd": rk.cd}
            if rk is not None else {"method": []}
        )  # fmt: skip
        out["verdict_ranks.csv"] = ranks.to_csv(index=False)
        out["verdict_budget.csv"] = pd.DataFrame(
            [
                {"dataset": b.dataset, "model": b.model, "method": b.method, "k": k,
                 "expected_val": v, "expected_test": t}
                for b in verdict.budgets
                for k, v, t in zip(b.k, b.expected_val, b.expected_test, strict=True)
            ],
            columns=["dataset", "model", "method", "k", "expected_val", "expected_test"],
        ).to_csv(index=False)  # fmt: skip
    grid = verdict_grid(verdict)
    notes = [verdict_legend(verdict), *verdict_notes(verdict)]
    if "latex" in formats:
        body = "\\\\\n".join(latex_escape(n) for n in notes)
        out["verdict.tex"] = (
            "% hamgraph report: verdict across workloads. Needs \\usepackage{booktabs} and\n"
            "% \\usepackage{graphicx} (the table is scaled to the text width).\n"
            "\\begin{table*}[t]\n\\centering\n\\setlength{\\tabcolsep}{3pt}\n"
            "\\resizebox{\\textwidth}{!}{%\n"
            + _latex_tabular(grid)
            + "}\n\\caption{Does the optimizer help? Verdict across workloads}\n"
            "\\label{tab:hamgraph-verdict}\n\\par\\smallskip\n{\\footnotesize "
            + body + "\\par}\n\\end{table*}\n"
        )  # fmt: skip
    if "md" in formats:
        out["verdict.md"] = (
            "# Verdict across workloads\n\n" + _md_table(grid) + "\n"
            + "\n".join(f"- {_md_escape(n)}" for n in notes) + "\n"
        )  # fmt: skip
    return out


def verdict_html(verdict: Verdict) -> str:
    """The verdict section of report.html."""
    return (
        "<h2>Verdict across workloads</h2>\n" + _html_table(verdict_grid(verdict), "verdict")
        + "<ul class='notes'>"
        + "".join(f"<li>{html.escape(n)}</li>" for n in verdict_notes(verdict))
        + f"</ul><p class='foot'>{html.escape(verdict_legend(verdict))}</p>"
    )  # fmt: skip
