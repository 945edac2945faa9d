"""The `hamgraph sweep` command: validate, create the studies, start the workers, summarize.

Nothing is printed here: `run_sweep` returns a `SweepOutcome`, the CLI prints `format_best`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import optuna
import pandas as pd

from hamgraph import preemption
from hamgraph.errors import HamgraphError, UserInputError
from hamgraph.preemption import EXIT_PREEMPTED, Preempted
from hamgraph.runner import PackSize, execute_specs, spec_sources, stale_keys
from hamgraph.specs import RunSpec
from hamgraph.store import ResultStore
from hamgraph.sweep import coordination as co
from hamgraph.sweep.schema import Sweep, load_sweep, study_name
from hamgraph.sweep.spaces import cell_of_trial
from hamgraph.sweep.storage import dashboard_arg, open_storage, redact, storage_url
from hamgraph.sweep.summary import BEST_CSV, best_cells, sweep_cells, write_best
from hamgraph.sweep.workers import Job, cores, set_optuna_verbosity, work, worker_main

log = logging.getLogger(__name__)

RESULTS_ROOT = Path("results")  # default out dir: results/<sweep name>/


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    """What `run_sweep` did."""

    out_dir: Path
    url: str  # the storage URL (with its password)
    best: pd.DataFrame  # best.csv: hamgraph.sweep.summary.BEST_COLUMNS
    unfinished: list[str]  # names of studies that need another run of the command
    stale: int  # finished runs recorded by another hamgraph version (before --rerun-stale)

    @property
    def finished(self) -> bool:
        return not self.unfinished


def check_storage_url(url: str) -> None:
    """Raise UserInputError for an RDB URL that SQLAlchemy cannot parse, whose database it does
    not know, or whose driver is not installed; connects to nothing (`journal:` always passes)."""
    if url.startswith("journal:"):
        return
    import sqlalchemy

    try:
        sqlalchemy.engine.make_url(url).get_dialect().import_dbapi()
    except ImportError as exc:
        raise UserInputError(
            f"--storage {redact(url)}: missing database driver: {exc}"
        ) from None
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(
            f"--storage {redact(url)}: not a database URL Optuna can open ({first}); expected "
            "sqlite:///f.db, postgresql://..., mysql+pymysql://... or journal:PATH"
        ) from None


def prepare_studies(sweep: Sweep, storage: optuna.storages.BaseStorage) -> list[optuna.Study]:
    """Create (or load) every study once, before workers start; recover dead workers' trials."""
    studies = []
    for dataset, model, role in sweep.studies():
        space = sweep.space_of(role)
        study = optuna.create_study(
            study_name=study_name(sweep, dataset, model, role), storage=storage,
            sampler=space.make_sampler(0, 0, sweep.baseline), pruner=space.make_pruner(),
            direction="maximize" if sweep.higher_is_better(dataset) else "minimize",
            load_if_exists=True,
        )
        attrs = study.user_attrs
        wanted = {
            "sweep": sweep.name, "dataset": dataset, "model": model,
            "search": json.dumps(sweep.search.model_dump(), sort_keys=True),
            "base": json.dumps({"epochs": sweep.epochs, "runs": sweep.runs, "seed": sweep.seed,
                                "overrides": sweep.overrides,
                                "optimizer": None if sweep.base is None else sweep.base.to_yaml()},
                               sort_keys=True, default=str),
            "value": "mean validation metric x100",
        }
        if role != "main":
            wanted["role"] = role
        for key, value in wanted.items():
            if attrs.get(key) != value:
                study.set_user_attr(key, value)
        co.recover_stale(study)
        space.prepare(study, sweep.baseline)
        studies.append(study)
    return studies


def known_specs(sweep: Sweep, studies: list[optuna.Study]) -> list[RunSpec]:
    """The runs of every cell the sweep has or will have tried: the cells of a finite space
    and those of every trial so far (in an open space, later trials are not known yet)."""
    specs: dict[str, RunSpec] = {}
    for (dataset, model, role), study in zip(sweep.studies(), studies, strict=True):
        cells = list(sweep.space_of(role).cells(sweep.baseline) or [])
        cells += [c for c in (cell_of_trial(t, sweep.baseline)
                              for t in study.get_trials(deepcopy=False)) if c is not None]
        for cell in dict.fromkeys(cells):
            for spec in sweep.specs(dataset, model, cell):
                specs.setdefault(spec.key(), spec)
    return list(specs.values())


def _handle_stale(sweep: Sweep, studies: list[optuna.Study], store: ResultStore, device: str,
                  pack: PackSize, rerun: bool) -> int:
    """Count (and with `rerun`, retrain) finished runs from another hamgraph version."""
    specs = known_specs(sweep, studies)
    stale = set(stale_keys(store, [s.key() for s in specs], spec_sources(specs)))
    if not stale:
        return 0
    if not rerun:
        log.warning("%d finished runs came from another hamgraph version (kept; --rerun-stale "
                    "retrains them)", len(stale))
        return len(stale)
    from hamgraph.data.paths import data_paths_from_env
    from hamgraph.train import resolve_device

    log.info("--rerun-stale: retraining %d runs recorded by another hamgraph version",
             len(stale))
    outcomes = execute_specs([s for s in specs if s.key() in stale], store,
                             data_paths_from_env(), resolve_device(device), pack=pack,
                             retrain=sorted(stale))
    failed = [o for o in outcomes if o.kind not in ("ok", "diverged")]
    if failed:
        raise HamgraphError(f"--rerun-stale: {len(failed)} run(s) could not be trained; "
                            f"first: {failed[0].spec.key()}: {failed[0].message}")
    return len(stale)


def _retrain_damaged(sweep: Sweep, studies: list[optuna.Study], store: ResultStore,
                     device: str, pack: PackSize) -> int:
    """Read every record (damaged ones are set aside by the store) and train again the runs of
    the sweep's cells whose records were set aside: trials that completed keep their value, and
    best.csv gets all their runs back."""
    store.verify()
    damaged = set(store.damaged_keys())
    specs = [s for s in known_specs(sweep, studies) if s.key() in damaged] if damaged else []
    if not specs:
        return 0
    from hamgraph.data.paths import data_paths_from_env
    from hamgraph.train import resolve_device

    log.warning("training again %d run(s) whose records were damaged", len(specs))
    execute_specs(specs, store, data_paths_from_env(), resolve_device(device), pack=pack)
    return len(specs)


def run_sweep(
    sweep_file: str | os.PathLike,
    storage: str | None = None,
    workers: int = 1,
    trials: int | None = None,
    out: str | os.PathLike | None = None,
    device: str = "auto",
    pack: PackSize = "auto",
    batch: int | None = None,
    rerun_stale: bool = False,
    track: Sequence[str] = (),
    deterministic: bool = False,
) -> SweepOutcome:
    """The `hamgraph sweep` command (the CLI prints `format_best(outcome.best)`).

    `batch`: trials asked at once per worker (default: `search.batch`, else 8 for TPE and the
    cells left / workers for a grid); `pack`: how the runner packs their runs. `track`:
    experiment trackers (one group per study); `deterministic`: deterministic CUDA kernels in
    every worker.
    Raises HamgraphError when a worker failed (after writing best.csv).
    """
    from hamgraph.train import resolve_device

    sweep = load_sweep(sweep_file)
    if workers < 1:
        raise UserInputError(f"--workers {workers}: must be >= 1")
    if trials is not None and trials < 1:
        raise UserInputError(f"--trials {trials}: must be >= 1")
    if batch is not None and batch < 1:
        raise UserInputError(f"--batch {batch}: must be >= 1")
    from hamgraph.track import parse_trackers

    resolve_device(device)  # a bad --device fails here, not in every worker
    trackers = parse_trackers([*sweep.track, *track])
    out_dir = Path(out) if out is not None else RESULTS_ROOT / sweep.name
    url = storage_url(storage, out_dir)
    check_storage_url(url)  # a bad --storage is bad input: nothing is written
    level = logging.getLogger("hamgraph").getEffectiveLevel()
    set_optuna_verbosity(level)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)  # before the storage: it may live in out_dir
    try:
        storage_obj = open_storage(url)
    except HamgraphError:
        if created:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if still empty
        raise
    studies = prepare_studies(sweep, storage_obj)
    store = ResultStore(out_dir)
    _retrain_damaged(sweep, studies, store, device, pack)
    stale = _handle_stale(sweep, studies, store, device, pack, rerun_stale)
    log.info("sweep %s: %d studies, storage %s, %d worker(s), results in %s", sweep.name,
             len(studies), redact(url), workers, out_dir)

    def job(index: int, threads: int | None, parent: int | None) -> Job:
        return Job(sweep, url, str(out_dir), device, trials, batch, pack, trackers,
                   deterministic, workers, threads, index, parent, level)

    errors: list[str] = []
    if workers == 1:
        work(job(0, None, None))
    else:
        ctx = multiprocessing.get_context("spawn")  # torch + fork is unsafe
        threads = max(1, cores() // workers)
        procs = [ctx.Process(target=worker_main, args=(job(i, threads, os.getpid()),),
                             name=f"hamgraph-sweep-{i}") for i in range(workers)]
        for proc in procs:
            proc.start()
        try:  # SIGTERM / SIGUSR1 reach the workers too: they checkpoint and exit
            with preemption.forward_to([p.pid for p in procs if p.pid is not None]):
                for proc in procs:
                    proc.join()
        except KeyboardInterrupt:
            for proc in procs:
                proc.terminate()
            raise
        codes = [proc.exitcode for proc in procs]
        if preemption.stop_requested() or EXIT_PREEMPTED in codes:
            raise Preempted
        errors = [f"worker {i} exited with code {c}" for i, c in enumerate(codes) if c != 0]
        if any(c == 2 for c in codes):
            raise UserInputError(f"sweep {sweep.name}: {'; '.join(errors)} (see above)")

    best = best_cells(sweep_cells(sweep, storage_obj, store))
    write_best(out_dir / BEST_CSV, best)
    unfinished = []
    for (_dataset, _model, role), study in zip(sweep.studies(), studies, strict=True):
        space = sweep.space_of(role)
        cells = space.cells(sweep.baseline)
        labels = None if cells is None else [c.label for c in cells]
        if not co.study_progress(study, labels).finished(space.budget_of(trials),
                                                         labels is not None):
            unfinished.append(study.study_name)
    log.info("best cells: %s; runs: %s; dashboard: optuna-dashboard %s",
             out_dir / BEST_CSV, store.runs_csv, dashboard_arg(url))
    if errors:
        raise HamgraphError(f"sweep {sweep.name}: {'; '.join(errors)}")
    if unfinished:
        log.warning("unfinished studies (rerun the same command to resume): %s",
                    ", ".join(unfinished))
    return SweepOutcome(out_dir, url, best, unfinished, stale)
