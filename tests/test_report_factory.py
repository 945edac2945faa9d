"""A fixture factory for report tests: result dirs in exactly the result store's on-disk format.

`ROOT/runs.csv` (columns RUNS_COLUMNS, val/test fractions, alpha/beta empty for adam) and
`ROOT/history/<key>.csv` (columns of hamgraph.specs.EpochStats). Imported by the report and
plot tests; its own tests check that the files look like the contract says.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from hamgraph.specs import EpochStats
from hamgraph.store import RUN_COLUMNS as RUNS_COLUMNS

HISTORY_COLUMNS = [f.name for f in dataclasses.fields(EpochStats)]


def run_row(
    dataset: str,
    model: str,
    optimizer: str,
    run: int,
    val: float,
    test: float,
    alpha: float | None = None,
    beta: float | None = None,
    *,
    seed: int | None = None,
    status: str = "ok",
    reason: str = "",
    metric: str = "accuracy",
    epochs: int = 6,
) -> dict[str, Any]:
    """One runs.csv row; key = readable prefix + hash of the cell, like RunSpec.key()."""
    seed = run if seed is None else seed
    blob = f"{dataset}|{model}|{optimizer}|{alpha}|{beta}|{run}|{seed}"
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    key = f"{dataset}-{model}-{optimizer}-run{run}-{digest}"
    failed = status == "failed"
    return {
        "key": key,
        "dataset": dataset,
        "model": model,
        "optimizer": optimizer,
        "alpha": "" if alpha is None else alpha,
        "beta": "" if beta is None else beta,
        "run": run,
        "seed": seed,
        "metric": metric,
        "val": float("nan") if failed else val,
        "test": float("nan") if failed else test,
        "best_epoch": 0 if failed else epochs - 1,
        "epochs": epochs // 2 if failed else epochs,
        "seconds": 1.5,
        "status": status,
        "reason": reason,
        "history": f"history/{key}.csv",
    }


def cell_rows(
    dataset: str,
    model: str,
    optimizer: str,
    vals: list[float],
    tests: list[float],
    alpha: float | None = None,
    beta: float | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Rows of one (dataset, model, optimizer, alpha, beta) cell, runs 0..len(vals)-1."""
    return [
        run_row(dataset, model, optimizer, i, v, t, alpha, beta, **kwargs)
        for i, (v, t) in enumerate(zip(vals, tests, strict=True))
    ]


def _history(row: dict[str, Any]) -> pd.DataFrame:
    epochs = int(row["epochs"])
    final = 0.5 if row["status"] == "failed" else float(row["val"])
    scale = {"adam": 1.0, "ham": 0.6, "nham": 1.4}[row["optimizer"]]
    records = [
        EpochStats(
            epoch=e,
            loss=2.0 / e + 0.01 * row["run"],
            train=min(1.0, final + 0.1),
            val=final * e / epochs,
            test=final * e / epochs,
            lr=1e-3,
            sign_flips=int(100 * scale / e),
            mean_abs_weight=0.1 * scale + 0.001 * e,
        )
        for e in range(1, epochs + 1)
    ]
    return pd.DataFrame([dataclasses.asdict(r) for r in records], columns=HISTORY_COLUMNS)


def write_results(root: Path, rows: list[dict[str, Any]], histories: bool = True) -> Path:
    """Write runs.csv (+ history files) under root, as the result store does; return root."""
    root.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=RUNS_COLUMNS)
    frame.to_csv(root / "runs.csv", index=False)
    if histories:
        (root / "history").mkdir(exist_ok=True)
        for row in rows:
            _history(row).to_csv(root / row["history"], index=False)
    return root


def test_factory_writes_the_contract_format(tmp_path: Path) -> None:
    rows = cell_rows("cora", "gcn", "adam", [0.8, 0.81], [0.79, 0.8])
    rows += cell_rows("cora", "gcn", "ham", [0.82, 0.83], [0.8, 0.81], 200, 0.1)
    root = write_results(tmp_path / "res", rows)
    frame = pd.read_csv(root / "runs.csv")
    assert list(frame.columns) == RUNS_COLUMNS
    assert frame.loc[frame["optimizer"] == "adam", "alpha"].isna().all()
    assert frame["val"].between(0, 1).all()
    history = pd.read_csv(root / frame["history"].iloc[0])
    assert list(history.columns) == HISTORY_COLUMNS
