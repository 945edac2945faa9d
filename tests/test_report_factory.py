"""A fixture factory for report tests: result dirs written by the real `ResultStore`.

`run_result` builds a `RunResult` (a real `RunSpec` with its `OptimizerSpec`, a history of
`EpochStats`, a provenance) and `write_results` records them with `ResultStore.add`, so the
report tests read exactly what `hamgraph run` and `hamgraph sweep` leave on disk (records,
history files, runs.csv). Its own tests read the dir back through the store and check every
column against the values the factory was given.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pandas as pd

from hamgraph.data.registry import resolve_dataset
from hamgraph.errors import UnknownNameError
from hamgraph.specs import (
    PROTOCOL_BASE,
    EpochStats,
    GraphParams,
    HamSettings,
    NodeParams,
    OptimizerSpec,
    RunResult,
    RunSpec,
    normalize_options,
)
from hamgraph.store import RUN_COLUMNS, ResultStore

VERSION = "9.9.9-test"
DEVICE = "cpu"


def _params(dataset: str, epochs: int) -> NodeParams | GraphParams:
    try:
        task = resolve_dataset(dataset).task
    except UnknownNameError:
        task = "node"
    if task == "graph":
        return GraphParams(
            lr=1e-3, weight_decay=0.0, hidden=8, layers=2, dropout=0.0, residual=True,
            ffn=False, batch_size=4, epochs=epochs, warmup_epochs=0,
        )  # fmt: skip
    return NodeParams(lr=1e-3, hidden=8, layers=2, dropout=0.5, weight_decay=0.0, epochs=epochs)


def _history(optimizer: str, run: int, final: float, epochs: int) -> list[EpochStats]:
    scale = {"ham": 0.6, "nham": 1.4}.get(optimizer, 1.0)
    return [
        EpochStats(
            epoch=e,
            loss=2.0 / e + 0.01 * run,
            train=min(1.0, final + 0.1),
            val=final * e / epochs,
            test=final * e / epochs,
            lr=1e-3,
            sign_flips=int(100 * scale / e),
            mean_abs_weight=0.1 * scale + 0.001 * e,
            train_seconds=0.1 * e * scale,  # finite: NaN != NaN would break history equality
        )
        for e in range(1, epochs + 1)
    ]


def run_result(
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
    base: str | None = None,
    base_options: dict[str, Any] | None = None,
    ham: dict[str, Any] | None = None,
    version: str = VERSION,
    device: str = DEVICE,
    params: dict[str, Any] | None = None,
) -> RunResult:
    """One run. optimizer: "ham" / "nham" (HAM on `base`, default the protocol's base) or the
    name of a base optimizer for a baseline ("adam", "sgd"). `ham`: further HamSettings fields.
    `params`: NodeParams / GraphParams fields to set (a searched lr makes another cell)."""
    run_params = dataclasses.replace(_params(dataset, epochs), **(params or {}))
    protocol = PROTOCOL_BASE[type(run_params).__name__]
    settings = None
    if optimizer in ("ham", "nham"):
        assert alpha is not None and beta is not None
        settings = HamSettings(alpha=float(alpha), beta=float(beta), **(ham or {}))
        assert settings.kind == optimizer
    opt = OptimizerSpec(
        base=base or (protocol if settings is not None or optimizer == "adam" else optimizer),
        base_options=normalize_options(base_options or {}),
        ham=settings,
    )
    seed = run if seed is None else seed
    spec = RunSpec(dataset, model, run_params, opt, run=run, seed=seed)
    failed = status == "failed"
    return RunResult(
        spec=spec,
        metric=metric,
        status=status,  # type: ignore[arg-type]
        val=math.nan if failed else val,
        test=math.nan if failed else test,
        best_epoch=0 if failed else epochs,
        epochs=epochs // 2 if failed else epochs,
        seconds=1.5,
        reason=reason,
        history=_history(optimizer, run, 0.5 if failed else val, epochs // 2 if failed else epochs),
        provenance={"hamgraph_version": version, "device": device},
    )


def cell_results(
    dataset: str,
    model: str,
    optimizer: str,
    vals: list[float],
    tests: list[float],
    alpha: float | None = None,
    beta: float | None = None,
    **kwargs: Any,
) -> list[RunResult]:
    """The runs 0..len(vals)-1 of one cell."""
    return [
        run_result(dataset, model, optimizer, i, v, t, alpha, beta, **kwargs)
        for i, (v, t) in enumerate(zip(vals, tests, strict=True))
    ]


def write_results(root: Path, results: list[RunResult], histories: bool = True) -> Path:
    """Record the results with `ResultStore.add` (records, history files, runs.csv); -> root.

    histories=False records them without epochs (faster; no curves)."""
    store = ResultStore(root)
    store.prepare()
    for result in results:
        if not histories:
            result = RunResult(**{**result.__dict__, "history": []})
        store.add(result)
    return root


def test_factory_dir_reads_back_through_the_store(tmp_path: Path) -> None:
    results = cell_results("cora", "gcn", "adam", [0.8, 0.81], [0.79, 0.8])
    results += cell_results("cora", "gcn", "ham", [0.82, 0.83], [0.8, 0.81], 200, 0.1)
    results += cell_results(
        "cora", "gcn", "ham", [0.84], [0.82], 200, 0.1, ham={"sign_source": "previous"}
    )
    results += cell_results("cora", "gcn", "sgd", [0.7], [0.69], base_options={"momentum": 0.9})
    results.append(run_result("cora", "gcn", "adam", 2, 0, 0, status="failed", reason="nan"))
    root = write_results(tmp_path / "res", results)
    frame = ResultStore(root).frame()
    assert list(frame.columns) == RUN_COLUMNS
    assert list(frame["key"]) == [r.spec.key() for r in results]  # one row per run, in order
    assert frame["key"].is_unique
    for result, (_, row) in zip(results, frame.iterrows(), strict=True):
        spec = result.spec
        assert (row["dataset"], row["model"]) == (spec.dataset, spec.model)
        assert row["optimizer"] == spec.optimizer.kind and row["base"] == spec.optimizer.base
        assert (row["run"], row["seed"], row["status"]) == (spec.run, spec.seed, result.status)
        assert (row["hamgraph_version"], row["device"]) == (VERSION, DEVICE)
        if result.ok:
            assert (row["val"], row["test"]) == (result.val, result.test)
        else:
            assert math.isnan(float(row["val"])) and row["reason"] == "nan"
        if spec.ham is None:
            assert math.isnan(row["alpha"]) and row["sign_source"] == ""
        else:
            assert (row["alpha"], row["beta"]) == (spec.ham.alpha, spec.ham.beta)
            assert row["sign_source"] == spec.ham.sign_source
            assert row["mask_beta"] == str(spec.ham.mask_beta).lower()
        history = ResultStore(root).load(row["key"]).history
        assert history == result.history and (root / row["history"]).is_file()
    sgd = frame[frame["optimizer"] == "sgd"].iloc[0]
    assert sgd["base"] == "sgd" and sgd["base_options"] == '{"momentum": 0.9}'
    # the ablation is a cell of its own: its key differs from the default HAM run's
    ham = frame[frame["optimizer"] == "ham"]
    assert sorted(ham["sign_source"]) == ["current", "current", "previous"]
    assert pd.Series(ham["key"]).is_unique
