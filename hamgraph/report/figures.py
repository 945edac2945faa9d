"""Figures of `hamgraph report`: alpha x beta heatmaps, training curves, HAM diagnostics, and
ours vs published.

matplotlib is optional (`pip install hamgraph[plots]`); it is imported lazily and only through
its object-oriented API (`matplotlib.figure.Figure`, Agg canvas), so the process-wide pyplot
backend is never touched. Without matplotlib the report is written without figures and a
warning says how to get them.

Every figure is written twice, as PNG (linked from report.html) and PDF (for papers):

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

Histories are read through the result store (`ResultStore.load`), like everything else.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from hamgraph.atomic import atomic_path
from hamgraph.store import ResultStore

if TYPE_CHECKING:
    from hamgraph.report.rows import MainCell, ReportTables

log = logging.getLogger(__name__)

MAX_GRID_SIDE = 15  # more distinct alphas or betas than this: scatter instead of a grid
COLORS = {"adam": "tab:gray", "ham": "tab:blue", "nham": "tab:red"}
HISTORY_COLUMNS = ("epoch", "loss", "val", "sign_flips", "mean_abs_weight")


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(name)).strip("_") or "x"


def _save(fig: Any, fig_dir: Path, stem: str) -> Path:
    """Write <stem>.png and <stem>.pdf atomically; return the PNG path relative to the report."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    for fmt in ("png", "pdf"):
        kwargs: dict[str, Any] = {"format": fmt, "bbox_inches": "tight"}
        if fmt == "png":
            kwargs["dpi"] = 120
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


def _history(root: str, key: str) -> pd.DataFrame | None:
    """The per-epoch history of one run from its record; None (and a warning) when missing."""
    try:
        history = ResultStore(root).load(key).history
    except (OSError, ValueError, KeyError) as exc:
        log.warning("report: skipping history of %s in %s: %s", key, root, type(exc).__name__)
        return None
    if not history:
        return None
    return pd.DataFrame([vars(e) for e in history], columns=list(HISTORY_COLUMNS))


def _aggregate(cell: MainCell) -> pd.DataFrame | None:
    """Mean and std per epoch over the ok runs of one shown cell."""
    frames = [f for f in (_history(r.root, r.key) for r in cell.runs) if f is not None]
    if not frames:
        return None
    cols = list(HISTORY_COLUMNS[1:])
    data = pd.concat(frames, ignore_index=True)
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


def write_figures(tables: ReportTables, fig_dir: Path) -> list[Path]:
    """Write every figure the results allow; return the PNG paths relative to the report dir.

    Without matplotlib: a warning and no figures.
    """
    if not matplotlib_available():
        log.warning("report: matplotlib is not installed, no figures (install hamgraph[plots])")
        return []
    written: list[Path] = []
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
            written.append(_save(_heatmap(cells, selected, title), fig_dir, name))

        series = [(c, agg) for c in block if c.n > 0 and (agg := _aggregate(c)) is not None]
        if series:
            fig = _curves(
                series,
                f"{display}: training (mean ± std over runs)",
                [("loss", 1.0, "training loss", False),
                 ("val", 100.0, "validation metric (x100)", False)],
            )  # fmt: skip
            written.append(_save(fig, fig_dir, f"curves_{stem}"))
            fig = _curves(
                series,
                f"{display}: HAM-targeted weights",
                [("sign_flips", 1.0, "sign flips per epoch", True),
                 ("mean_abs_weight", 1.0, "mean |w|", False)],
            )  # fmt: skip
            written.append(_save(fig, fig_dir, f"diagnostics_{stem}"))

    if tables.compare_source is not None:
        what = "test metric" if tables.metric == "test" else "best validation metric"
        for dataset in dict.fromkeys(c.dataset for c in shown):
            cells = [
                c for c in shown
                if c.dataset == dataset and c.compare is not None and c.compare.has_value
            ]  # fmt: skip
            if cells:
                fig = _compare_figure(
                    cells, f"{dataset}: ours vs {tables.compare_source}", tables.compare_source,
                    what,
                )  # fmt: skip
                written.append(_save(fig, fig_dir, f"compare_{_safe(dataset)}"))
    return written
