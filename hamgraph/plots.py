"""Figures of `hamgraph report`: alpha x beta heatmaps, training curves, HAM diagnostics.

matplotlib is optional (`pip install hamgraph[plots]`); it is imported lazily and only through
its object-oriented API (`matplotlib.figure.Figure`, Agg canvas), so the process-wide pyplot
backend is never touched. Without matplotlib the report is written without figures and a
warning says how to get them.

Every figure is written twice, as PNG (linked from report.html) and PDF (for papers):

- `heatmap_<dataset>_<model>`: mean validation and test metric (×100) over the (alpha, beta)
  cells of HAM and nHAM, when a dataset × model has at least two cells (a grid or a sweep).
  The selected cells (best mean validation) are outlined. Sweeps with many distinct values
  (continuous search spaces) are drawn as a scatter plot instead of a grid.
- `curves_<dataset>_<model>`: training loss and validation metric per epoch, mean over runs
  with a ±1 std band, for Adam and the selected HAM / nHAM cells.
- `diagnostics_<dataset>_<model>`: sign flips per epoch and mean |w| of the HAM-targeted weights
  (the paper's diagnostics), Adam vs HAM vs nHAM.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hamgraph.atomic import atomic_path

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


def _heatmap(cells: pd.DataFrame, selected: pd.DataFrame, title: str) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    alphas = sorted(cells["alpha"].unique())
    betas = sorted(cells["beta"].unique())
    grid = len(alphas) <= MAX_GRID_SIDE and len(betas) <= MAX_GRID_SIDE
    fig = Figure(
        figsize=(max(7.0, 2.0 + 1.6 * min(len(alphas), MAX_GRID_SIDE)), 3.8), layout="constrained"
    )
    axes = fig.subplots(1, 2)
    for ax, col, label in zip(axes, ("val_mean", "mean"), ("validation", "test"), strict=True):
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
            for r in selected.itertuples():
                if r.alpha in alphas and r.beta in betas:
                    ax.add_patch(
                        Rectangle(
                            (alphas.index(r.alpha) - 0.5, betas.index(r.beta) - 0.5),
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
                selected["alpha"],
                selected["beta"],
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


def _load_history(root: str, rel: str, key: str) -> pd.DataFrame | None:
    path = Path(root) / rel if rel else Path(root) / "history" / f"{key}.csv"
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        log.warning("report: skipping history %s: %s", path, type(exc).__name__)
        return None
    if not set(HISTORY_COLUMNS) <= set(frame.columns):
        missing = sorted(set(HISTORY_COLUMNS) - set(frame.columns))
        log.warning("report: skipping history %s: missing columns %s", path, ", ".join(missing))
        return None
    return frame


def _aggregate(row: pd.Series) -> pd.DataFrame | None:
    """Mean and std per epoch over the successful runs of one cell."""
    frames = [
        f
        for f in (
            _load_history(root, rel, key)
            for root, rel, key in zip(row["roots"], row["histories"], row["keys"], strict=True)
        )
        if f is not None
    ]
    if not frames:
        return None
    cols = list(HISTORY_COLUMNS[1:])
    data = pd.concat(frames, ignore_index=True)
    data[cols] = data[cols].apply(pd.to_numeric, errors="coerce")
    return data.groupby("epoch")[cols].agg(["mean", "std"])


def _label(row: pd.Series) -> str:
    if row["optimizer"] == "adam":
        return f"{row['row']} (Adam)"
    return f"{row['row']} (alpha={_fmt(row['alpha'])}, beta={_fmt(row['beta'])})"


def _band(ax: Any, agg: pd.DataFrame, col: str, scale: float, color: str, label: str) -> None:
    mean = agg[(col, "mean")] * scale
    std = agg[(col, "std")].fillna(0.0) * scale
    ax.plot(agg.index, mean, color=color, label=label, linewidth=1.2)
    ax.fill_between(agg.index, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)


def _curves(
    series: list[tuple[pd.Series, pd.DataFrame]], title: str, panels: Sequence[tuple]
) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (col, scale, ylabel, log_y) in zip(axes, panels, strict=True):
        for row, agg in series:
            _band(ax, agg, col, scale, COLORS.get(row["optimizer"], "black"), _label(row))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("symlog")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


# ---- entry point -----------------------------------------------------------------------------


def write_figures(
    frame: pd.DataFrame, main: pd.DataFrame, cells: pd.DataFrame, fig_dir: Path
) -> list[Path]:
    """Write every figure the results allow; return the PNG paths relative to the report dir.

    `main` and `cells` are `hamgraph.report.build_main(frame)`. Without matplotlib: a warning
    and no figures.
    """
    if not matplotlib_available():
        log.warning("report: matplotlib is not installed, no figures (install hamgraph[plots])")
        return []
    written: list[Path] = []
    for (dataset, model), block in main.groupby(["dataset", "model"], sort=False):
        display = f"{block['dataset_display'].iloc[0]} / {block['model_display'].iloc[0]}"
        stem = f"{_safe(dataset)}_{_safe(model)}"

        swept = cells[
            (cells["dataset"] == dataset)
            & (cells["model"] == model)
            & (cells["optimizer"] != "adam")
            & (cells["n"] > 0)
        ]
        if len(swept.drop_duplicates(["alpha", "beta"])) >= 2:
            selected = block[(block["optimizer"] != "adam") & block["alpha"].notna()]
            fig = _heatmap(swept, selected, f"{display}: mean over runs, selected cells outlined")
            written.append(_save(fig, fig_dir, f"heatmap_{stem}"))

        series = [
            (row, agg)
            for _, row in block[block["n"] > 0].iterrows()
            if (agg := _aggregate(row)) is not None
        ]
        if not series:
            continue
        fig = _curves(
            series,
            f"{display}: training (mean ± std over runs)",
            [
                ("loss", 1.0, "training loss", False),
                ("val", 100.0, "validation metric (x100)", False),
            ],
        )
        written.append(_save(fig, fig_dir, f"curves_{stem}"))
        fig = _curves(
            series,
            f"{display}: HAM-targeted weights",
            [
                ("sign_flips", 1.0, "sign flips per epoch", True),
                ("mean_abs_weight", 1.0, "mean |w|", False),
            ],
        )
        written.append(_save(fig, fig_dir, f"diagnostics_{stem}"))
    return written
