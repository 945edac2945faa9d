"""`hamgraph sweep`: Optuna studies over HAM's alpha and beta, one study per (dataset, model).

    sweep YAML ──► Sweep (validated) ──► one study per (dataset, model) ──► trial = one cell
    (alpha, beta) or the baseline ──► RunSpecs of the protocol ──► the same trainer as `run`
    ──► runs in the result store (<out>/runs.csv) ──► trial value = mean validation metric

Search spaces (REFERENCE §1):
- `kind: grid`: the paper grid, every (alpha, beta) cell plus the baseline cell "adam" exactly
  once, with Optuna's GridSampler over ONE categorical parameter `cell` whose values read
  "adam", "a=200,b=0.1", ... (a product over alpha x beta cannot hold a baseline that has no
  alpha or beta). alpha, beta and the optimizer label are also trial user attributes, so the
  dashboard shows them as columns.
- `kind: tpe`: |alpha| log-uniform in [min, max] with a sign choice (`ham`, `nham`), beta
  uniform (or log) in [min, max], seeded TPE, optional MedianPruner on the running mean of the
  validation metric after each run of the trial. The baseline is an enqueued trial without
  parameters (user attribute `cell: adam`).

The objective is the mean validation metric over the protocol's runs; the test mean is stored
as a user attribute and never optimized. Study names are `<sweep>.<dataset>.<model>.<hash>`,
where the hash covers the search space and everything that changes a run (epochs, runs, seed,
overrides): rerunning the same command resumes, an edited space starts a new study.

Storage: the default is Optuna's JournalStorage with a JournalFileBackend at
`<out>/optuna-journal.log`. Several local processes append to it under a file lock and replay
it, which is exactly the multi-process case. SQLite is not the default because concurrent
writers serialize on one database lock and time out with "database is locked" under load, and
SQLite file locking is unreliable on network file systems; use `--storage postgresql://...`
for several machines. `--storage` takes any Optuna RDB URL (`sqlite:///f.db`,
`postgresql://...`, `mysql+pymysql://...`) or `journal:PATH`.

Dead workers: every trial records its owner (host, pid, process start time). A RUNNING trial
whose owner process is gone (same host) is failed and retried (a WAITING copy of its
parameters) the next time any worker looks. Across hosts, RDB storages use Optuna's heartbeat
(`heartbeat_interval`, `grace_period`, `RetryHeartbeatStaleTrialCallback`); the journal storage
has no heartbeat in Optuna 5, so hamgraph writes its own heartbeat system attribute there.
A retried trial reuses the runs that already finished (the result store is keyed by RunSpec).

No cell completes twice. Known limit (like GridSampler's own, see its docstring): two workers
can start the same cell. A trial first yields (PRUNED, user attribute `reason: duplicate of
trial N`) to a finished cell or to a running one with a smaller trial number; just before it
completes, it marks itself "finishing" and yields to any other finishing or COMPLETE trial of
the same cell. Storage writes are sequentially consistent (one database, or one append-only
journal), so of two racing trials the later check always sees the earlier mark: at most one
COMPLETE per cell. In the rare case both yield, the cell is re-queued (its runs are already in
the result store, so the retry costs no training).

Watching: `optuna-dashboard <storage>`, i.e. `optuna-dashboard results/<name>/optuna-journal.log`
for the default journal file (optuna-dashboard 0.21 opens a plain file path as a journal), or
`optuna-dashboard postgresql://...` / `sqlite:///f.db`. Outputs: `<out>/runs.csv` (every run,
through the result store, the shape `hamgraph report` reads) and `<out>/best.csv` (best cell per
dataset x model and optimizer; val/test as fractions like runs.csv).

`--trials K` bounds the number of evaluated trials per study (complete, diverged or pruned by
the pruner; duplicates do not count); with N workers the bound can be overshot by N - 1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import os
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator

from hamgraph.atomic import atomic_path
from hamgraph.data.registry import resolve_dataset
from hamgraph.errors import (
    ConfigError,
    DatasetUnavailableError,
    HamgraphError,
    TrainingDiverged,
    UserInputError,
)
from hamgraph.specs import HamSettings, RunResult, RunSpec

log = logging.getLogger(__name__)

# ---- defaults (one place) -----------------------------------------------------------------------
RESULTS_ROOT = Path("results")  # default out dir: results/<sweep name>/
JOURNAL_FILE = "optuna-journal.log"  # default storage under the out dir
HEARTBEAT_SECONDS = 60  # RDB heartbeat interval and journal heartbeat attribute period
GRACE_SECONDS = 180  # a trial without a heartbeat for this long is stale (dead worker)
MAX_RETRY = 3  # Optuna's RDB stale-trial retries per trial (hamgraph re-queues missing cells)
GRID_SAMPLER_SEED = 0  # the same in every worker, as GridSampler asks for distributed runs
MEDIAN_STARTUP_TRIALS = 5  # MedianPruner: trials before pruning starts
BASELINE = "adam"  # the cell label of the baseline (plain base optimizer)
BEST_CSV = "best.csv"
BEST_COLUMNS = [
    "dataset", "model", "optimizer", "alpha", "beta", "val_mean", "val_std",
    "test_mean", "test_std", "n", "trial", "study",
]

# ---- trial attributes ---------------------------------------------------------------------------
A_CELL = "cell"  # user attr: the cell label, the key of the duplicate guard
A_OPT, A_ALPHA, A_BETA = "optimizer", "alpha", "beta"  # user attrs, readable in the dashboard
A_OUTCOME = "outcome"  # user attr: complete | diverged | pruned | duplicate | stale
A_REASON = "reason"  # user attr: why a trial failed / was pruned
S_OWNER = "hamgraph:owner"  # system attr: {"trial", "host", "pid", "start"}
S_HEARTBEAT = "hamgraph:heartbeat"  # system attr (journal storage): unix time of the last beat
S_FINISHING = "hamgraph:finishing"  # system attr: passed the training, about to complete
S_RETRY_OF = "hamgraph:retry_of"  # system attr: the trial number a WAITING retry replaces
EVALUATED = ("complete", "diverged", "pruned")  # outcomes that count towards the trial budget
DONE = ("complete", "diverged")  # outcomes that settle a grid cell


# ==== sweep file =================================================================================
Number = Annotated[float, Strict()]


class _Strict(BaseModel):
    """Unknown keys and wrong types are errors (an int is accepted where a float is expected)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GridSpace(_Strict):
    """The paper grid: every alpha x beta cell (+ the baseline) exactly once."""

    kind: Literal["grid"]
    alpha: list[Number] = Field(min_length=1)  # e.g. [1, 10, 100, 200] or [-1, -10, -100, -200]
    beta: list[Number] = Field(default=[0.0, 0.01, 0.1], min_length=1)
    include_baseline: bool = True

    @model_validator(mode="after")
    def _check(self) -> GridSpace:
        _check_alphas(self.alpha, "search.alpha")
        _check_betas(self.beta, "search.beta")
        return self


class AlphaRange(_Strict):
    """|alpha| log-uniform in [min, max]; `signs`: ham (alpha > 0), nham (alpha < 0), or both."""

    min: Number = Field(gt=0)
    max: Number = Field(gt=0)
    signs: list[Literal["ham", "nham"]] = Field(default=["ham"], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> AlphaRange:
        if not self.min <= self.max or not math.isfinite(self.max):
            raise ValueError(f"need 0 < min <= max < inf, got min={self.min}, max={self.max}")
        if len(set(self.signs)) != len(self.signs):
            raise ValueError(f"signs repeat a value: {self.signs}")
        return self


class BetaRange(_Strict):
    min: Number = Field(default=0.0, ge=0)
    max: Number = Field(default=0.1, ge=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> BetaRange:
        if not self.min <= self.max or not math.isfinite(self.max):
            raise ValueError(f"need 0 <= min <= max < inf, got min={self.min}, max={self.max}")
        if self.log and self.min <= 0:
            raise ValueError(f"log: true needs min > 0, got min={self.min}")
        return self


class TpeSpace(_Strict):
    """Continuous alpha / beta with TPE (seeded) and an optional median pruner."""

    kind: Literal["tpe"]
    alpha: AlphaRange
    beta: BetaRange = BetaRange()
    trials: int = Field(default=50, gt=0)  # evaluated trials per study (incl. the baseline)
    seed: int = 0  # TPE seed (worker i uses seed + i)
    pruner: Literal["median", "none"] = "median"
    include_baseline: bool = True


class Sweep(_Strict):
    """A sweep file. Base settings mean the same as in a grid config (`hamgraph run`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    datasets: list[str] = Field(min_length=1)
    models: list[str] = Field(min_length=1)
    epochs: int | None = Field(default=None, gt=0)  # None: the protocol preset
    runs: int | None = Field(default=None, gt=0)  # None: all runs of the protocol
    seed: int = Field(default=0, ge=0)
    overrides: dict[str, Any] = Field(default_factory=dict)  # fields of NodeParams / GraphParams
    search: GridSpace | TpeSpace = Field(discriminator="kind")

    @model_validator(mode="after")
    def _epochs_once(self) -> Sweep:
        if self.epochs is not None and "epochs" in self.overrides:
            raise ValueError("epochs is given both at the top level and in overrides; keep one")
        return self

    def targets(self) -> list[tuple[str, str]]:
        return [(d, m) for d in self.datasets for m in self.models]

    def param_overrides(self) -> dict[str, Any]:
        out = dict(self.overrides)
        if self.epochs is not None:
            out["epochs"] = self.epochs
        return out


def _check_alphas(values: Sequence[float], key: str) -> None:
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"{key}: alpha must be finite, got {v}")
    if len({_fmt(v) for v in values}) != len(values):
        raise ValueError(f"{key}: values repeat: {list(values)}")


def _check_betas(values: Sequence[float], key: str) -> None:
    for v in values:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{key}: beta must be finite and >= 0, got {v}")
    if len({_fmt(v) for v in values}) != len(values):
        raise ValueError(f"{key}: values repeat: {list(values)}")


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a sweep file. Raises ConfigError (one line: file, key, problem)."""
    from hamgraph.config import format_loc, read_yaml

    path = Path(path)
    raw = read_yaml(path)  # the grid config's YAML reader: 1e-3 is a float, duplicate keys fail
    if not isinstance(raw, dict):
        got = "an empty file" if raw is None else type(raw).__name__
        raise ConfigError(f"{path}: the top level must be a mapping (name, search, ...), got {got}")
    raw.setdefault("name", path.stem)
    try:
        sweep = Sweep.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        err = min(errors, key=lambda e: e["type"] != "extra_forbidden")  # a typo explains most
        loc = tuple(err["loc"])
        if loc[:1] == ("search",) and loc[1:2] in (("grid",), ("tpe",)):
            loc = loc[:1] + loc[2:]  # drop pydantic's discriminator tag from the key
        msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
        if err["type"] == "extra_forbidden":
            key, msg = format_loc(loc[:-1]), f"unknown key {loc[-1]!r}"
        elif err["type"] == "missing":
            key, msg = format_loc(loc[:-1]), f"missing required key {loc[-1]!r}"
        else:
            key = format_loc(loc)
            if err["type"] != "value_error":
                msg += f", got {err.get('input')!r}"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: {key}: {msg}{more}"[:500]) from None
    _check_names(sweep, path)
    return sweep


def _check_names(sweep: Sweep, path: Path) -> None:
    """Datasets and models exist and fit each other; overrides are valid for every pair."""
    from hamgraph.grid import OverrideError, specs_for
    from hamgraph.models import resolve_model

    tasks: dict[str, str] = {}
    for i, name in enumerate(sweep.datasets):
        try:
            tasks[name] = resolve_dataset(name).task
        except UserInputError as exc:
            raise ConfigError(f"{path}: datasets[{i}]: {exc}") from None
    for i, model in enumerate(sweep.models):
        for dataset, task in tasks.items():
            try:
                resolve_model(model, task)
            except UserInputError as exc:
                raise ConfigError(f"{path}: models[{i}]: {exc} (dataset {dataset!r})") from None
    for dataset, model in sweep.targets():
        try:
            specs_for(dataset, model, None, overrides=sweep.param_overrides(), runs=sweep.runs,
                      seed=sweep.seed)
        except OverrideError as exc:
            key = "epochs" if exc.field == "epochs" and sweep.epochs is not None else (
                f"overrides.{exc.field}")
            raise ConfigError(f"{path}: {key}: {exc.problem}") from None
        except UserInputError as exc:
            raise ConfigError(f"{path}: {dataset} x {model}: {exc}") from None


# ==== cells ======================================================================================
def _fmt(x: float) -> str:
    return f"{x:.6g}"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of the search space: the baseline (ham None) or an (alpha, beta) pair."""

    ham: HamSettings | None

    @property
    def label(self) -> str:
        if self.ham is None:
            return BASELINE
        return f"a={_fmt(self.ham.alpha)},b={_fmt(self.ham.beta)}"

    @property
    def optimizer(self) -> str:
        return BASELINE if self.ham is None else self.ham.kind


def grid_cells(space: GridSpace) -> list[Cell]:
    cells = [Cell(HamSettings(alpha=float(a), beta=float(b))) for a in space.alpha
             for b in space.beta]
    return ([Cell(None)] if space.include_baseline else []) + cells


def _cell_from_label(label: str) -> Cell:
    if label == BASELINE:
        return Cell(None)
    a, b = (part.split("=", 1)[1] for part in label.split(","))
    return Cell(HamSettings(alpha=float(a), beta=float(b)))


def _space_hash(sweep: Sweep) -> str:
    """What makes two trials comparable: the space and every setting of the runs."""
    blob = {
        "search": sweep.search.model_dump(exclude={"trials", "seed", "pruner"}),
        "epochs": sweep.epochs, "runs": sweep.runs, "seed": sweep.seed,
        "overrides": sweep.overrides,
    }
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def study_name(sweep: Sweep, dataset: str, model: str) -> str:
    return f"{sweep.name}.{dataset}.{model}.{_space_hash(sweep)}"


# ==== storage ====================================================================================
def storage_url(storage: str | None, out: Path) -> str:
    """The normalized storage URL: `journal:PATH` or an SQLAlchemy URL with a driver we have."""
    if storage is None:
        return f"journal:{(out / JOURNAL_FILE).resolve()}"
    storage = storage.strip()
    if storage.startswith("journal:"):
        path = storage[len("journal:"):]
        if not path:
            raise UserInputError("--storage journal:PATH needs a file path")
        return f"journal:{Path(path).expanduser().resolve()}"
    scheme = storage.split("://", 1)[0]
    if "://" not in storage or not scheme:
        raise UserInputError(
            f"--storage {storage!r}: expected an RDB URL (sqlite:///f.db, postgresql://...)"
            " or journal:PATH"
        )
    if scheme in ("postgresql", "postgres"):
        rest = storage.split("://", 1)[1]
        try:
            import psycopg2  # noqa: F401

            return f"postgresql://{rest}"
        except ImportError:
            return f"postgresql+psycopg://{rest}"
    return storage


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """JournalStorage for `journal:PATH`, else RDBStorage with heartbeat and stale retry."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url[len("journal:"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    try:
        with _quiet_experimental():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=GRACE_SECONDS,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRY
                ),
            )
    except ImportError as exc:
        raise UserInputError(f"--storage {_redact(url)}: missing database driver: {exc}") from None
    except Exception as exc:  # sqlalchemy.exc.OperationalError & co: unreachable, bad credentials
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = _redact(url)
        raise HamgraphError(f"--storage {where}: cannot open the database: {first}") from None


def _redact(url: str) -> str:
    if "://" in url and "@" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        if ":" in creds:
            return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


@contextlib.contextmanager
def _quiet_experimental() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def _is_journal(storage: optuna.storages.BaseStorage) -> bool:
    from optuna.storages.journal import JournalStorage

    return isinstance(storage, JournalStorage)


# ==== liveness ===================================================================================
def _process_start(pid: int) -> str:
    """The kernel's start time of `pid` (guards against pid reuse); "" where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _process_start(pid) in ("", start)


def _owner(number: int) -> dict[str, Any]:
    pid = os.getpid()
    return {"trial": number, "host": socket.gethostname(), "pid": pid, "start": _process_start(pid)}


def _is_stale(trial: FrozenTrial, now: float) -> bool:
    owner = trial.system_attrs.get(S_OWNER)
    if isinstance(owner, dict) and owner.get("trial") == trial.number:
        if owner.get("host") == socket.gethostname() and not _alive(
            int(owner["pid"]), str(owner.get("start", ""))
        ):
            return True
        beat = trial.system_attrs.get(S_HEARTBEAT)
        return isinstance(beat, (int, float)) and now - beat > GRACE_SECONDS
    # No owner yet: created but never claimed; only its age tells.
    started = trial.datetime_start.timestamp() if trial.datetime_start else now
    return now - started > GRACE_SECONDS


def recover_stale(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials of dead workers and queue a retry of each. Returns their numbers."""
    storage = study._storage
    if not _is_journal(storage):
        with _quiet_experimental():
            optuna.storages.fail_stale_trials(study)  # RDB heartbeat; retries via the callback
    now = time.time()
    failed: list[int] = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(trial, now):
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, A_OUTCOME, "stale")
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another process got there first
        failed.append(trial.number)
        _enqueue_retry(study, trial)
        log.warning("%s: trial %d of a dead worker failed and queued again",
                    study.study_name, trial.number)
    return failed


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    user = {k: trial.user_attrs[k] for k in (A_CELL, A_OPT, A_ALPHA, A_BETA)
            if k in trial.user_attrs}
    system = {k: trial.system_attrs[k] for k in ("grid_id", "search_space")
              if k in trial.system_attrs}
    system[S_RETRY_OF] = trial.number
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=user, system_attrs=system,
    ))


class _Heartbeat:
    """Journal storage only (Optuna 5 has no journal heartbeat): a system attr beat per period.

    A null object for RDB storages, where Optuna's own heartbeat thread runs.
    """

    def __init__(self, trial: optuna.Trial, enabled: bool) -> None:
        self._trial, self._enabled = trial, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self._enabled:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        storage, trial_id = self._trial.storage, self._trial._trial_id
        while True:
            with contextlib.suppress(Exception):  # a failed beat only makes the trial look stale
                storage.set_trial_system_attr(trial_id, S_HEARTBEAT, time.time())
            if self._stop.wait(HEARTBEAT_SECONDS):
                return


# ==== progress of a study ========================================================================
def _cell_of(trial: FrozenTrial) -> str | None:
    cell = trial.user_attrs.get(A_CELL, trial.params.get(A_CELL))
    return None if cell is None else str(cell)


def _is_done(trial: FrozenTrial) -> bool:
    outcome = trial.user_attrs.get(A_OUTCOME)
    if trial.state == TrialState.COMPLETE:
        return True
    return trial.state.is_finished() and outcome in DONE


@dataclasses.dataclass
class Progress:
    evaluated: int  # trials that count towards the budget
    running: int  # RUNNING trials (any worker)
    waiting: int
    missing: list[str]  # grid cells with nothing done, running or waiting
    open_cells: int  # grid cells neither done nor running (a worker could start them)
    done_cells: int

    def finished(self, budget: int, grid: bool) -> bool:
        if self.evaluated >= budget:
            return True
        return grid and self.done_cells >= budget


def study_progress(study: optuna.Study, cells: list[str] | None) -> Progress:
    trials = study.get_trials(deepcopy=False)
    evaluated = sum(
        t.state.is_finished() and t.user_attrs.get(A_OUTCOME) in EVALUATED for t in trials
    )
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    if cells is None:
        return Progress(evaluated, running, waiting, [], 0, 0)
    done = {_cell_of(t) for t in trials if _is_done(t)}
    active = {_cell_of(t) for t in trials if t.state == TrialState.RUNNING}
    queued = {_cell_of(t) for t in trials if t.state == TrialState.WAITING}
    tried = {_cell_of(t) for t in trials}
    missing = [c for c in cells if c in tried and c not in done | active | queued]
    open_cells = sum(c not in done and c not in active for c in cells)
    return Progress(evaluated, running, waiting, missing, open_cells,
                    sum(c in done for c in cells))


def _enqueue_cell(study: optuna.Study, cell: str, cells: list[str]) -> None:
    """Queue a grid cell again (all its earlier trials were duplicates or failed workers)."""
    system: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        if _cell_of(t) == cell and "grid_id" in t.system_attrs:
            system = {k: t.system_attrs[k] for k in ("grid_id", "search_space")}
            break
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params={A_CELL: cell},
        distributions={A_CELL: CategoricalDistribution(cells)},
        user_attrs={A_CELL: cell}, system_attrs=system,
    ))


def _duplicate_of(study: optuna.Study, trial: optuna.Trial, cell: str, final: bool) -> int | None:
    """The trial this one must yield to, if any (see the module docstring)."""
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or _cell_of(other) != cell:
            continue
        if _is_done(other):
            return other.number
        if other.state != TrialState.RUNNING:
            continue
        if final and other.system_attrs.get(S_FINISHING):
            return other.number
        if not final and other.number < trial.number:
            return other.number
    return None


# ==== objective ==================================================================================
@dataclasses.dataclass
class _Context:
    sweep: Sweep
    dataset: str
    model: str
    study: optuna.Study
    cells: list[str] | None  # grid cell labels; None for TPE
    store: Any  # hamgraph.store.ResultStore
    paths: Any  # hamgraph.data.paths.DataPaths
    device: Any  # torch.device
    journal: bool
    prune: bool


class _Duplicate(optuna.TrialPruned):
    pass


def _choose_cell(trial: optuna.Trial, ctx: _Context) -> Cell:
    if ctx.cells is not None:
        return _cell_from_label(trial.suggest_categorical(A_CELL, ctx.cells))
    if trial.user_attrs.get(A_CELL) == BASELINE:
        return Cell(None)
    space = ctx.sweep.search
    assert isinstance(space, TpeSpace)
    sign = space.alpha.signs[0]
    if len(space.alpha.signs) > 1:
        sign = trial.suggest_categorical("sign", list(space.alpha.signs))
    magnitude = trial.suggest_float("abs_alpha", space.alpha.min, space.alpha.max, log=True)
    beta = trial.suggest_float("beta", space.beta.min, space.beta.max, log=space.beta.log)
    return Cell(HamSettings(alpha=magnitude if sign == "ham" else -magnitude, beta=beta))


def _specs(ctx: _Context, cell: Cell) -> list[RunSpec]:
    from hamgraph.grid import specs_for

    return specs_for(
        ctx.dataset, ctx.model, cell.ham, overrides=ctx.sweep.param_overrides(),
        runs=ctx.sweep.runs, seed=ctx.sweep.seed,
    )


def _run_one(spec: RunSpec, ctx: _Context) -> RunResult:
    """One run of the trial: read back from the result store when finished, else trained.

    A diverged run is a result (stored as failed). Any other failure (dataset unavailable, an
    error) is not stored by `execute_specs`; it is raised here, so the trial fails without
    settling its cell and the next sweep retries it.
    """
    from hamgraph.grid import execute_specs

    (result,) = execute_specs([spec], ctx.store, ctx.paths, ctx.device)
    if result.status != "ok" and spec.key() not in ctx.store.finished_keys():
        if result.reason.startswith("dataset unavailable"):
            raise DatasetUnavailableError(f"{spec.dataset}: {result.reason}")
        raise HamgraphError(f"{spec.key()}: {result.reason}")
    return result


def _mean_std(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def _objective(trial: optuna.Trial, ctx: _Context) -> float:
    storage, tid = trial.storage, trial._trial_id
    storage.set_trial_system_attr(tid, S_OWNER, _owner(trial.number))
    cell = _choose_cell(trial, ctx)
    trial.set_user_attr(A_CELL, cell.label)
    trial.set_user_attr(A_OPT, cell.optimizer)
    trial.set_user_attr(A_ALPHA, None if cell.ham is None else cell.ham.alpha)
    trial.set_user_attr(A_BETA, None if cell.ham is None else cell.ham.beta)

    def finish(outcome: str, reason: str = "") -> None:
        trial.set_user_attr(A_OUTCOME, outcome)
        if reason:
            trial.set_user_attr(A_REASON, reason)

    def check_duplicate(final: bool) -> None:
        if final:
            storage.set_trial_system_attr(tid, S_FINISHING, True)
        other = _duplicate_of(ctx.study, trial, cell.label, final)
        if other is not None:
            storage.set_trial_system_attr(tid, S_FINISHING, False)
            finish("duplicate", f"duplicate of trial {other}")
            raise _Duplicate(f"duplicate of trial {other}")

    check_duplicate(final=False)
    vals: list[float] = []
    tests: list[float] = []
    with _Heartbeat(trial, enabled=ctx.journal):
        for i, spec in enumerate(_specs(ctx, cell)):
            result = _run_one(spec, ctx)
            if not result.ok:
                check_duplicate(final=True)
                why = f"run {spec.run} ({spec.key()}) failed: {result.reason or 'diverged'}"
                finish("diverged", why)
                raise TrainingDiverged(why)
            vals.append(result.val)
            tests.append(result.test)
            trial.report(sum(vals) / len(vals), step=i)
            if ctx.prune and trial.should_prune():
                finish("pruned", f"median pruner after run {spec.run}")
                raise optuna.TrialPruned(f"pruned after run {spec.run}")
    val_mean, val_std = _mean_std(vals)
    test_mean, test_std = _mean_std(tests)
    for key, value in [("val_mean", val_mean), ("val_std", val_std), ("test_mean", test_mean),
                       ("test_std", test_std), ("n", len(vals)), ("vals", vals),
                       ("tests", tests)]:
        trial.set_user_attr(key, value)
    check_duplicate(final=True)
    finish("complete")
    log.info("%s: trial %d %s: val %.2f test %.2f", ctx.study.study_name, trial.number,
             cell.label, 100 * val_mean, 100 * test_mean)
    return val_mean


# ==== worker =====================================================================================
@dataclasses.dataclass(frozen=True)
class _Job:
    """What a worker process needs (picklable)."""

    sweep: Sweep
    url: str
    out: str
    device: str
    trials: int | None
    threads: int | None  # torch threads; None: leave torch's default
    index: int  # worker index (TPE seed offset)
    parent: int | None  # pid of the parent; the worker exits when the parent dies
    log_level: int


def _budget(sweep: Sweep, trials: int | None) -> int:
    if isinstance(sweep.search, GridSpace):
        total = len(grid_cells(sweep.search))
        return total if trials is None else min(total, trials)
    return sweep.search.trials if trials is None else trials


def _sampler(sweep: Sweep, index: int, offset: int = 0) -> optuna.samplers.BaseSampler:
    """GridSampler (same seed everywhere) or TPE seeded by (seed, worker, node, trials so far).

    The trial count in the seed keeps a resumed sweep from replaying the first suggestions
    of the previous one (they would only be pruned as duplicates).
    """
    space = sweep.search
    if isinstance(space, GridSpace):
        return optuna.samplers.GridSampler(
            {A_CELL: [c.label for c in grid_cells(space)]}, seed=GRID_SAMPLER_SEED
        )
    node = os.environ.get("SLURM_ARRAY_TASK_ID", os.environ.get("SLURM_PROCID", "0"))
    text = f"{space.seed}-{index}-{node}-{offset}"
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) if (index, offset) != (0, 0) \
        or node != "0" else space.seed
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
    space = sweep.search
    if isinstance(space, TpeSpace) and space.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
    return optuna.pruners.NopPruner()


def _load_study(sweep: Sweep, storage: Any, dataset: str, model: str, index: int) -> optuna.Study:
    name = study_name(sweep, dataset, model)
    offset = len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    return optuna.load_study(
        study_name=name, storage=storage, sampler=_sampler(sweep, index, offset),
        pruner=_pruner(sweep),
    )


def _drive(ctx: _Context, budget: int) -> None:
    """Run trials of one study until it is finished or every open cell is taken by others."""
    grid = ctx.cells is not None
    study = ctx.study

    def stop_when_done(study: optuna.Study, _trial: FrozenTrial) -> None:
        p = study_progress(study, ctx.cells)
        taken = p.evaluated + p.running >= budget  # the rest is running in other workers
        if p.finished(budget, grid) or taken or (grid and p.open_cells == 0):
            study.stop()

    for _round in range(budget + 10):  # each round settles at least one trial
        recover_stale(study)
        p = study_progress(study, ctx.cells)
        if p.finished(budget, grid):
            return
        if grid:
            for cell in p.missing:
                _enqueue_cell(study, cell, ctx.cells or [])
            n = min(p.open_cells, budget - p.evaluated - p.running)
        else:
            n = budget - p.evaluated - p.running
        if n <= 0:
            return  # the rest is running in other workers
        study.optimize(
            lambda trial: _objective(trial, ctx), n_trials=n, catch=(TrainingDiverged,),
            callbacks=[stop_when_done],
        )


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)  # orphaned: the sweep was killed; stop training for nobody
            time.sleep(2.0)

    threading.Thread(target=watch, daemon=True).start()


def _work(job: _Job) -> None:
    """One worker: every study of the sweep in order, sharing the storage with the others."""
    from hamgraph.data.paths import data_paths_from_env
    from hamgraph.store import ResultStore
    from hamgraph.train import resolve_device

    if job.threads is not None:
        import torch

        torch.set_num_threads(job.threads)
    storage = open_storage(job.url)
    store = ResultStore(Path(job.out))
    paths = data_paths_from_env()
    device = resolve_device(job.device)
    budget = _budget(job.sweep, job.trials)
    grid = isinstance(job.sweep.search, GridSpace)
    for dataset, model in job.sweep.targets():
        study = _load_study(job.sweep, storage, dataset, model, job.index)
        ctx = _Context(
            sweep=job.sweep, dataset=dataset, model=model, study=study,
            cells=[c.label for c in grid_cells(job.sweep.search)] if grid else None,  # type: ignore[arg-type]
            store=store, paths=paths, device=device, journal=_is_journal(storage),
            prune=isinstance(_pruner(job.sweep), optuna.pruners.MedianPruner),
        )
        _drive(ctx, budget)


def _worker_main(job: _Job) -> None:
    """Entry point of a spawned worker process. Exit code 2: bad input, 1: other errors."""
    logging.basicConfig(level=job.log_level, format="%(message)s")
    _set_optuna_verbosity(job.log_level)
    if job.parent is not None:
        _watch_parent(job.parent)
    try:
        _work(job)
    except UserInputError as exc:
        log.error("hamgraph: error: worker %d: %s", job.index, exc)
        raise SystemExit(2) from None
    except HamgraphError as exc:
        log.error("hamgraph: error: worker %d: %s", job.index, exc)
        raise SystemExit(1) from None


def _set_optuna_verbosity(level: int) -> None:
    optuna.logging.set_verbosity(logging.INFO if level <= logging.DEBUG else logging.WARNING)


# ==== parent =====================================================================================
def prepare_studies(sweep: Sweep, storage: Any) -> list[optuna.Study]:
    """Create (or load) every study once, before workers start; recover dead workers' trials."""
    studies = []
    for dataset, model in sweep.targets():
        study = optuna.create_study(
            study_name=study_name(sweep, dataset, model), storage=storage,
            sampler=_sampler(sweep, 0), pruner=_pruner(sweep), direction="maximize",
            load_if_exists=True,
        )
        attrs = study.user_attrs
        wanted = {
            "sweep": sweep.name, "dataset": dataset, "model": model,
            "search": json.dumps(sweep.search.model_dump(), sort_keys=True),
            "base": json.dumps({"epochs": sweep.epochs, "runs": sweep.runs, "seed": sweep.seed,
                                "overrides": sweep.overrides}, sort_keys=True, default=str),
        }
        for key, value in wanted.items():
            if attrs.get(key) != value:
                study.set_user_attr(key, value)
        recover_stale(study)
        space = sweep.search
        if isinstance(space, TpeSpace) and space.include_baseline and not any(
            t.user_attrs.get(A_CELL) == BASELINE for t in study.get_trials(deepcopy=False)
        ):
            study.enqueue_trial({}, user_attrs={A_CELL: BASELINE, A_OPT: BASELINE})
        studies.append(study)
    return studies


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def run_sweep(
    sweep_file: str | os.PathLike,
    storage: str | None = None,
    workers: int = 1,
    trials: int | None = None,
    out: str | os.PathLike | None = None,
    device: str = "auto",
) -> int:
    """The `hamgraph sweep` command. Returns 0 when every study is finished, 1 otherwise."""
    from hamgraph.train import resolve_device

    sweep = load_sweep(sweep_file)
    if workers < 1:
        raise UserInputError(f"--workers {workers}: must be >= 1")
    if trials is not None and trials < 1:
        raise UserInputError(f"--trials {trials}: must be >= 1")
    resolve_device(device)  # a bad --device fails here, not in every worker
    out_dir = Path(out) if out is not None else RESULTS_ROOT / sweep.name
    url = storage_url(storage, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    level = logging.getLogger("hamgraph").getEffectiveLevel()
    _set_optuna_verbosity(level)
    storage_obj = open_storage(url)
    prepare_studies(sweep, storage_obj)
    log.info("sweep %s: %d studies, storage %s, %d worker(s), results in %s", sweep.name,
             len(sweep.targets()), _redact(url), workers, out_dir)

    def job(index: int, threads: int | None, parent: int | None) -> _Job:
        return _Job(sweep, url, str(out_dir), device, trials, threads, index, parent, level)

    errors: list[str] = []
    if workers == 1:
        _work(job(0, None, None))
    else:
        ctx = multiprocessing.get_context("spawn")  # torch + fork is unsafe
        threads = max(1, _cores() // workers)
        procs = [ctx.Process(target=_worker_main, args=(job(i, threads, os.getpid()),),
                             name=f"hamgraph-sweep-{i}") for i in range(workers)]
        for proc in procs:
            proc.start()
        try:
            for proc in procs:
                proc.join()
        except KeyboardInterrupt:
            for proc in procs:
                proc.terminate()
            raise
        codes = [proc.exitcode for proc in procs]
        errors = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c != 0]
        if any(c == 2 for c in codes):
            raise UserInputError(f"sweep {sweep.name}: {'; '.join(errors)} (see above)")

    rows, unfinished = summarize(sweep, storage_obj, trials)
    _write_best(out_dir / BEST_CSV, rows)
    for line in format_best(rows):
        log.info("%s", line)
    log.info("best values: %s; runs: %s; dashboard: optuna-dashboard %s",
             out_dir / BEST_CSV, out_dir / "runs.csv", _dashboard_arg(url))
    if errors:
        raise HamgraphError(f"sweep {sweep.name}: {'; '.join(errors)}")
    if unfinished:
        log.warning("unfinished studies (rerun the same command to resume): %s",
                    ", ".join(unfinished))
        return 1
    return 0


def _dashboard_arg(url: str) -> str:
    return url[len("journal:"):] if url.startswith("journal:") else _redact(url)


# ==== results ====================================================================================
def summarize(
    sweep: Sweep, storage: Any, trials: int | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Best trial per (dataset, model, optimizer) and the names of unfinished studies."""
    rows: list[dict[str, Any]] = []
    unfinished: list[str] = []
    budget = _budget(sweep, trials)
    grid = isinstance(sweep.search, GridSpace)
    cells = [c.label for c in grid_cells(sweep.search)] if grid else None  # type: ignore[arg-type]
    for dataset, model in sweep.targets():
        name = study_name(sweep, dataset, model)
        study = optuna.load_study(study_name=name, storage=storage)
        if not study_progress(study, cells).finished(budget, grid):
            unfinished.append(name)
        best: dict[str, FrozenTrial] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            kind = str(t.user_attrs.get(A_OPT, ""))
            if kind and (kind not in best or t.value > best[kind].value):  # type: ignore[operator]
                best[kind] = t
        for kind in (BASELINE, "ham", "nham"):
            if kind in best:
                t = best[kind]
                a = t.user_attrs
                rows.append({
                    "dataset": dataset, "model": model, "optimizer": kind,
                    "alpha": a.get(A_ALPHA), "beta": a.get(A_BETA),
                    "val_mean": a.get("val_mean"), "val_std": a.get("val_std"),
                    "test_mean": a.get("test_mean"), "test_std": a.get("test_std"),
                    "n": a.get("n"), "trial": t.number, "study": name,
                })
    return rows, unfinished


def _write_best(path: Path, rows: list[dict[str, Any]]) -> None:
    """best.csv, atomically. val/test are fractions (0..1) like runs.csv; empty = not applicable."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=BEST_COLUMNS)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _pm(mean: Any, std: Any) -> str:
    if mean is None or not math.isfinite(float(mean)):
        return "-"
    if std is None or not math.isfinite(float(std)):
        return f"{100 * mean:.2f}"
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def format_best(rows: list[dict[str, Any]]) -> list[str]:
    """The summary table: val and test mean ± std (x100) of the best cell per optimizer."""
    from hamgraph.models import MODEL_DISPLAY

    header = ["dataset", "model", "optimizer", "alpha", "beta", "val", "test", "n", "trial"]
    table = [header]
    for r in rows:
        table.append([
            r["dataset"], MODEL_DISPLAY.get(r["model"], r["model"]), r["optimizer"],
            "-" if r["alpha"] is None else _fmt(r["alpha"]),
            "-" if r["beta"] is None else _fmt(r["beta"]),
            _pm(r["val_mean"], r["val_std"]), _pm(r["test_mean"], r["test_std"]),
            str(r["n"]), str(r["trial"]),
        ])
    if len(table) == 1:
        return ["no completed trials yet"]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["best cell per dataset x model and optimizer (x100; mean ± sample std over runs)"]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return lines


__all__ = [
    "Cell", "GridSpace", "Sweep", "TpeSpace", "format_best", "grid_cells", "load_sweep",
    "open_storage", "prepare_studies", "recover_stale", "run_sweep", "storage_url",
    "study_name", "study_progress", "summarize",
]
