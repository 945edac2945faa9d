"""A batch of trials: ask several, train all their runs together, tell every result.

    study.ask() x N ──► claim (owner, cell, duplicate check) ──► RunSpecs of every cell
    ──► runner.execute_specs(all specs, pack=...) ──► RunOutcomes ──► per trial:
        all ok: value = the cell's mean validation metric (x100, hamgraph.cells) ──► COMPLETE
        a run diverged: FAIL, outcome "diverged" with the reason (settles the cell)
        a run unavailable / error: FAIL, outcome "error" (the cell stays open: a rerun retries)

The runner packs runs that share dataset, model and params (the cells of one study do, across
trials and runs), so a batch is what makes packing pay in a sweep.

A trial failed by another worker while this one trained (this worker was cut off from the
storage for longer than the stale limit, so it looked dead: hamgraph.sweep.coordination) cannot
be told any more: that is logged, the trial is left as the other worker set it, and the batch
goes on. Its runs are in the result store already, so the queued retry reuses them.

Pruning: with a pruner (TPE `pruner: median`), the batch trains in stages, run i of every
trial still open, then reports each trial's running mean and asks the pruner; a pruned trial
trains no more runs. Without a pruner all runs of the batch go to the runner at once (the
widest packs). Pruning saves time only through these stages: packs are as wide as the batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from hamgraph.cells import summarize
from hamgraph.errors import DatasetUnavailableError, HamgraphError
from hamgraph.preemption import Preempted
from hamgraph.runner import PackSize, RunOutcome, execute_specs
from hamgraph.specs import RunResult, RunSpec
from hamgraph.store import ResultStore, run_row
from hamgraph.sweep import coordination as co
from hamgraph.sweep.schema import Sweep
from hamgraph.sweep.spaces import A_SETTINGS, Cell, Role, SearchSpace
from hamgraph.track import Tracking

log = logging.getLogger(__name__)


@dataclasses.dataclass
class StudyContext:
    """What the trials of one study need."""

    sweep: Sweep
    dataset: str
    model: str
    study: optuna.Study
    store: ResultStore
    paths: Any  # hamgraph.data.paths.DataPaths
    device: Any  # torch.device
    pack: PackSize = "auto"
    tracking: Tracking | None = None  # experiment trackers of every trained run
    role: Role = "main"  # "baseline": the tuned baseline study of `budget: equal`

    @property
    def space(self) -> SearchSpace:
        return self.sweep.space_of(self.role)

    @property
    def baseline(self) -> str:
        return self.sweep.baseline

    @property
    def cells(self) -> list[str] | None:
        """The labels of a finite space (None: an open one)."""
        cells = self.space.cells(self.baseline)
        return None if cells is None else [c.label for c in cells]

    @property
    def prune(self) -> bool:
        return not isinstance(self.study.pruner, optuna.pruners.NopPruner)


@dataclasses.dataclass
class _Open:
    """A claimed trial on its way through the batch."""

    trial: optuna.Trial
    cell: Cell
    specs: list[RunSpec]
    results: list[RunResult] = dataclasses.field(default_factory=list)  # ok runs, in run order
    closed: bool = False


def cell_stats(results: list[RunResult]) -> pd.Series:
    """The cell summary (hamgraph.cells.summarize) of one cell's results: mean/std x100, n."""
    (row,) = (r for _, r in summarize(pd.DataFrame([run_row(r) for r in results])).iterrows())
    return row


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _finish(open_: _Open, outcome: str, reason: str = "") -> None:
    open_.trial.set_user_attr(co.A_OUTCOME, outcome)
    if reason:
        open_.trial.set_user_attr(co.A_REASON, reason)


def _claim(ctx: StudyContext, trial: optuna.Trial) -> _Open | None:
    """Own the trial, choose its cell, yield to an earlier trial of the same cell."""
    co.claim(trial)
    cell = ctx.space.suggest(trial, ctx.baseline)
    specs = ctx.sweep.specs(ctx.dataset, ctx.model, cell)
    # the cell's label last: a trial with a cell attribute has all the others (a worker killed
    # in between leaves a trial without a cell, which nothing reads as half a cell)
    if cell.settings:
        trial.set_user_attr(A_SETTINGS, [[name, value] for name, value in cell.settings])
    trial.set_user_attr(co.A_OPT, specs[0].optimizer.kind)
    trial.set_user_attr(co.A_ALPHA, None if cell.ham is None else cell.ham.alpha)
    trial.set_user_attr(co.A_BETA, None if cell.ham is None else cell.ham.beta)
    trial.set_user_attr("label", specs[0].optimizer_label)
    trial.set_user_attr(co.A_CELL, cell.label)
    open_ = _Open(trial, cell, specs)
    if _yield_to_duplicate(ctx, open_, final=False):
        return None
    return open_


def _yield_to_duplicate(ctx: StudyContext, open_: _Open, final: bool) -> bool:
    """True (and the trial told PRUNED) when another trial of the cell goes first."""
    storage, tid = open_.trial.storage, open_.trial._trial_id
    if final:
        storage.set_trial_system_attr(tid, co.S_FINISHING, True)
    other = co.duplicate_of(ctx.study, open_.trial, open_.cell.label, final)
    if other is None:
        return False
    storage.set_trial_system_attr(tid, co.S_FINISHING, False)
    _finish(open_, "duplicate", f"duplicate of trial {other}")
    ctx.study.tell(open_.trial, state=TrialState.PRUNED)
    open_.closed = True
    return True


def _stages(opens: list[_Open], prune: bool) -> list[list[tuple[_Open, RunSpec]]]:
    """All runs at once, or (pruner) run i of every trial per stage."""
    pairs = [[(o, s) for s in o.specs] for o in opens]
    if not prune:
        return [[p for trial_pairs in pairs for p in trial_pairs]]
    depth = max((len(p) for p in pairs), default=0)
    return [[p[i] for p in pairs if i < len(p)] for i in range(depth)]


@contextlib.contextmanager
def _unless_finished_elsewhere(ctx: StudyContext, o: _Open) -> Iterator[None]:
    """Run a block that reports or tells `o`; if the trial was finished meanwhile by another
    worker (failed as stale), log it and close it instead of raising."""
    try:
        yield
    except (optuna.exceptions.UpdateFinishedTrialError, ValueError):
        state = ctx.study._storage.get_trial(o.trial._trial_id).state
        if state == TrialState.RUNNING:
            raise  # not that: a real error
        o.closed = True
        log.warning(
            "%s: trial %d (%s) was set %s by another worker while this one trained (cut off "
            "from the storage too long?); not told, its runs are kept for the retry",
            ctx.study.study_name, o.trial.number, o.cell.label, state.name,
        )


def run_batch(ctx: StudyContext, trials: list[optuna.Trial]) -> None:
    """Evaluate asked trials together and tell every one of them.

    Raises DatasetUnavailableError / HamgraphError after telling all trials when a run could
    not be trained (its trial FAILs without settling its cell, so a rerun retries it).
    """
    opens = [o for o in (_claim(ctx, t) for t in trials) if o is not None]
    errors: list[RunOutcome] = []
    try:
        with co.Heartbeat([o.trial for o in opens]):
            _run_stages(ctx, opens, errors)
    except Preempted:  # SIGTERM / SIGUSR1: the open trials are retried by the next worker
        for o in opens:
            if not o.closed:
                co.requeue_preempted(ctx.study, o.trial)
        raise
    for o in opens:
        if not o.closed:
            with _unless_finished_elsewhere(ctx, o):
                _complete(ctx, o)
    if errors:
        first = errors[0]
        message = f"{first.spec.key()}: {first.message}"
        more = f" (and {len(errors) - 1} more run(s))" if len(errors) > 1 else ""
        if first.kind == "unavailable":
            raise DatasetUnavailableError(f"{message}{more}")
        raise HamgraphError(f"{message}{more}")


def _run_stages(ctx: StudyContext, opens: list[_Open], errors: list[RunOutcome]) -> None:
    stages = _stages(opens, ctx.prune)
    for number, stage in enumerate(stages):
        stage = [(o, s) for o, s in stage if not o.closed]
        if not stage:
            continue
        outcomes = execute_specs([s for _, s in stage], ctx.store, ctx.paths, ctx.device,
                                 pack=ctx.pack, tracking=ctx.tracking)
        by_trial: dict[int, list[RunOutcome]] = {}
        for (o, _spec), outcome in zip(stage, outcomes, strict=True):
            by_trial.setdefault(o.trial.number, []).append(outcome)
        last = number == len(stages) - 1
        for o in {o.trial.number: o for o, _ in stage}.values():
            with _unless_finished_elsewhere(ctx, o):
                _settle_stage(ctx, o, by_trial[o.trial.number], errors, last)


def _settle_stage(ctx: StudyContext, o: _Open, outcomes: list[RunOutcome],
                  errors: list[RunOutcome], last: bool) -> None:
    failed = [x for x in outcomes if x.kind not in ("ok", "diverged")]  # not a result
    if failed:
        errors.extend(failed)
        _finish(o, "error", f"run {failed[0].spec.run} ({failed[0].spec.key()}): "
                            f"{failed[0].message}")
        ctx.study.tell(o.trial, state=TrialState.FAIL)
        o.closed = True
        return
    diverged = [x for x in outcomes if x.kind == "diverged"]
    if diverged:
        if _yield_to_duplicate(ctx, o, final=True):
            return
        spec, reason = diverged[0].spec, diverged[0].message or "diverged"
        _finish(o, "diverged", f"run {spec.run} ({spec.key()}) failed: {reason}")
        ctx.study.tell(o.trial, state=TrialState.FAIL)
        o.closed = True
        return
    for x in outcomes:
        assert x.result is not None  # ok outcomes carry their result
        o.results.append(x.result)
        o.trial.report(float(cell_stats(o.results)["val_mean"]), step=x.spec.run)
    if ctx.prune and not last and o.trial.should_prune():
        _finish(o, "pruned", f"median pruner after run {o.results[-1].spec.run}")
        ctx.study.tell(o.trial, state=TrialState.PRUNED)
        o.closed = True


def _complete(ctx: StudyContext, o: _Open) -> None:
    stats = cell_stats(o.results)
    trial = o.trial
    for key in ("val_mean", "val_std", "test_mean", "test_std"):
        trial.set_user_attr(key, _finite(stats[key]))
    trial.set_user_attr("n", int(stats["n"]))
    trial.set_user_attr("metric", str(stats["metric"]))
    trial.set_user_attr("vals", [r.val for r in o.results])  # fractions, as in runs.csv
    trial.set_user_attr("tests", [r.test for r in o.results])
    if _yield_to_duplicate(ctx, o, final=True):
        return
    _finish(o, "complete")
    value = float(stats["val_mean"])
    ctx.study.tell(trial, value)
    o.closed = True
    log.info("%s: trial %d %s: val %.2f test %.2f", ctx.study.study_name, trial.number,
             o.cell.label, value, float(stats["test_mean"]))
