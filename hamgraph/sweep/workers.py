"""Worker processes: each drives every study of the sweep, batch after batch, until done.

`--workers N` spawns N processes on this machine (torch + fork is unsafe), each with cores/N
torch threads; `--workers 1` runs in the calling process. Several machines share a study
through one RDB storage (sweeps/slurm-array.sh). A worker exits when its parent dies (an
orphan would train for nobody).

`--trials K` bounds the evaluated trials per study (complete, diverged or pruned by the pruner;
duplicates and errors do not count); with several workers the bound can be overshot by the
trials the others asked at the same time.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from pathlib import Path

import optuna

from hamgraph import preemption
from hamgraph.errors import HamgraphError, UserInputError
from hamgraph.preemption import EXIT_PREEMPTED, Preempted
from hamgraph.runner import PackSize
from hamgraph.sweep import coordination as co
from hamgraph.sweep.schema import Sweep, study_name
from hamgraph.sweep.spaces import Role
from hamgraph.sweep.storage import open_storage
from hamgraph.sweep.trials import StudyContext, run_batch

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Job:
    """What a worker process needs (picklable)."""

    sweep: Sweep
    url: str
    out: str
    device: str
    trials: int | None  # --trials: the budget per study (None: the space's)
    batch: int | None  # trials asked at once (None: the space's default)
    pack: PackSize
    track: tuple[str, ...]  # experiment trackers (hamgraph.track), one group per study
    deterministic: bool  # deterministic CUDA kernels (--deterministic)
    workers: int  # worker processes on this machine (they share the cells of a study)
    threads: int | None  # torch threads; None: leave torch's default
    index: int  # worker index (TPE seed)
    parent: int | None  # pid of the parent; the worker exits when the parent dies
    log_level: int


def batch_size(ctx: StudyContext, batch: int | None, left: int, workers: int) -> int:
    """Trials to ask now: `batch` (--batch or `search.batch`), else the space's default, else
    the cells left shared among the local workers; never more than `left`."""
    size = batch or ctx.space.batch or ctx.space.DEFAULT_BATCH or math.ceil(left / workers)
    return max(1, min(size, left))


def drive(ctx: StudyContext, budget: int, batch: int | None = None, workers: int = 1) -> None:
    """Run batches of one study until it is finished or every open cell is taken by others."""
    study = ctx.study
    cells = ctx.cells
    grid = cells is not None
    for _round in range(budget + 10):  # each round settles at least one trial, or stops
        co.recover_stale(study)
        p = co.study_progress(study, cells)
        if p.finished(budget, grid):
            return
        left = budget - p.evaluated - p.running
        if grid:
            for cell in p.missing:
                co.enqueue_cell(study, cell, cells or [])
            left = min(p.open_cells, left)
        if left <= 0:
            return  # the rest is running in other workers
        n = batch_size(ctx, batch, left, workers)
        run_batch(ctx, [study.ask() for _ in range(n)])


def _load_study(job: Job, storage: optuna.storages.BaseStorage, dataset: str,
                model: str, role: Role) -> optuna.Study:
    name = study_name(job.sweep, dataset, model, role)
    trials = storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False)
    finished = sum(t.state.is_finished() for t in trials)
    space = job.sweep.space_of(role)
    return optuna.load_study(
        study_name=name, storage=storage,
        sampler=space.make_sampler(job.index, finished, job.sweep.baseline),
        pruner=space.make_pruner(),
    )


def work(job: Job) -> None:
    """One worker: every study of the sweep in order, sharing the storage with the others."""
    from hamgraph.data.paths import data_paths_from_env
    from hamgraph.store import ResultStore
    from hamgraph.track import Tracking
    from hamgraph.train import resolve_device, use_deterministic_algorithms

    if job.deterministic:
        use_deterministic_algorithms(True)
    if job.threads is not None:
        import torch

        torch.set_num_threads(job.threads)
    storage = open_storage(job.url)
    store = ResultStore(Path(job.out))
    paths = data_paths_from_env()
    device = resolve_device(job.device)
    for dataset, model, role in job.sweep.studies():
        study = _load_study(job, storage, dataset, model, role)
        ctx = StudyContext(
            sweep=job.sweep, dataset=dataset, model=model, study=study,
            store=store, paths=paths, device=device, pack=job.pack,
            tracking=Tracking(job.track, log_dir=job.out, group=study.study_name), role=role,
        )
        drive(ctx, ctx.space.budget_of(job.trials), job.batch, job.workers)


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)  # orphaned: the sweep was killed; stop training for nobody
            time.sleep(2.0)

    threading.Thread(target=watch, daemon=True).start()


def set_optuna_verbosity(level: int) -> None:
    optuna.logging.set_verbosity(logging.INFO if level <= logging.DEBUG else logging.WARNING)


def worker_main(job: Job) -> None:
    """Entry point of a spawned worker process. Exit code 2: bad input, 1: other errors,
    EXIT_PREEMPTED: stopped by SIGTERM / SIGUSR1 (from the parent) after checkpointing."""
    logging.basicConfig(level=job.log_level, format="%(message)s")
    set_optuna_verbosity(job.log_level)
    if job.parent is not None:
        _watch_parent(job.parent)
    try:
        with preemption.handle_signals():
            work(job)
    except Preempted:
        log.warning("worker %d: stopped on request after checkpointing", job.index)
        raise SystemExit(EXIT_PREEMPTED) from None
    except UserInputError as exc:
        log.error("hamgraph: error: worker %d: %s", job.index, exc)
        raise SystemExit(2) from None
    except HamgraphError as exc:
        log.error("hamgraph: error: worker %d: %s", job.index, exc)
        raise SystemExit(1) from None


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1
