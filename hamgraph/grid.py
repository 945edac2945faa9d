"""Grids: expand a validated config into RunSpecs, run the unfinished ones, summarize.

    GridConfig ──► expand() ──► [RunSpec] ──► runner.execute_specs() ──► ResultStore
               ──► cells.summarize() (printed by the CLI)

Resume is the default: a spec whose record exists in the result store is not trained again
(see `hamgraph.store` for what "finished" means and how failed runs are treated).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import TypeAdapter, ValidationError

from hamgraph.cells import summarize
from hamgraph.config import GridConfig, OptimizerEntry, load_config
from hamgraph.data.paths import data_paths_from_env
from hamgraph.data.registry import DatasetInfo, resolve_dataset_choice
from hamgraph.errors import UserInputError
from hamgraph.optim.factory import check_base_options, check_ham_base
from hamgraph.runner import PackSize, RunOutcome, execute_specs, spec_sources, stale_keys
from hamgraph.scaleout import Shard
from hamgraph.specs import (
    PROTOCOL_BASE,
    GraphParams,
    HamSettings,
    NodeParams,
    OptimizerSpec,
    RunSpec,
    normalize_options,
)
from hamgraph.store import ResultStore

if typing.TYPE_CHECKING:
    from hamgraph.models import ModelChoice
    from hamgraph.train.metrics import MetricChoice

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
    dataset: str | dict[str, Any] | DatasetInfo,
    model: str | dict[str, Any] | ModelChoice,
    ham: HamSettings | None,
    *,
    overrides: dict[str, Any],
    runs: int | None = None,
    seed: int = 0,
    base: str | None = None,
    base_options: dict[str, Any] | None = None,
    metric: MetricChoice | None = None,
) -> list[RunSpec]:
    """The RunSpecs of one cell: preset params + overrides, one per run.

    `dataset` / `model`: a name, a `{_target_: ...}` mapping or an already resolved value.
    `runs` defaults to the dataset's protocol run count; run i uses seed `seed + i` (and split
    i % number of splits). `base` defaults to the protocol's base optimizer. `metric`: None =
    the dataset's. Raises UserInputError for unknown names, bad overrides or a bad base
    optimizer / option.
    """
    from hamgraph.models import ModelChoice, resolve_model_choice
    from hamgraph.presets import default_params

    info = dataset if isinstance(dataset, DatasetInfo) else resolve_dataset_choice(dataset)
    if not isinstance(model, ModelChoice):
        model = resolve_model_choice(model, info.task)
    params = apply_overrides(
        default_params(info, model.name, model.plugin is not None), overrides
    )
    count = info.runs if runs is None else runs
    if count < 1:
        raise UserInputError(f"runs must be >= 1, got {count}")
    base = PROTOCOL_BASE[type(params).__name__] if base is None else base
    check_base_options(base, base_options or {})
    if ham is not None:
        check_ham_base(base)
    optimizer = OptimizerSpec(base, normalize_options(base_options or {}), ham)
    metric_fields = metric_fields_for(info, metric)
    return [
        RunSpec(
            dataset=info.name, model=model.name, params=params, optimizer=optimizer, run=i,
            seed=seed + i, dataset_plugin=info.plugin, model_plugin=model.plugin,
            **metric_fields,
        )
        for i in range(count)
    ]


def dataset_metric(info: DatasetInfo, metric: Any = None) -> MetricChoice | None:
    """The metric choice of a dataset: `metric` (a grid's top-level choice) or the `metric:`
    of a user's dataset mapping; None = the dataset's built-in metric. UserInputError if the
    choice does not fit the dataset."""
    from hamgraph.train.metrics import METRICS, MetricChoice, resolve_metric_choice

    if metric is None and info.plugin is not None:
        metric = info.plugin.setting.get("metric")
    if metric is None:
        return None
    choice = metric if isinstance(metric, MetricChoice) else resolve_metric_choice(metric)
    if choice.plugin is None and choice.name == info.metric:
        return None
    if info.task != "node":
        raise UserInputError(
            f"dataset {info.name!r} keeps its metric {info.metric!r} (another metric is "
            "supported on node-classification datasets only)"
        )
    if choice.plugin is None and choice.name not in METRICS:
        raise UserInputError(
            f"metric {choice.name!r} is not defined on node datasets; valid: "
            f"{', '.join(METRICS)} or a user's metric"
        )
    return choice


def metric_fields_for(info: DatasetInfo, metric: MetricChoice | None) -> dict[str, Any]:
    """The RunSpec fields of a metric choice (none for the dataset's own metric)."""
    if metric is None or (metric.plugin is None and metric.name == info.metric):
        return {}
    return {"metric": metric.name, "metric_plugin": metric.plugin}


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
    from hamgraph.models import MODEL_TASK, resolve_model_choice
    from hamgraph.presets import default_params

    infos: list[DatasetInfo] = []
    for i, name in enumerate(config.grid.dataset):
        try:
            info = resolve_dataset_choice(name)
        except UserInputError as exc:
            raise config.error(f"grid.dataset[{i}]", str(exc)) from None
        for other in infos:
            if other.name == info.name:
                problem = (f"{name!r} is listed twice" if other.plugin == info.plugin else
                           f"two datasets are named {info.name!r}; give one a distinct display:")
                raise config.error(f"grid.dataset[{i}]", problem)
        infos.append(info)

    metrics: list[MetricChoice | None] = []
    for i, info in enumerate(infos):
        try:
            metrics.append(dataset_metric(info, config.metric))
        except UserInputError as exc:
            loc = "metric" if config.metric is not None else f"grid.dataset[{i}].metric"
            raise config.error(loc, str(exc)) from None

    overrides = config.all_overrides()
    models: list[ModelChoice] = []
    for j, name in enumerate(config.grid.model):
        for info in infos:
            try:
                probe = None
                if not (isinstance(name, str) and name.strip().lower() in MODEL_TASK):
                    with contextlib.suppress(UserInputError, KeyError, ValueError):
                        probe = apply_overrides(default_params(info, "gcn", True), overrides)
                model = resolve_model_choice(name, info.task, probe)  # type: ignore[arg-type]
            except UserInputError as exc:
                known = str(name).strip().lower() in MODEL_TASK  # but for the other task
                where = f" (dataset {info.name!r})" if known else ""
                raise config.error(f"grid.model[{j}]", f"{exc}{where}") from None
        for other in models:
            if other.name == model.name:
                problem = (f"{name!r} is listed twice" if other.plugin == model.plugin else
                           f"two models are named {model.name!r}; give one a distinct display:")
                raise config.error(f"grid.model[{j}]", problem)
        models.append(model)

    seen_entries: list[Any] = []
    for k, entry in enumerate(config.grid.optimizer):
        if entry.to_yaml() in seen_entries:
            raise config.error(f"grid.optimizer[{k}]", f"{entry.to_yaml()!r} is listed twice")
        seen_entries.append(entry.to_yaml())

    specs: list[RunSpec] = []
    keys: set[str] = set()
    for i, info in enumerate(infos):
        for model in models:
            try:
                preset = default_params(info, model.name, model.plugin is not None)
            except (UserInputError, KeyError, ValueError) as exc:
                raise config.error(f"grid.dataset[{i}]", _message(exc)) from None
            try:
                apply_overrides(preset, overrides)
            except OverrideError as exc:
                top_level = exc.field == "epochs" and config.epochs is not None
                loc = "epochs" if top_level else f"overrides.{exc.field}"
                raise config.error(loc, f"{exc.problem} ({info.name} x {model.name})") from None
            for k, entry in enumerate(config.grid.optimizer):
                ham = _ham_settings(config, k, entry, info, model.name)
                base = entry.base_choice
                try:
                    cell_specs = specs_for(
                        info, model, ham, overrides=overrides, runs=config.runs,
                        seed=config.seed, base=None if base is None else base.name,
                        base_options=None if base is None else dict(base.options),
                        metric=metrics[i],
                    )
                except UserInputError as exc:
                    where = "base" if entry.options is None else f"{entry.kind}.base"
                    raise config.error(f"grid.optimizer[{k}].{where}", str(exc)) from None
                for spec in cell_specs:
                    key = spec.key()
                    if key not in keys:
                        keys.add(key)
                        specs.append(spec)
    return specs


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
            (s.dataset, s.model, s.ham.kind, s.ham.alpha, s.ham.beta)  # type: ignore[union-attr]
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


@dataclass(frozen=True)
class GridOutcome:
    """What `run_grid` did: the outcome of every spec and the summary of the grid's cells."""

    out_dir: Path
    outcomes: list[RunOutcome]
    summary: pd.DataFrame  # hamgraph.cells.summarize of the grid's runs

    @property
    def failed(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if not o.ok]


def run_grid(
    config_path: str | Path,
    out: str | Path | None = None,
    device: str = "auto",
    fresh: bool = False,
    pack: PackSize = "auto",
    rerun_stale: bool = False,
    track: Sequence[str] = (),
    shard: Shard | None = None,
    devices: str | None = None,
    workers: int = 1,
) -> GridOutcome:
    """The `hamgraph run` command (the CLI prints the summary and sets the exit code).

    Everything (schema, names, presets, overrides, device) is validated before anything is
    written. Resumes by default; `fresh` moves an existing result dir to `<out>.old-<time>`.
    Finished runs recorded by another hamgraph version are kept (and counted in the log)
    unless `rerun_stale`. `track`: experiment trackers (with the file's `track:` list).

    `shard`: train only that part of the grid (hamgraph.scaleout.partition; the summary
    covers it). `devices` ("cuda:0,cuda:1") / `workers` (per device): train in that many
    worker processes sharing the result dir. Runs are always claimed before training
    (hamgraph.claims), so any number of these commands may share one result dir.
    """
    from hamgraph.claims import Claims
    from hamgraph.scaleout import execute_on_workers, shard_specs, worker_devices
    from hamgraph.track import Tracking, parse_trackers
    from hamgraph.train import resolve_device

    config = load_config(config_path)
    specs = expand(config)
    torch_device = resolve_device(device)
    slots = worker_devices(device, devices, workers)
    out_dir = Path(out) if out is not None else Path("results") / config.run_name
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"--out {out_dir}: exists and is not a directory")
    if fresh and shard is not None:
        raise UserInputError(
            f"--fresh with --shard {shard}: it would move the other shards' results aside; "
            "use a new --out instead"
        )

    # trackers are checked (names, packages installed) before anything is written or moved
    tracking = Tracking(
        parse_trackers([*config.track, *track]), log_dir=out_dir, group=config.run_name
    )

    if fresh and out_dir.exists():
        moved = _move_aside(out_dir)
        log.info("--fresh: moved the old results to %s", moved)
    store = ResultStore(out_dir)
    store.prepare()
    store.write_text("config.yaml", _resolved_yaml(config, specs))
    claims = Claims(out_dir)
    claims.prune()
    if shard is not None:
        grid_size, specs = len(specs), shard_specs(specs, shard, pack)
        log.info("shard %s: %d of the grid's %d runs", shard, len(specs), grid_size)
    where = torch_device if len(slots) == 1 else ", ".join(slots)
    log.info("%s: %d runs -> %s (device %s)", config.run_name, len(specs), out_dir, where)

    keys = [spec.key() for spec in specs]
    stale = stale_keys(store, keys, spec_sources(specs))
    if stale and not rerun_stale:
        log.warning(
            "%d finished runs came from another hamgraph version or another source of their "
            "plug-ins (kept; --rerun-stale retrains them)", len(stale)
        )
    retrain = stale if rerun_stale else []
    if len(slots) == 1:
        outcomes = execute_specs(
            specs, store, data_paths_from_env(), resolve_device(slots[0]), pack=pack,
            retrain=retrain, tracking=tracking, claims=claims,
        )
    else:
        outcomes = execute_on_workers(
            specs, store, slots, pack=pack, retrain=retrain, track=tracking.names,
            group=config.run_name,
        )
    frame = store.frame()
    summary = summarize(frame[frame["key"].isin(set(keys))])
    result = GridOutcome(out_dir, outcomes, summary)
    for outcome in result.failed:
        log.warning("failed: %s: %s", outcome.spec.key(), outcome.message)
    if result.failed:
        log.warning("%d of %d runs failed", len(result.failed), len(specs))
    else:
        log.info("all %d runs ok; results in %s", len(specs), store.runs_csv)
    return result
