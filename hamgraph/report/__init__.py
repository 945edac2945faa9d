"""`hamgraph report`: result dirs -> paper tables (CSV / LaTeX / Markdown / HTML), the verdict
across workloads, and figures.

    result dirs ──ResultStore(dir).frame()──► runs ──rows.build_tables──► ReportTables
        ──render.render_{csv,latex,markdown,html}──► files
    runs (+ histories through the store) ──verdict.build_verdict──► Verdict ──render_verdict──►
    ReportTables, Verdict ──figures.write_figures──► figures/

- Input: one or more result dirs of `hamgraph run` / `hamgraph sweep`, read only through
  `hamgraph.store.ResultStore` (runs.csv columns `RUN_COLUMNS` and any further column, kept;
  histories from the records). Several dirs are concatenated; a run key that appears twice is
  kept once (an ok row wins over a failed one, then the later input). Two keys with the same
  settings (`cells.setting_columns`: the cell columns and any further settings column), run
  and seed are not told apart: one is kept and a warning says so.
- Tables (`rows`): one row per model x optimizer setting, the (alpha, beta) picked by
  `hamgraph.cells.best_per_group` (the one best rule), headers from the dataset registry only.
  `metric="test"` shows the test metric at the best-validation epoch, `"val"` the best
  validation metric. `compare` (a shipped source name such as "ham-paper" or the path of a CSV
  in the same format, `hamgraph.compare.load_published`) puts the published values, the
  difference and a within-noise mark beside every value, and the published best (alpha, beta)
  beside ours.
- Verdict (`verdict=True`, `report.verdict`): every HAM / nHAM setting against its baseline
  across workloads; refuses (UserInputError) with fewer than 3 comparable workloads.
- Files in `out` (default `<first path>/report/`): main.{csv,tex,md}, best_params.{csv,tex,md},
  verdict.{csv,tex,md} and verdict_{workloads,ranks,budget}.csv (with the verdict),
  report.html (per `formats`), figures/*.png (and *.pdf with `figures="all"`; matplotlib).

Nothing is written when the input is bad: everything is read and checked before the first
write. Known limit: stale figures of an earlier report in the same dir are left in place
(report.html links only the new ones).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from hamgraph.atomic import atomic_write_text
from hamgraph.cells import CELL_COLUMNS, setting_columns
from hamgraph.errors import UserInputError
from hamgraph.report.render import (
    render_csv,
    render_html,
    render_latex,
    render_markdown,
    render_verdict,
)
from hamgraph.report.rows import METRICS, MIN_PAIRS, ReportTables, ShownMetric, build_tables
from hamgraph.report.verdict import Verdict
from hamgraph.store import RUN_COLUMNS, ResultStore

log = logging.getLogger(__name__)

__all__ = [
    "MIN_PAIRS",
    "VALID_FORMATS",
    "ReportOutcome",
    "ReportTables",
    "build_tables",
    "check_figures",
    "check_formats",
    "load_runs",
    "write_report",
]

VALID_FORMATS = ("csv", "latex", "md", "html")
DEFAULT_FORMATS = VALID_FORMATS
# --figures: none (tables alone, seconds on any store) | png (report.html's figures) | all (PNG
# and PDF for papers). The default draws PNGs: report.html shows them; PDFs on request.
FIGURE_CHOICES = ("none", "png", "all")
DEFAULT_FIGURES = "png"
STATUSES = ("ok", "failed")
RENDERERS = {"csv": render_csv, "latex": render_latex, "md": render_markdown}


@dataclass(frozen=True)
class ReportOutcome:
    """What `write_report` did (the CLI prints it)."""

    out: Path
    written: tuple[Path, ...]  # every file written, in order
    figures: tuple[Path, ...]  # PNGs relative to `out` (with a PDF beside each: --figures all)
    runs: int
    ok: int
    failed: int
    inputs: tuple[Path, ...]
    metric: ShownMetric
    compare_source: str | None
    notes: tuple[str, ...] = ()  # e.g. runs left out because their records were damaged
    verdict: Verdict | None = None  # with --verdict
    seconds: dict[str, float] = field(default_factory=dict)  # per stage: read, tables, ...


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
    """One result dir through the store, checked; adds `_root`."""
    if not root.is_dir():
        raise UserInputError(f"report: {root}: not a directory (expected a result dir)")
    store = ResultStore(root)
    if not store.runs_csv.is_file() and not store.finished_keys():
        raise UserInputError(f"report: {root}: no runs.csv (not a hamgraph result dir)")
    path = store.runs_csv
    store.verify()  # damaged records are set aside (one warning each) and left out
    try:
        frame = store.frame()
    except pd.errors.EmptyDataError:
        raise UserInputError(f"report: {path}: empty file, no header and no runs") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"report: {path}: not a readable runs.csv ({first})") from None
    missing = [c for c in RUN_COLUMNS if c not in frame.columns]
    if missing:
        raise UserInputError(
            f"report: {path}: not a hamgraph runs.csv, missing columns: {', '.join(missing)}"
        )
    if frame.empty:
        raise UserInputError(f"report: {path}: no runs (header only)")
    # columns other than RUN_COLUMNS (a newer hamgraph's or a plug-in's settings) are kept:
    # `cells.setting_columns` tells configurations apart by them
    frame = frame[[*RUN_COLUMNS, *(c for c in frame.columns if c not in RUN_COLUMNS)]].copy()
    bad = frame.loc[~frame["status"].isin(STATUSES), "status"]
    if not bad.empty:
        raise UserInputError(
            f"report: {path}: row {bad.index[0] + 2}: status {bad.iloc[0]!r} is not one of "
            f"{', '.join(STATUSES)}"
        )
    for col in ("alpha", "beta", "clamp", "val", "test", "run", "seed"):
        numeric = pd.to_numeric(frame[col].replace("", math.nan), errors="coerce")
        wrong = frame[col].notna() & (frame[col] != "") & numeric.isna()
        wrong &= ~frame[col].astype(str).str.lower().isin(["nan"])
        if wrong.any():
            row = int(wrong.to_numpy().nonzero()[0][0])
            raise UserInputError(
                f"report: {path}: row {row + 2}: {col} {frame[col].iloc[row]!r} is not a number"
            )
        frame[col] = numeric.astype(float)
    for col in ("run", "seed"):
        if frame[col].isna().any():
            row = int(frame[col].isna().to_numpy().nonzero()[0][0])
            raise UserInputError(f"report: {path}: row {row + 2}: {col} is empty")
        frame[col] = frame[col].astype(int)
    ham = frame["optimizer"].isin(["ham", "nham"])
    no_params = ham & (frame["alpha"].isna() | frame["beta"].isna())
    if no_params.any():
        row = int(no_params.to_numpy().nonzero()[0][0])
        raise UserInputError(f"report: {path}: row {row + 2}: a HAM / nHAM run without alpha/beta")
    # an "ok" run without finite numbers cannot be averaged: count it as failed
    finite = frame["val"].map(math.isfinite) & frame["test"].map(math.isfinite)
    frame.loc[~finite.astype(bool), "status"] = "failed"
    frame["_root"] = str(root)
    return frame


def load_runs(paths: Sequence[Path]) -> pd.DataFrame:
    """Every result dir's runs (through `ResultStore`), concatenated, one row per key.

    Raises UserInputError (one line, naming the dir or file) for a missing, empty or foreign
    result dir.
    """
    if not paths:
        raise UserInputError("report: no result dir given")
    frames = [_read_one(Path(p)) for p in paths]
    frame = pd.concat(frames, ignore_index=True)
    frame["_order"] = range(len(frame))
    frame["_ok"] = frame["status"] == "ok"
    frame = frame.sort_values(["_ok", "_order"]).drop_duplicates("key", keep="last")
    same = [*setting_columns(list(frame.columns)), "run", "seed"]
    dup = frame.duplicated(same, keep="last")
    if dup.any():
        log.warning(
            "report: %d runs share their cell, run and seed with a run of another key (other "
            "hyperparameters?), keeping one of each; first: %s",
            int(dup.sum()),
            frame.loc[dup, "key"].iloc[0],
        )
        frame = frame.loc[~dup]
    differ = _differ_within_cells(frame)
    if differ:
        log.warning(
            "report: runs of one cell differ in settings beyond the cell columns (%s): the main "
            "tables group runs by the cell columns only; --verdict tells these configurations "
            "apart",
            ", ".join(differ),
        )
    return frame.sort_values("_order").drop(columns=["_order", "_ok"]).reset_index(drop=True)


def _differ_within_cells(frame: pd.DataFrame) -> list[str]:
    """The settings columns beyond CELL_COLUMNS (a newer hamgraph's, a plug-in's display name
    or target) whose values differ among the runs of one cell; columns that are constant
    within every cell (one plug-in target per model) are not a problem."""
    extra = [c for c in setting_columns(list(frame.columns)) if c not in CELL_COLUMNS]
    if not extra:
        return []
    keys = [c for c in CELL_COLUMNS if c in frame.columns]
    counts = frame.groupby(keys, sort=False, dropna=False)[extra].nunique(dropna=False)
    return [c for c in extra if (counts[c] > 1).any()]


def damage_notes(paths: Sequence[Path]) -> list[str]:
    """One note per result dir with runs left out because their records were damaged (set aside
    under `<dir>/damaged/` by the store, now or by an earlier command, and not trained again)."""
    notes = []
    for path in paths:
        keys = ResultStore(path).damaged_keys()
        if keys:
            notes.append(
                f"{len(keys)} run(s) of {path} left out: their records were damaged and set "
                f"aside in {Path(path) / 'damaged'} (first: {keys[0]}); `hamgraph run` or "
                "`hamgraph sweep` on that dir trains them again"
            )
    return notes


def _with_notes(name: str, text: str, notes: Sequence[str]) -> str:
    """main.md and report.html with a "Left out" section listing `notes` (damage_notes)."""
    if not notes:
        return text
    if name == "main.md":
        return text.rstrip("\n") + "\n\n## Left out\n\n" + "".join(f"- {n}\n" for n in notes)
    if name == "report.html" and "</body>" in text:
        import html

        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        section = f"<h2>Left out</h2>\n<ul class='notes'>{items}</ul>\n"
        head, _, tail = text.rpartition("</body>")
        return head + section + "</body>" + tail
    return text


def _resolve_out(paths: Sequence[Path], out: Path | None) -> Path:
    target = Path(out) if out is not None else Path(paths[0]) / "report"
    if target.exists() and not target.is_dir():
        raise UserInputError(f"report: --out {target} exists and is not a directory")
    return target


def check_figures(figures: str) -> str:
    """Normalize `--figures`; an unknown value is a UserInputError listing the valid ones."""
    value = str(figures).strip().lower()
    if value not in FIGURE_CHOICES:
        raise UserInputError(
            f"report: unknown --figures {figures!r}; valid: {', '.join(FIGURE_CHOICES)}"
        )
    return value


def _histories(runs: pd.DataFrame, keys: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The per-epoch histories of some runs, through the store (missing ones are left out)."""
    from hamgraph.report.figures import history_frame

    root_of = dict(zip(runs["key"], runs["_root"], strict=True))
    out = {}
    for key in keys:
        frame = history_frame(root_of[key], key)
        if frame is not None:
            out[key] = frame
    return out


def write_report(
    paths: Sequence[Path],
    formats: Sequence[str] = DEFAULT_FORMATS,
    out: Path | None = None,
    metric: str = "test",
    compare: str | Path | None = None,
    verdict: bool = False,
    figures: str = DEFAULT_FIGURES,
    processes: int | None = None,
) -> ReportOutcome:
    """Read result dirs, write the tables (per `formats`), the verdict (when `verdict`), the
    figures (per `figures`: none | png | all = PNG and PDF) and report.html.

    `metric`: "test" | "val" (what the main tables and the verdict compare). `compare`: a
    published source (a shipped name, e.g. "ham-paper", or a CSV path) to put beside our
    values, or None. `processes`: figure worker processes (None: one per CPU, at most 8).
    Raises UserInputError / UnknownNameError on bad input (the verdict: fewer than 3
    comparable workloads), before anything is written.
    """
    clock = _Clock()
    wanted = check_formats(formats)
    figures = check_figures(figures)
    if metric not in METRICS:
        raise UserInputError(f"report: unknown --metric {metric!r}; valid: {', '.join(METRICS)}")
    paths = [Path(p) for p in paths]
    runs = load_runs(paths)
    published = None
    if compare is not None:
        from hamgraph.compare import load_published

        published = load_published(compare)
    target = _resolve_out(paths, out)
    clock.lap("read")
    tables = build_tables(runs, metric=metric, published=published)  # type: ignore[arg-type]
    notes = damage_notes(paths)
    for note in notes:
        log.warning("report: %s", note)
    clock.lap("tables")
    judged = None
    if verdict:
        from hamgraph.report.verdict import build_sides, build_verdict, history_keys

        sides = build_sides(runs, metric)
        histories = _histories(runs, history_keys(sides))
        judged = build_verdict(runs, histories, metric=metric, sides=sides)
        clock.lap("verdict")
    rendered: dict[str, str] = {}
    for fmt in wanted:
        if fmt in RENDERERS:
            rendered.update(RENDERERS[fmt](tables))
    if judged is not None:
        rendered.update(render_verdict(judged, wanted))

    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, text in rendered.items():
        atomic_write_text(target / name, _with_notes(name, text, notes))
        written.append(target / name)
    clock.lap("render")

    drawn: list[Path] = []
    if figures != "none":
        from hamgraph.report.figures import write_figures

        kinds = ("png",) if figures == "png" else ("png", "pdf")
        drawn = write_figures(tables, target / "figures", verdict=judged, kinds=kinds,
                              processes=processes)  # fmt: skip
        for f in drawn:
            written += [target / f.with_suffix(f".{k}") for k in kinds]
        clock.lap("figures")
    if "html" in wanted:
        page = render_html(tables, drawn, paths, verdict=judged, figures_wanted=figures != "none")
        for name, text in page.items():
            atomic_write_text(target / name, _with_notes(name, text, notes))
            written.append(target / name)
    ok = int((runs["status"] == "ok").sum())
    return ReportOutcome(
        out=target,
        written=tuple(written),
        figures=tuple(drawn),
        runs=len(runs),
        ok=ok,
        failed=len(runs) - ok,
        inputs=tuple(paths),
        metric=metric,  # type: ignore[arg-type]
        compare_source=tables.compare_source,
        notes=tuple(notes),
        verdict=judged,
        seconds=clock.laps,
    )


class _Clock:
    """Seconds per stage of a report (benchmarks/report_scale.py prints them)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.laps[stage] = now - self._last
        self._last = now
