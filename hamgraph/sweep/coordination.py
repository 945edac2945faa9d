"""Trial coordination between workers: owners, dead workers, heartbeats, no cell twice.

Dead workers: every trial records its owner (host, pid, process start time), and while a batch
trains, one thread per batch writes a heartbeat system attribute (unix time) on every trial of
the batch, on every storage (journal, SQLite, PostgreSQL, ...). A RUNNING trial is failed and
retried (a WAITING copy of its parameters) the next time any worker looks when its owner process
is gone (same host), or when its last sign of life (heartbeat, else its start) is older than
GRACE_SECONDS (any host). Optuna's own heartbeat is not used: Optuna 5 beats only inside
`Study.optimize` (hamgraph asks and tells), and its stale-trial check skips trials that never
beat. A retried trial reuses the runs that already finished (the result store is keyed by RunSpec).

No cell completes twice. Known limit (like GridSampler's own, see its docstring): two workers
can start the same cell. A trial first yields (PRUNED, user attribute `reason: duplicate of
trial N`) to a finished cell or to a running one with a smaller trial number; just before it
completes, it marks itself "finishing" and yields to any other finishing or COMPLETE trial of
the same cell. Storage writes are sequentially consistent (one database, or one append-only
journal), so of two racing trials the later check always sees the earlier mark: at most one
COMPLETE per cell. In the rare case both yield, the cell is re-queued (its runs are already in
the result store, so the retry costs no training). Trials of one batch are checked the same
way: two asks of one batch that got the same cell leave one of them PRUNED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from hamgraph.atomic import owner_alive, process_start
from hamgraph.sweep.spaces import A_SETTINGS, CELL
from hamgraph.sweep.storage import GRACE_SECONDS, HEARTBEAT_SECONDS

log = logging.getLogger(__name__)

# ---- trial attributes ---------------------------------------------------------------------------
A_CELL = CELL  # user attr: the cell label, the key of the duplicate guard
A_OPT, A_ALPHA, A_BETA = "optimizer", "alpha", "beta"  # user attrs, readable in the dashboard
A_OUTCOME = "outcome"  # user attr: complete | diverged | pruned | duplicate | stale | error
# | preempted
A_REASON = "reason"  # user attr: why a trial failed / was pruned
S_OWNER = "hamgraph:owner"  # system attr: {"trial", "host", "pid", "start"}
S_HEARTBEAT = "hamgraph:heartbeat"  # system attr (every storage): unix time of the last beat
S_FINISHING = "hamgraph:finishing"  # system attr: passed the training, about to complete
S_RETRY_OF = "hamgraph:retry_of"  # system attr: the trial number a WAITING retry replaces
EVALUATED = ("complete", "diverged", "pruned")  # outcomes that count towards the trial budget
DONE = ("complete", "diverged")  # outcomes that settle a cell ("error" does not: it is retried)


# ==== owners and liveness ========================================================================
def claim(trial: optuna.Trial) -> None:
    """Record this process as the owner of `trial` (read by `recover_stale` of any worker), with
    a first beat (the batch's Heartbeat thread starts once every trial of the batch is claimed)."""
    pid = os.getpid()
    owner = {"trial": trial.number, "host": socket.gethostname(), "pid": pid,
             "start": process_start(pid)}
    trial.storage.set_trial_system_attr(trial._trial_id, S_OWNER, owner)
    trial.storage.set_trial_system_attr(trial._trial_id, S_HEARTBEAT, time.time())


def _is_stale(trial: FrozenTrial, now: float) -> bool:
    # The last sign of life: the owner's last beat, else the start (a trial asked but never
    # claimed, or claimed by an older hamgraph that did not beat on RDB storages).
    last = trial.datetime_start.timestamp() if trial.datetime_start else now
    owner = trial.system_attrs.get(S_OWNER)
    if isinstance(owner, dict) and owner.get("trial") == trial.number:
        if owner.get("host") == socket.gethostname() and not owner_alive(
            int(owner["pid"]), str(owner.get("start", ""))
        ):
            return True  # its process on this host is gone
        beat = trial.system_attrs.get(S_HEARTBEAT)
        if isinstance(beat, (int, float)):
            last = beat
    return now - last > GRACE_SECONDS


def recover_stale(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials of dead workers and queue a retry of each. Returns their numbers."""
    storage = study._storage
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


def requeue_preempted(study: optuna.Study, trial: optuna.Trial) -> None:
    """A trial whose worker was stopped (SIGTERM / SIGUSR1, hamgraph.preemption): FAIL with
    outcome "preempted" (not evaluated, its cell stays open) and a retry queued at once, so
    the next worker continues it from its checkpoints without waiting for the grace period."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, A_OUTCOME, "preempted")
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    _enqueue_retry(study, storage.get_trial(trial._trial_id))


def _enqueue_retry(study: optuna.Study, trial: FrozenTrial) -> None:
    user = {k: trial.user_attrs[k] for k in (A_CELL, A_OPT, A_ALPHA, A_BETA, A_SETTINGS)
            if k in trial.user_attrs}
    system = {k: trial.system_attrs[k] for k in ("grid_id", "search_space")
              if k in trial.system_attrs}
    system[S_RETRY_OF] = trial.number
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs=user, system_attrs=system,
    ))


class Heartbeat:
    """A thread that writes S_HEARTBEAT (unix time) on every trial of a batch, once at the start
    and then every HEARTBEAT_SECONDS, on any storage (see the module docstring)."""

    def __init__(self, trials: Sequence[optuna.Trial]) -> None:
        self._trials = list(trials)
        self._enabled = bool(self._trials)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self._enabled:
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while True:
            for trial in self._trials:
                with contextlib.suppress(Exception):  # a failed beat only looks stale
                    trial.storage.set_trial_system_attr(trial._trial_id, S_HEARTBEAT, time.time())
            if self._stop.wait(HEARTBEAT_SECONDS):
                return


# ==== progress of a study ========================================================================
def cell_of(trial: FrozenTrial) -> str | None:
    cell = trial.user_attrs.get(A_CELL, trial.params.get(A_CELL))
    return None if cell is None else str(cell)


def is_done(trial: FrozenTrial) -> bool:
    """COMPLETE, or finished with an outcome that settles its cell (diverged)."""
    if trial.state == TrialState.COMPLETE:
        return True
    return trial.state.is_finished() and trial.user_attrs.get(A_OUTCOME) in DONE


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
    """Where a study stands; `cells`: the labels of a finite space (None: an open space)."""
    trials = study.get_trials(deepcopy=False)
    evaluated = sum(
        t.state.is_finished() and t.user_attrs.get(A_OUTCOME) in EVALUATED for t in trials
    )
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    if cells is None:
        return Progress(evaluated, running, waiting, [], 0, 0)
    done = {cell_of(t) for t in trials if is_done(t)}
    active = {cell_of(t) for t in trials if t.state == TrialState.RUNNING}
    queued = {cell_of(t) for t in trials if t.state == TrialState.WAITING}
    tried = {cell_of(t) for t in trials}
    missing = [c for c in cells if c in tried and c not in done | active | queued]
    open_cells = sum(c not in done and c not in active for c in cells)
    return Progress(evaluated, running, waiting, missing, open_cells,
                    sum(c in done for c in cells))


def enqueue_cell(study: optuna.Study, cell: str, cells: list[str]) -> None:
    """Queue a grid cell again (all its earlier trials were duplicates, errors or dead)."""
    system: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        if cell_of(t) == cell and "grid_id" in t.system_attrs:
            system = {k: t.system_attrs[k] for k in ("grid_id", "search_space")}
            break
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params={A_CELL: cell},
        distributions={A_CELL: CategoricalDistribution(cells)},
        user_attrs={A_CELL: cell}, system_attrs=system,
    ))


def duplicate_of(study: optuna.Study, trial: optuna.Trial, cell: str, final: bool) -> int | None:
    """The trial this one must yield to, if any (see the module docstring).

    `final=False`: the check before training; `final=True`: just before completing (the
    caller has set its own S_FINISHING mark first).
    """
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or cell_of(other) != cell:
            continue
        if is_done(other):
            return other.number
        if other.state != TrialState.RUNNING:
            continue
        if final and other.system_attrs.get(S_FINISHING):
            return other.number
        if not final and other.number < trial.number:
            return other.number
    return None
