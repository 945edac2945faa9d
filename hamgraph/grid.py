"""Grids: expand a validated config into RunSpecs, run the unfinished ones, summarize.

    GridConfig ──► expand() ──► [RunSpec] ──► execute_specs() ──► ResultStore ──► summary_table()

Resume is the default: a spec whose record exists in the result store is not trained again
(see `hamgraph.store` for what "finished" means and how failed runs are treated).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import sys
import time
import typing
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hamgraph.config import GridConfig, OptimizerEntry, load_config
from hamgraph.data.paths import DataPaths, data_paths_from_env
from hamgraph.data.registry import DatasetInfo, resolve_dataset
from hamgraph.errors import DatasetUnavailableError, TrainingDiverged, UserInputError
from hamgraph.specs import GraphParams, HamSettings, NodeParams, RunResult, RunSpec
from hamgraph.store import ResultStore

log = logging.getLogger(__name__)

Params = NodeParams | GraphParams

# Range checks of user overrides (the params dataclasses hold the types; presets the defaults).
_POSITIVE = {"lr", "hidden", "layers", "epochs", "batch_size", "grad_clip"}
_NON_NEGATIVE = {"weight_decay", "warmup_epochs", "rwse_steps", "pe_dim", "num_workers"}


# --- expansion --------------------------------------------------------------------------------


class OverrideError(UserInputError):
    """A bad hyperparameter override; `field` is the overridden name."""

    def __init__(self, field: str, problem: str, *, unknown: bool = False) -> None:
        super().__init__(problem if unknown else f"{field}: {problem}")
        self.field = field
        self.problem = problem


def apply_overrides(params: Params, overrides: dict[str, Any]) -> Params:
    """`params` with some fields replaced; values are type-checked (an int is fine for a float).

    Raises OverrideError (a UserInputError) naming the field: unknown field (listing the valid
    ones), wrong type, or a value out of range.
    """
    if not overrides:
        return params
    cls = type(params)
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls)]
    checked: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in hints:
            raise OverrideError(
                name,
                f"unknown hyperparameter {name!r} for {cls.__name__}; valid: {', '.join(valid)}",
                unknown=True,
            )
        try:
            value = TypeAdapter(hints[name]).validate_python(value, strict=True)
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"]
            raise OverrideError(
                name, f"{problem[:1].lower()}{problem[1:]}, got {value!r}"
            ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise OverrideError(name, f"must be finite, got {value!r}")
        if name in _POSITIVE and value <= 0:
            raise OverrideError(name, f"must be > 0, got {value!r}")
        if name in _NON_NEGATIVE and value < 0:
            raise OverrideError(name, f"must be >= 0, got {value!r}")
        if name == "dropout" and not 0 <= value < 1:
            raise OverrideError(name, f"must be in [0, 1), got {value!r}")
        checked[name] = value
    return dataclasses.replace(params, **checked)


def specs_for(
    dataset: str,
    model: str,
    ham: HamSettings | None,
    *,
    overrides: dict[str, Any],
    runs: int | None = None,
    seed: int = 0,
) -> list[RunSpec]:
    """The RunSpecs of one (dataset, model, optimizer): preset params + overrides, one per run.

    `runs` defaults to the dataset's protocol run count; run i uses seed `seed + i` (and split
    i % number of splits). Raises UserInputError for unknown names or bad overrides.
    """
    from hamgraph.models import resolve_model
    from hamgraph.presets import default_params

    info = resolve_dataset(dataset)
    model = resolve_model(model, info.task)
    params = apply_overrides(default_params(info, model), overrides)
    count = info.runs if runs is None else runs
    if count < 1:
        raise UserInputError(f"runs must be >= 1, got {count}")
    return [
        RunSpec(dataset=info.name, model=model, params=params, ham=ham, run=i, seed=seed + i)
        for i in range(count)
    ]


def _message(exc: Exception) -> str:
    return str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)


def _ham_settings(
    config: GridConfig, index: int, entry: OptimizerEntry, info: DatasetInfo, model: str
) -> HamSettings | None:
    from hamgraph.presets import paper_best

    options = entry.options
    if options is None:
        return None
    if options.preset is not None:
        try:
            alpha, beta = paper_best(info.name, model, entry.kind)
        except (UserInputError, KeyError, ValueError) as exc:
            raise config.error(f"grid.optimizer[{index}]", _message(exc)) from None
    else:
        assert options.alpha is not None and options.beta is not None  # checked by the schema
        alpha, beta = options.alpha, options.beta
    return HamSettings(alpha=float(alpha), beta=float(beta), **options.settings_kwargs())


def expand(config: GridConfig) -> list[RunSpec]:
    """datasets x models x optimizers x runs, in that nesting order (stable).

    Resolves every name and preset first, so a bad config fails before anything is written:
    raises ConfigError `<file>: <key>: <problem>`. Two optimizer entries that resolve to the
    same settings (e.g. `{ham: paper-best}` and the same explicit alpha/beta) run once.
    """
    from hamgraph.models import MODEL_TASK, resolve_model
    from hamgraph.presets import default_params

    infos: list[DatasetInfo] = []
    for i, name in enumerate(config.grid.dataset):
        try:
            info = resolve_dataset(name)
        except UserInputError as exc:
            raise config.error(f"grid.dataset[{i}]", str(exc)) from None
        if any(other.name == info.name for other in infos):
            raise config.error(f"grid.dataset[{i}]", f"{name!r} is listed twice")
        infos.append(info)

    models: list[str] = []
    for j, name in enumerate(config.grid.model):
        for info in infos:
            try:
                model = resolve_model(name, info.task)
            except UserInputError as exc:
                known = str(name).strip().lower() in MODEL_TASK  # but for the other task
                where = f" (dataset {info.name!r})" if known else ""
                raise config.error(f"grid.model[{j}]", f"{exc}{where}") from None
        if model in models:
            raise config.error(f"grid.model[{j}]", f"{name!r} is listed twice")
        models.append(model)

    seen_entries: list[Any] = []
    for k, entry in enumerate(config.grid.optimizer):
        if entry.to_yaml() in seen_entries:
            raise config.error(f"grid.optimizer[{k}]", f"{entry.to_yaml()!r} is listed twice")
        seen_entries.append(entry.to_yaml())

    overrides = config.all_overrides()
    specs: list[RunSpec] = []
    keys: set[str] = set()
    for i, info in enumerate(infos):
        for model in models:
            try:
                preset = default_params(info, model)
            except (UserInputError, KeyError, ValueError) as exc:
                raise config.error(f"grid.dataset[{i}]", _message(exc)) from None
            try:
                apply_overrides(preset, overrides)
            except OverrideError as exc:
                top_level = exc.field == "epochs" and config.epochs is not None
                loc = "epochs" if top_level else f"overrides.{exc.field}"
                raise config.error(loc, f"{exc.problem} ({info.name} x {model})") from None
            for k, entry in enumerate(config.grid.optimizer):
                ham = _ham_settings(config, k, entry, info, model)
                for spec in specs_for(
                    info.name, model, ham, overrides=overrides, runs=config.runs, seed=config.seed
                ):
                    key = spec.key()
                    if key not in keys:
                        keys.add(key)
                        specs.append(spec)
    return specs


# --- running ------------------------------------------------------------------------------------


def optimizer_label(spec: RunSpec) -> str:
    """"adam", "ham(200, 0.1)", "nham(-10, 0.01)" (+ non-default HAM options)."""
    if spec.ham is None:
        return "adam"
    extra = [
        f"{f.name}={getattr(spec.ham, f.name)}"
        for f in dataclasses.fields(HamSettings)
        if f.name not in ("alpha", "beta") and getattr(spec.ham, f.name) != f.default
    ]
    return f"{spec.ham.kind}({', '.join([f'{spec.ham.alpha:g}', f'{spec.ham.beta:g}', *extra])})"


def _failed(spec: RunSpec, reason: str, seconds: float) -> RunResult:
    metric = resolve_dataset(spec.dataset).metric
    nan = float("nan")
    return RunResult(spec, metric, "failed", nan, nan, 0, 0, seconds, reason=reason)


def execute_specs(
    specs: Sequence[RunSpec],
    store: ResultStore,
    paths: DataPaths,
    device: torch.device,
) -> list[RunResult]:
    """Train the specs that have no record in `store` yet; one RunResult per spec, in order.

    Finished specs (ok or failed) are loaded from the store, not trained again. A run that
    diverges is stored as failed. A run that raises an error (dataset unavailable, out of
    memory, a bug) is logged and NOT stored, so the next call retries it; it still gets a
    failed RunResult in the returned list. After a DatasetUnavailableError the remaining runs
    of that dataset are skipped. KeyboardInterrupt propagates (finished results are kept).

    Several processes may run this on one store at once (sweep workers): nothing is lost, but
    a spec that two of them start at the same time is trained twice (the last record wins).
    """
    from hamgraph import train

    finished = store.finished_keys()
    keys = [spec.key() for spec in specs]  # hashes every setting: computed once per spec
    unique = dict(zip(keys, specs, strict=True))
    todo = [(key, spec) for key, spec in unique.items() if key not in finished]
    done = len(unique) - len(todo)
    if done:
        log.info("resuming: %d of %d runs already finished", done, len(unique))
    results: dict[str, RunResult] = {}
    for key in unique:
        if key in finished:
            results[key] = store.load(key)
            if not results[key].ok:
                log.info(
                    "kept failed run %s (delete records/%s.json or use --fresh to retry)", key, key
                )
    unavailable: dict[str, str] = {}
    with logging_redirect_tqdm(), tqdm(total=len(todo), unit="run", disable=None) as bar:
        for key, spec in todo:
            label = f"{spec.dataset} {spec.model} {optimizer_label(spec)} run {spec.run}"
            bar.set_description(label)
            start = time.perf_counter()
            if spec.dataset in unavailable:
                result = _failed(spec, unavailable[spec.dataset], 0.0)
            else:
                try:
                    result = train.execute(
                        spec, paths, device, checkpoint_dir=store.checkpoint_dir(spec)
                    )
                except TrainingDiverged as exc:  # a result: stored as failed
                    result = _failed(spec, f"diverged: {exc}", time.perf_counter() - start)
                    store.add(result)
                except DatasetUnavailableError as exc:
                    unavailable[spec.dataset] = f"dataset unavailable: {exc}"
                    log.error("%s: %s (its remaining runs are skipped)", label, exc)
                    result = _failed(spec, unavailable[spec.dataset], 0.0)
                except Exception as exc:  # not a result: logged, retried by the next run
                    log.error("%s: error: %s: %s", label, type(exc).__name__, exc)
                    log.debug("traceback", exc_info=True)
                    result = _failed(spec, f"error: {type(exc).__name__}: {exc}", 0.0)
                else:
                    store.add(result)
                store.discard_empty_checkpoint_dir(key)
            results[key] = result
            if result.status == "ok":
                log.info(
                    "%s: val %.2f test %.2f (%.1f s)",
                    label,
                    100 * result.val,
                    100 * result.test,
                    result.seconds,
                )
            elif spec.dataset not in unavailable:
                log.warning("%s: failed: %s", label, result.reason)
            bar.update(1)
    return [results[key] for key in keys]


# --- summary ----------------------------------------------------------------------------------

SUMMARY_KEYS = ["dataset", "model", "optimizer", "alpha", "beta", "metric"]


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """runs.csv rows -> one row per dataset x model x optimizer(alpha, beta).

    Columns: dataset, model, optimizer, alpha, beta, metric, n (ok runs), failed, val_mean,
    val_std, test_mean, test_std. Metrics are x100; std is the sample std (NaN for n = 1).
    Groups keep the order in which they first appear.
    """
    columns = [
        *SUMMARY_KEYS, "n", "failed", "val_mean", "val_std", "test_mean", "test_std"
    ]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame.copy()
    ok = frame["status"] == "ok"
    frame["n"] = ok.astype(int)
    frame["failed"] = (~ok).astype(int)
    for metric in ("val", "test"):
        frame[metric] = (100 * frame[metric].astype(float)).where(ok)
    grouped = frame.groupby(SUMMARY_KEYS, sort=False, dropna=False)
    table = grouped.agg(
        n=("n", "sum"),
        failed=("failed", "sum"),
        val_mean=("val", "mean"),
        val_std=("val", "std"),
        test_mean=("test", "mean"),
        test_std=("test", "std"),
    ).reset_index()
    return table[columns]


def _mean_std(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.2f}" if not math.isfinite(std) else f"{mean:.2f} ± {std:.2f}"


def format_summary(table: pd.DataFrame) -> str:
    """The summary table as aligned text: mean ± std (x100) of val and test, n, failed."""
    if table.empty:
        return "no finished runs\n"
    rows = pd.DataFrame(
        {
            "dataset": table["dataset"],
            "model": table["model"],
            "optimizer": [
                opt if not isinstance(a, (int, float)) or not math.isfinite(a)
                else f"{opt}({a:g}, {b:g})"
                for opt, a, b in zip(table["optimizer"], table["alpha"], table["beta"], strict=True)
            ],
            "metric": table["metric"],
            "val": [_mean_std(m, s) for m, s in zip(table.val_mean, table.val_std, strict=True)],
            "test": [
                _mean_std(m, s) for m, s in zip(table.test_mean, table.test_std, strict=True)
            ],
            "n": table["n"].astype(int),
            "failed": table["failed"].astype(int),
        }
    )
    return rows.to_string(index=False) + "\n"


# --- the `hamgraph run` command -----------------------------------------------------------------


def _move_aside(out: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = out.with_name(f"{out.name}.old-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = out.with_name(f"{out.name}.old-{stamp}-{n}")
    shutil.move(str(out), str(target))
    return target


def _resolved_yaml(config: GridConfig, specs: Iterable[RunSpec]) -> str:
    specs = list(specs)
    lines = [
        f"# Resolved copy of {config.source}, written by `hamgraph run` on "
        f"{datetime.now().isoformat(timespec='seconds')}.",
        f"# {len(specs)} runs. Rerun with: hamgraph run <this file> --out <this dir>",
    ]
    presets = sorted(
        {
            (s.dataset, s.model, s.ham.kind, s.ham.alpha, s.ham.beta)
            for s in specs
            if s.ham is not None
        }
    )
    uses_preset = any(e.options and e.options.preset for e in config.grid.optimizer)
    if uses_preset:
        lines.append("# HAM settings per dataset x model (paper-best resolved):")
        lines += [f"#   {d} x {m}: {k} alpha={a:g} beta={b:g}" for d, m, k, a, b in presets]
    body = yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, default_flow_style=None)
    return "\n".join(lines) + "\n" + body


def run_grid(
    config_path: str | Path,
    out: str | Path | None = None,
    device: str = "auto",
    fresh: bool = False,
) -> int:
    """The `hamgraph run` command. Returns 0 when every run is ok, 1 when some failed.

    Everything (schema, names, presets, overrides, device) is validated before anything is
    written. Resumes by default; `fresh` moves an existing result dir to `<out>.old-<time>`.
    The summary table is written to stdout (it is the command's output).
    """
    from hamgraph.train import resolve_device

    config = load_config(config_path)
    specs = expand(config)
    torch_device = resolve_device(device)
    out_dir = Path(out) if out is not None else Path("results") / config.run_name
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"--out {out_dir}: exists and is not a directory")

    if fresh and out_dir.exists():
        moved = _move_aside(out_dir)
        log.info("--fresh: moved the old results to %s", moved)
    store = ResultStore(out_dir)
    store.prepare()
    store.write_text("config.yaml", _resolved_yaml(config, specs))
    log.info("%s: %d runs -> %s (device %s)", config.run_name, len(specs), out_dir, torch_device)

    results = execute_specs(specs, store, data_paths_from_env(), torch_device)

    keys = {spec.key() for spec in specs}
    frame = store.frame()
    frame = frame[frame["key"].isin(keys)]
    sys.stdout.write(format_summary(summary_table(frame)))
    sys.stdout.flush()
    failed = [(spec, r) for spec, r in zip(specs, results, strict=True) if not r.ok]
    for spec, result in failed:
        log.warning("failed: %s: %s", spec.key(), result.reason)
    if failed:
        log.warning("%d of %d runs failed", len(failed), len(specs))
        return 1
    log.info("all %d runs ok; results in %s", len(specs), store.runs_csv)
    return 0
