"""Figures of `hamgraph report`: alpha x beta heatmaps, training curves, HAM diagnostics, ours
vs published, and the verdict's figures. They draw what `report.rows` and `report.verdict`
return; nothing here computes a statistic.

matplotlib is optional (`pip install hamgraph[plots]`); it is imported lazily and only through
its object-oriented API (`matplotlib.figure.Figure`, Agg canvas), so the process-wide pyplot
backend is never touched. Without matplotlib the report is written without figures and a
warning says how to get them.

Every figure is written as PNG (linked from report.html) and, with `--figures all`, as PDF (for
papers). Each figure is a `FigureJob` (a module-level builder and its picklable inputs): jobs
whose inputs, kinds and drawing code are unchanged since the last report into the same dir
(digests in `figures/.inputs.json`) are not drawn again; the others are drawn in worker
processes when there are MIN_PARALLEL or more.

- `heatmap_<dataset>_<model>[_<setting>]`: mean validation and test metric (×100) over the
  (alpha, beta) cells of HAM and nHAM with one HAM setting (default, or e.g.
  sign_source=previous), when there are at least two such cells (a grid or a sweep).
  The selected cells (best mean validation) are outlined. Sweeps with many distinct values
  (continuous search spaces) are drawn as a scatter plot instead of a grid.
- `curves_<dataset>_<model>`: training loss and validation metric per epoch, mean over runs
  with a ±1 std band, for Adam and the selected HAM / nHAM cells.
- `diagnostics_<dataset>_<model>`: sign flips per epoch and mean |w| of the HAM-targeted weights
  (the paper's diagnostics), Adam vs HAM vs nHAM.
- `compare_<dataset>` (with `--compare`): ours vs published per method, mean ± std error bars,
  for the methods that have a published value.
- with the verdict: `verdict_intervals` (mean / IQM normalized improvement and P(improvement)
  with their CIs), `verdict_cd` (critical-difference diagram of mean ranks),
  `verdict_profile` (performance profile), `budget_<dataset>_<model>` (expected best
  validation and its test against configurations tried), `wallclock_<dataset>_<model>`
  (validation against training time, the time-to-target target dashed).

Histories are read through the result store (`ResultStore.load`), like everything else.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import pickle
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hamgraph.atomic import atomic_path, atomic_write_text
from hamgraph.store import ResultStore

if TYPE_CHECKING:
    from hamgraph.report.rows import MainCell, ReportTables
    from hamgraph.report.verdict import (
        BudgetCurve,
        Profile,
        Ranking,
        SettingVerdict,
        TimeCurve,
        Verdict,
    )

log = logging.getLogger(__name__)

MAX_GRID_SIDE = 15  # more distinct alphas or betas than this: scatter instead of a grid
COLORS = {"adam": "tab:gray", "ham": "tab:blue", "nham": "tab:red"}
HISTORY_COLUMNS = ("epoch", "loss", "val", "sign_flips", "mean_abs_weight")
PNG_DPI = 100  # report.html size; the PDFs (--figures all) are vector graphics
MIN_PARALLEL = 8  # fewer figures to draw: in this process (a pool's start costs more)
CACHE_NAME = ".inputs.json"  # stem -> digest of the inputs of the figure last drawn there


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(name)).strip("_") or "x"


def _save(fig: Any, fig_dir: Path, stem: str, kinds: Sequence[str] = ("png", "pdf")) -> Path:
    """Write <stem>.<kind> atomically per kind; return the PNG path relative to the report."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    for fmt in kinds:
        # every figure uses the constrained layout: no bbox_inches="tight" (a second full draw)
        kwargs: dict[str, Any] = {"format": fmt}
        if fmt == "png":
            kwargs["dpi"] = PNG_DPI
        else:
            kwargs["metadata"] = {"CreationDate": None}  # reproducible bytes
        with atomic_path(fig_dir / f"{stem}.{fmt}") as tmp:
            fig.savefig(tmp, **kwargs)
    return Path(fig_dir.name) / f"{stem}.png"


def _fmt(value: float) -> str:
    return f"{value:g}"


# ---- heatmaps --------------------------------------------------------------------------------


def _heatmap(cells: pd.DataFrame, selected: list[tuple[float, float]], title: str) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    alphas = sorted(cells["alpha"].unique())
    betas = sorted(cells["beta"].unique())
    grid = len(alphas) <= MAX_GRID_SIDE and len(betas) <= MAX_GRID_SIDE
    fig = Figure(
        figsize=(max(7.0, 2.0 + 1.6 * min(len(alphas), MAX_GRID_SIDE)), 3.8), layout="constrained"
    )
    axes = fig.subplots(1, 2)
    for ax, col, label in zip(axes, ("val_mean", "test_mean"), ("validation", "test"), strict=True):
        if grid:
            table = cells.pivot_table(index="beta", columns="alpha", values=col, aggfunc="mean")
            table = table.reindex(index=betas, columns=alphas)
            image = ax.imshow(
                table.to_numpy(dtype=float), cmap="viridis", aspect="auto", origin="lower"
            )
            ax.set_xticks(range(len(alphas)), [_fmt(a) for a in alphas])
            ax.set_yticks(range(len(betas)), [_fmt(b) for b in betas])
            for i in range(len(betas)):
                for j in range(len(alphas)):
                    value = table.iat[i, j]
                    if not math.isnan(value):
                        ax.text(
                            j,
                            i,
                            f"{value:.1f}",
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white",
                        )
            for alpha, beta in selected:
                if alpha in alphas and beta in betas:
                    ax.add_patch(
                        Rectangle(
                            (alphas.index(alpha) - 0.5, betas.index(beta) - 0.5),
                            1,
                            1,
                            fill=False,
                            edgecolor="red",
                            linewidth=2,
                        )
                    )
        else:
            image = ax.scatter(cells["alpha"], cells["beta"], c=cells[col], cmap="viridis", s=30)
            ax.set_xscale("symlog")
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.scatter(
                [a for a, _ in selected],
                [b for _, b in selected],
                marker="s",
                s=90,
                facecolors="none",
                edgecolors="red",
            )
        ax.set_xlabel("alpha")
        ax.set_ylabel("beta")
        ax.set_title(f"{label} (x100)", fontsize=9)
        fig.colorbar(image, ax=ax)
    fig.suptitle(title, fontsize=10)
    return fig


# ---- histories -------------------------------------------------------------------------------


def history_frame(root: str, key: str) -> pd.DataFrame | None:
    """The per-epoch history of one run from its record (every EpochStats field, train_seconds
    included, and `pack_size`: how many runs trained together with it, 1 when alone or not
    recorded); None (and a warning) when missing."""
    try:
        result = ResultStore(root).load(key)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("report: skipping history of %s in %s: %s", key, root, type(exc).__name__)
        return None
    if not result.history:
        return None
    frame = pd.DataFrame([vars(e) for e in result.history])
    frame["pack_size"] = int(result.provenance.get("pack_size", "1") or 1)
    return frame


def _aggregate(cell: MainCell) -> pd.DataFrame | None:
    """Mean and std per epoch over the ok runs of one shown cell."""
    frames = [f for f in (history_frame(r.root, r.key) for r in cell.runs) if f is not None]
    if not frames:
        return None
    cols = list(HISTORY_COLUMNS[1:])
    data = pd.concat(frames, ignore_index=True)[["epoch", *cols]]
    data[cols] = data[cols].apply(pd.to_numeric, errors="coerce")
    return data.groupby("epoch")[cols].agg(["mean", "std"])


def _label(cell: MainCell) -> str:
    if math.isnan(cell.alpha):
        return cell.row
    return f"{cell.row} (alpha={_fmt(cell.alpha)}, beta={_fmt(cell.beta)})"


def _band(ax: Any, agg: pd.DataFrame, col: str, scale: float, color: str, label: str) -> None:
    mean = agg[(col, "mean")] * scale
    std = agg[(col, "std")].fillna(0.0) * scale
    ax.plot(agg.index, mean, color=color, label=label, linewidth=1.2)
    ax.fill_between(agg.index, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def _curves(
    series: list[tuple[MainCell, pd.DataFrame]], title: str, panels: Sequence[tuple]
) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (col, scale, ylabel, log_y) in zip(axes, panels, strict=True):
        for i, (cell, agg) in enumerate(series):
            color = COLORS.get(cell.optimizer, f"C{i % 10}")
            if cell.optimizer in COLORS and cell.method != cell.optimizer:  # a variant
                color = f"C{(i + 3) % 10}"
            _band(ax, agg, col, scale, color, _label(cell))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("symlog")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


# ---- ours vs published -----------------------------------------------------------------------


def _compare_figure(cells: list[MainCell], title: str, source: str, what: str) -> Any:
    """Ours and published mean ± std per method, side by side, with error bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(4.0, 1.2 * len(cells) + 2.0), 3.6), layout="constrained")
    ax = fig.subplots()
    xs = list(range(len(cells)))
    width = 0.35
    ours_std = [0.0 if math.isnan(c.std) else c.std for c in cells]
    pub_std = [0.0 if math.isnan(c.compare.std) else c.compare.std for c in cells]  # type: ignore[union-attr]
    ax.errorbar([x - width / 2 for x in xs], [c.mean for c in cells], yerr=ours_std, fmt="o",
                capsize=4, color="tab:blue", label="ours")  # fmt: skip
    ax.errorbar([x + width / 2 for x in xs], [c.compare.mean for c in cells],  # type: ignore[union-attr]
                yerr=pub_std, fmt="s", capsize=4, color="tab:orange", label=source)  # fmt: skip
    for x, c in zip(xs, cells, strict=True):
        if c.compare is not None and c.compare.within_noise:
            ax.annotate("≈", (x, max(c.mean, c.compare.mean)), ha="center", va="bottom")
    ax.set_xticks(xs, [c.row for c in cells], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(f"{what} (x100)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return fig


# ---- entry point -----------------------------------------------------------------------------


def _variant(method: str, kind: str) -> str:
    """"ham (sign_source=previous)" -> " (sign_source=previous)": HAM and nHAM of one setting
    share a heatmap."""
    return method[len(kind):] if method.startswith(kind) else method


@dataclass(frozen=True)
class FigureJob:
    """One figure to draw: `build(*args)` returns a matplotlib Figure. `stamp`: what else its
    content depends on (the record files' mtimes of the histories it reads), for the cache."""

    stem: str
    build: Callable[..., Any]
    args: tuple
    stamp: tuple = ()

    def digest(self, kinds: Sequence[str]) -> str:
        payload = pickle.dumps(
            (self.build.__name__, self.args, self.stamp, tuple(kinds), _code_digest())
        )
        return hashlib.sha256(payload).hexdigest()


@functools.cache
def _code_digest() -> str:
    """This module's source: a figure drawn by other drawing code is drawn again."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _draw(job: FigureJob, fig_dir: Path, kinds: Sequence[str]) -> bool:
    """Draw and save one figure; False when its inputs turned out empty (no file)."""
    fig = job.build(*job.args)
    if fig is None:
        return False
    _save(fig, fig_dir, job.stem, kinds)
    return True


def _stamps(cells: Sequence[MainCell]) -> tuple:
    out = []
    for c in cells:
        for r in c.runs:
            try:
                out.append((r.key, ResultStore(r.root).record_path(r.key).stat().st_mtime_ns))
            except OSError:
                out.append((r.key, None))
    return tuple(out)


def _heatmap_job(cells: pd.DataFrame, selected: list, title: str) -> Any:
    return _heatmap(cells, selected, title)


def _curves_job(block: list[MainCell], display: str, kind: str) -> Any | None:
    series = [(c, agg) for c in block if c.n > 0 and (agg := _aggregate(c)) is not None]
    if not series:  # no history could be read
        return None
    if kind == "curves":
        return _curves(
            series, f"{display}: training (mean ± std over runs)",
            [("loss", 1.0, "training loss", False),
             ("val", 100.0, "validation metric (x100)", False)],
        )  # fmt: skip
    return _curves(
        series, f"{display}: HAM-targeted weights",
        [("sign_flips", 1.0, "sign flips per epoch", True),
         ("mean_abs_weight", 1.0, "mean |w|", False)],
    )  # fmt: skip


def figure_jobs(tables: ReportTables, verdict: Verdict | None = None) -> list[FigureJob]:
    """Every figure the results allow, as jobs (nothing drawn yet)."""
    jobs: list[FigureJob] = []
    shown = tables.cells
    grid = tables.grid
    ham_grid = grid[grid["optimizer"].isin(["ham", "nham"]) & (grid["n"] > 0)]
    blocks = list(dict.fromkeys((c.dataset, c.model) for c in shown))
    for dataset, model in blocks:
        block = [c for c in shown if (c.dataset, c.model) == (dataset, model)]
        display = f"{dataset} / {block[0].model_display}"
        stem = f"{_safe(dataset)}_{_safe(model)}"
        here = ham_grid[(ham_grid["dataset"] == dataset) & (ham_grid["model"] == model)]
        variants = [_variant(m, k) for m, k in zip(here["method"], here["optimizer"], strict=True)]
        for variant, cells in here.groupby(pd.Series(variants, index=here.index), sort=False):
            if len(cells.drop_duplicates(["alpha", "beta"])) < 2:
                continue
            selected = [
                (c.alpha, c.beta) for c in block
                if c.is_ham and c.selected and _variant(c.method, c.optimizer) == variant
            ]  # fmt: skip
            name = f"heatmap_{stem}" + (f"_{_safe(variant)}" if variant else "")
            title = f"{display}{variant}: mean over runs, selected cells outlined"
            jobs.append(FigureJob(name, _heatmap_job, (cells, selected, title)))
        with_runs = [c for c in block if c.n > 0 and c.runs]
        if with_runs:
            stamp = _stamps(with_runs)
            jobs.append(FigureJob(f"curves_{stem}", _curves_job, (with_runs, display, "curves"),
                                  stamp))  # fmt: skip
            jobs.append(FigureJob(f"diagnostics_{stem}", _curves_job,
                                  (with_runs, display, "diagnostics"), stamp))  # fmt: skip

    if tables.compare_source is not None:
        what = "test metric" if tables.metric == "test" else "best validation metric"
        for dataset in dict.fromkeys(c.dataset for c in shown):
            cells = [
                c for c in shown
                if c.dataset == dataset and c.compare is not None and c.compare.has_value
            ]  # fmt: skip
            if cells:
                title = f"{dataset}: ours vs {tables.compare_source}"
                jobs.append(FigureJob(f"compare_{_safe(dataset)}", _compare_figure,
                                      (cells, title, tables.compare_source, what)))  # fmt: skip
    if verdict is not None:
        jobs += verdict_jobs(verdict)
    return jobs


def write_figures(
    tables: ReportTables,
    fig_dir: Path,
    verdict: Verdict | None = None,
    kinds: Sequence[str] = ("png", "pdf"),
    processes: int | None = None,
) -> list[Path]:
    """Draw every figure the results allow; return the PNG paths relative to the report dir.

    A figure whose inputs (and kinds) are unchanged since the last report in `fig_dir` and
    whose files exist is not drawn again (`fig_dir/.inputs.json`). The others are drawn in
    `processes` worker processes (None: one per CPU, at most 8; 1: in this process).
    Without matplotlib: a warning and no figures.
    """
    if not matplotlib_available():
        log.warning("report: matplotlib is not installed, no figures (install hamgraph[plots])")
        return []
    jobs = figure_jobs(tables, verdict)
    cache_path = fig_dir / CACHE_NAME
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    digests = {job.stem: job.digest(kinds) for job in jobs}
    todo = [
        job for job in jobs
        if cache.get(job.stem) != digests[job.stem]
        or not all((fig_dir / f"{job.stem}.{k}").is_file() for k in kinds)
    ]  # fmt: skip
    workers = min(processes or min(os.cpu_count() or 1, 8), len(todo))
    if workers > 1 and (processes or len(todo) >= MIN_PARALLEL):
        import multiprocessing

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
            drawn = list(pool.map(_draw, todo, [fig_dir] * len(todo), [kinds] * len(todo)))
    else:
        drawn = [_draw(job, fig_dir, kinds) for job in todo]
    empty = {job.stem for job, ok in zip(todo, drawn, strict=True) if not ok}
    log.info("report: %d figures drawn, %d unchanged", sum(drawn), len(jobs) - len(todo))
    done = {s: d for s, d in digests.items() if s not in empty}
    if done:
        fig_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_path, json.dumps({**cache, **done}, indent=0, sort_keys=True))
    return [Path(fig_dir.name) / f"{job.stem}.png" for job in jobs if job.stem not in empty]


# ---- the verdict -----------------------------------------------------------------------------


def verdict_jobs(verdict: Verdict) -> list[FigureJob]:
    """Critical-difference diagram, performance profile, interval estimates, tuning-budget
    curves and wall-clock curves of a verdict."""
    jobs = [FigureJob("verdict_intervals", _intervals_figure, (verdict.rows, verdict.resamples))]
    if verdict.ranking is not None:
        jobs.append(FigureJob("verdict_cd", _cd_figure, (verdict.ranking,)))
    if verdict.profile is not None:
        jobs.append(FigureJob("verdict_profile", _profile_figure, (verdict.profile,)))
    compared = {(p.dataset, p.model) for p in verdict.pairs}
    budgets: dict[tuple[str, str], list[BudgetCurve]] = {}
    for b in verdict.budgets:
        if (b.dataset, b.model) in compared:
            budgets.setdefault((b.dataset, b.model), []).append(b)
    for (dataset, model), curves in budgets.items():
        if max(len(c.k) for c in curves) >= 2:
            jobs.append(FigureJob(f"budget_{_safe(dataset)}_{_safe(model)}", _budget_figure,
                                  (curves, f"{dataset} / {model}")))  # fmt: skip
    timed: dict[tuple[str, str], list[TimeCurve]] = {}
    for t in verdict.time_curves:
        timed.setdefault((t.dataset, t.model), []).append(t)
    for (dataset, model), curves in timed.items():
        targets = sorted({p.target for p in verdict.pairs
                          if (p.dataset, p.model) == (dataset, model) and math.isfinite(p.target)})
        jobs.append(FigureJob(f"wallclock_{_safe(dataset)}_{_safe(model)}", _wallclock_figure,
                              (curves, targets, f"{dataset} / {model}")))  # fmt: skip
    return jobs


def _intervals_figure(rows: Sequence[SettingVerdict], resamples: int) -> Any:
    """Mean / IQM normalized improvement and P(improvement), point and 95% CI per setting."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 0.6 * len(rows) + 1.8), layout="constrained")
    axes = fig.subplots(1, 3, sharey=True)
    ys = list(range(len(rows)))
    panels = [
        ("mean_improvement", "mean_ci", "mean normalized improvement (%)", 0.0),
        ("iqm_improvement", "iqm_ci", "IQM normalized improvement (%)", 0.0),
        ("p_improvement", "p_ci", "P(setting > baseline)", 0.5),
    ]
    for ax, (point, ci, label, null) in zip(axes, panels, strict=True):
        for y, r in zip(ys, rows, strict=True):
            lo, hi = getattr(r, ci)
            ax.plot([lo, hi], [y, y], color=f"C{y % 10}", linewidth=6, alpha=0.5,
                    solid_capstyle="butt")  # fmt: skip
            ax.plot([getattr(r, point)], [y], "k|", markersize=14)
        ax.axvline(null, color="gray", linestyle="--", linewidth=1)
        ax.set_xlabel(label, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(ys, [f"{r.setting} vs {r.baseline}" for r in rows], fontsize=8)
    axes[0].set_ylim(-0.6, len(rows) - 0.4)
    fig.suptitle(f"Interval estimates across workloads (95% stratified bootstrap, {resamples} "
                 "resamples)", fontsize=10)  # fmt: skip
    return fig


def _cd_figure(ranking: Ranking) -> Any:
    """Critical-difference diagram (Demsar 2006): mean ranks on an axis, methods whose mean
    ranks differ by less than the Nemenyi CD joined by a bar."""
    from matplotlib.figure import Figure

    methods, ranks = list(ranking.methods), list(ranking.mean_ranks)
    k = len(methods)
    fig = Figure(figsize=(8, 1.2 + 0.35 * k), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(k + 0.3, 0.7)  # rank 1 (best) on the right, as in Demsar's figures
    ax.set_ylim(-(k + 1) * 0.5 - 0.5, 1.6)
    ax.axhline(0, color="black", linewidth=1)
    for r in range(1, k + 1):
        ax.plot([r, r], [0, 0.12], color="black", linewidth=1)
        ax.text(r, 0.2, str(r), ha="center", fontsize=8)
    for i, (m, r) in enumerate(zip(methods, ranks, strict=True)):
        y = -(i + 1) * 0.5
        right = i < (k + 1) // 2  # the better half labelled on the right
        edge = 0.7 if right else k + 0.3
        ax.plot([r, r, edge], [0, y, y], color="black", linewidth=0.8)
        ax.text(edge, y, f" {m} ({r:.2f}) ", ha="left" if right else "right", va="center",
                fontsize=8)  # fmt: skip
    if math.isfinite(ranking.cd):
        start = 1.0
        ax.plot([start, start + ranking.cd], [1.0, 1.0], color="black", linewidth=2)
        ax.text(start + ranking.cd / 2, 1.15, f"CD = {ranking.cd:.2f}", ha="center", fontsize=8)
        # cliques: maximal runs of methods (in rank order) within CD of each other
        level = 0
        for i in range(k):
            j = max(j for j in range(i, k) if ranks[j] - ranks[i] < ranking.cd)
            if j > i and not (i > 0 and ranks[j] - ranks[i - 1] < ranking.cd):
                y = -0.15 - 0.12 * level
                ax.plot([ranks[i] - 0.03, ranks[j] + 0.03], [y, y], color="tab:red", linewidth=3)
                level += 1
    ax.axis("off")
    ax.set_title(f"Mean ranks over {len(ranking.workloads)} workloads; Friedman p = "
                 f"{ranking.friedman_p:.3g}", fontsize=9)  # fmt: skip
    return fig


def _profile_figure(profile: Profile) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, (method, fractions) in enumerate(profile.fractions.items()):
        ax.step(profile.tau, fractions, where="post", label=method, color=f"C{i % 10}")
    ax.set_xlabel("tau: points (x100) below the best method on the workload")
    ax.set_ylabel("fraction of workloads within tau")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Performance profile", fontsize=10)
    return fig


def _budget_figure(curves: Sequence[BudgetCurve], title: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    axes = fig.subplots(1, 2)
    for i, c in enumerate(curves):
        for ax, values in zip(axes, (c.expected_val, c.expected_test), strict=True):
            ax.plot(c.k, values, marker="o", markersize=3, label=f"{c.method} (N={len(c.k)})",
                    color=f"C{i % 10}")  # fmt: skip
    from matplotlib.ticker import MaxNLocator

    for ax, label in zip(axes, ("expected best validation (x100)",
                                "expected test of that choice (x100)"), strict=True):  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("configurations tried (k)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title}: tuning budget (expected maximum, Dodge et al.)", fontsize=10)
    return fig


def _wallclock_figure(curves: Sequence[TimeCurve], targets: Sequence[float], title: str) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.subplots()
    for i, c in enumerate(curves):
        ax.plot(c.seconds, c.val, label=c.method, color=f"C{i % 10}", linewidth=1.2)
    for t in targets:
        ax.axhline(t, color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("training time (s, evaluation excluded)")
    ax.set_ylabel("validation metric (x100), mean over runs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}: against wall-clock; dashed: target", fontsize=10)
    return fig
