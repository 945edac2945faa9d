"""A grid on many devices of one machine (worker processes) and across machines (shards).

    --shard I/N        this process trains a fixed 1/N of the grid (a Slurm array task)
    --devices a,b      one worker process per device, all sharing the result dir
    --workers N        N worker processes per device (or on the CPU), cores/N threads each

Both build on the result store (atomic records, resume) and on run claims (hamgraph.claims):
every worker runs `execute_specs` on the same specs with claims, so workers take packs
dynamically (a slow pack leaves no device idle) and no run is trained twice to completion.

Shards partition the grid deterministically: the unit is a pack group (all specs that may share
a pack; single specs with `--pack off`/1, packs of N with `--pack N`), units are assigned
largest-first to the least-loaded shard by estimated cost (epochs summed over the runs).
The partition depends only on the grid and `--pack`, so every process that reads the same
grid with the same `--pack` agrees on it, whatever its progress. Processes that disagree
(another `--pack`) still never train a run twice (claims); the shards may then leave runs to
a later `hamgraph run` without `--shard`, which trains exactly what is missing.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hamgraph import preemption
from hamgraph.errors import HamgraphError, UserInputError
from hamgraph.preemption import EXIT_PREEMPTED, Preempted
from hamgraph.runner import PackSize, RunOutcome, outcome_of, plan_packs
from hamgraph.specs import RunSpec
from hamgraph.store import ResultStore

log = logging.getLogger(__name__)

WORKER_LOGS = "logs"  # ROOT/logs/worker-<i>.log
POLL_SECONDS = 1.0  # how often the parent looks at the store for the progress bar


# --- shards ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """"I/N" with 0 <= I < N (the `--shard` option). UserInputError names the bad value."""
    index, sep, count = str(text).strip().partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise UserInputError(f"--shard {text}: expected I/N with whole numbers, e.g. 0/8")
    shard = Shard(int(index), int(count))
    if shard.count < 1:
        raise UserInputError(f"--shard {text}: N must be >= 1")
    if shard.index >= shard.count:
        raise UserInputError(f"--shard {text}: I must be in 0..{shard.count - 1} (I counts from 0)")
    return shard


def shard_units(specs: Sequence[RunSpec], pack: PackSize) -> list[list[RunSpec]]:
    """The units shards are made of: pack groups ("auto"), packs of N (N) or single specs."""
    return plan_packs(specs, pack, lambda _spec: len(specs))  # "auto": a whole group per unit


def _cost(unit: Sequence[RunSpec]) -> int:
    return sum(int(spec.params.epochs) for spec in unit)


def partition(specs: Sequence[RunSpec], count: int, pack: PackSize) -> list[list[RunSpec]]:
    """The specs of each of `count` shards, each in grid order; their union is `specs`.

    Deterministic: units sorted by cost (largest first; ties by grid order), each to the
    shard with the least cost so far (ties: the lowest index).
    """
    units = shard_units(specs, pack)
    order = sorted(range(len(units)), key=lambda i: (-_cost(units[i]), i))
    loads = [0] * count
    shard_of: dict[str, int] = {}
    for i in order:
        target = min(range(count), key=lambda s: (loads[s], s))
        loads[target] += _cost(units[i])
        for spec in units[i]:
            shard_of[spec.key()] = target
    shards: list[list[RunSpec]] = [[] for _ in range(count)]
    for spec in specs:
        shards[shard_of[spec.key()]].append(spec)
    return shards


def shard_specs(specs: Sequence[RunSpec], shard: Shard, pack: PackSize) -> list[RunSpec]:
    """The specs shard `shard` trains (see `partition`)."""
    return partition(specs, shard.count, pack)[shard.index]


# --- worker slots --------------------------------------------------------------------------------


def parse_workers(text: str | int) -> int:
    """N >= 1 (the `--workers` option). UserInputError names the bad value."""
    if isinstance(text, int) or str(text).strip().isdigit():
        value = int(text)
        if value >= 1:
            return value
    raise UserInputError(f"--workers {text}: must be a whole number >= 1")


def worker_devices(device: str, devices: str | None, workers: int) -> list[str]:
    """One device name per worker process: `workers` per device of `devices` (or of `device`).

    Every name is checked (resolve_device); UserInputError names the bad value.
    """
    from hamgraph.train import resolve_device

    if workers < 1:
        raise UserInputError(f"--workers {workers}: must be >= 1")
    if devices is None:
        names = [device]
    else:
        if device != "auto":
            raise UserInputError(f"--devices {devices}: give --devices or --device, not both")
        names = [name.strip() for name in devices.split(",")]
        if not any(names) or not all(names):
            raise UserInputError(
                f"--devices {devices!r}: expected a comma list of devices, e.g. cuda:0,cuda:1"
            )
        for name in names:
            try:
                resolve_device(name)
            except UserInputError as exc:
                raise UserInputError(f"--devices {devices}: {exc}") from None
    return [name for name in names for _ in range(workers)]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


# --- worker processes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerJob:
    """What one worker process trains (pickled to the spawned process)."""

    index: int
    device: str
    threads: int  # torch threads of this worker
    specs: tuple[RunSpec, ...]
    out: str  # the shared result dir
    pack: PackSize
    retrain: tuple[str, ...]
    track: tuple[str, ...]  # tracker names (hamgraph.track)
    group: str  # the tracker group (the grid's name)
    parent: int  # the parent's pid: a worker whose parent died stops
    log_level: int
    deterministic: bool = False  # the parent's `--deterministic` (torch's global switch)


def _watch_parent(parent: int) -> None:
    """Exit when the parent is gone (killed): nobody would collect this worker's work."""

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, name="hamgraph-parent-watch", daemon=True).start()


def _log_to_file(job: WorkerJob) -> None:
    """INFO and up to ROOT/logs/worker-<i>.log; warnings and errors also to stderr."""
    folder = Path(job.out) / WORKER_LOGS
    folder.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(job.log_level)
    to_file = logging.FileHandler(folder / f"worker-{job.index}.log", encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)
    to_stderr.setFormatter(logging.Formatter(f"worker {job.index}: %(message)s"))
    root.addHandler(to_file)
    root.addHandler(to_stderr)


def work(job: WorkerJob) -> None:
    """One worker: train the job's specs on its device, taking packs nobody else claimed."""
    import torch

    from hamgraph.claims import Claims
    from hamgraph.data.paths import data_paths_from_env
    from hamgraph.runner import execute_specs
    from hamgraph.store import ResultStore
    from hamgraph.track import Tracking
    from hamgraph.train import resolve_device, use_deterministic_algorithms

    torch.set_num_threads(job.threads)
    if job.deterministic:
        use_deterministic_algorithms(True)
    store = ResultStore(Path(job.out))
    log.info("worker %d: %s, %d threads, pid %d", job.index, job.device, job.threads, os.getpid())
    execute_specs(
        job.specs, store, data_paths_from_env(), resolve_device(job.device), pack=job.pack,
        retrain=job.retrain, claims=Claims(store.root), progress=False,
        tracking=Tracking(job.track, log_dir=store.root, group=job.group),
    )


def _worker_main(job: WorkerJob) -> None:
    """Entry point of a spawned worker. Exit code 2: bad input, 1: other hamgraph errors,
    EXIT_PREEMPTED: stopped by SIGTERM / SIGUSR1 (from the parent) after checkpointing."""
    _log_to_file(job)
    _watch_parent(job.parent)
    try:
        with preemption.handle_signals():
            work(job)
    except Preempted:
        log.warning("worker %d: stopped on request after checkpointing", job.index)
        raise SystemExit(EXIT_PREEMPTED) from None
    except UserInputError as exc:
        log.error("hamgraph: error: %s", exc)
        raise SystemExit(2) from None
    except HamgraphError as exc:
        log.error("hamgraph: error: %s", exc)
        raise SystemExit(1) from None


def _follow(procs: list, store: ResultStore, keys: set[str], seen: set[str]) -> None:
    """Show progress (records of `keys` in the store) and log each finished run until every
    worker has exited."""
    from hamgraph.runner import log_result

    with logging_redirect_tqdm(), tqdm(total=len(keys), initial=len(seen), unit="run",
                                       disable=None) as bar:
        while True:
            running = any(proc.is_alive() for proc in procs)
            new = (store.finished_keys() & keys) - seen
            for key in sorted(new):
                try:
                    log_result(store.load(key))
                except (OSError, ValueError):  # replaced meanwhile: counted anyway
                    pass
            seen |= new
            bar.update(len(new))
            if not running:
                break
            time.sleep(POLL_SECONDS)
    for proc in procs:
        proc.join()


def run_workers(
    specs: Sequence[RunSpec],
    out: Path,
    devices: Sequence[str],
    *,
    pack: PackSize,
    retrain: Sequence[str] = (),
    track: Sequence[str] = (),
    group: str = "",
) -> list[str]:
    """Train `specs` into the store at `out` with one worker process per entry of `devices`.

    The parent shows one progress bar (finished records of `specs` in the store) and logs each
    finished run. Returns one line per worker that did not exit cleanly (empty: all did);
    UserInputError if a worker exited with 2. Ctrl-C stops the workers and propagates.
    SIGTERM / SIGUSR1 are forwarded to the workers (they checkpoint and exit); once all have
    exited, Preempted is raised (also when a worker alone was stopped that way).
    """
    import torch

    store = ResultStore(out)
    keys = {spec.key() for spec in specs}
    threads = max(1, _cores() // len(devices))
    level = logging.getLogger("hamgraph").getEffectiveLevel()
    jobs = [
        WorkerJob(i, device, threads, tuple(specs), str(out), pack, tuple(retrain), tuple(track),
                  group, os.getpid(), level, torch.are_deterministic_algorithms_enabled())
        for i, device in enumerate(devices)
    ]
    log.info("%d workers (%s), %d threads each; logs in %s", len(jobs), ", ".join(devices),
             threads, out / WORKER_LOGS)
    ctx = multiprocessing.get_context("spawn")  # torch + fork is unsafe
    procs = [ctx.Process(target=_worker_main, args=(job,), name=f"hamgraph-worker-{job.index}")
             for job in jobs]
    seen = store.finished_keys() & keys
    for proc in procs:
        proc.start()
    try:
        with preemption.forward_to([proc.pid for proc in procs if proc.pid is not None]):
            _follow(procs, store, keys, seen)
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join()
        raise
    codes = [proc.exitcode for proc in procs]
    if preemption.stop_requested() or EXIT_PREEMPTED in codes:
        raise Preempted
    errors = [f"worker {i} ({devices[i]}) exited with code {code}"
              for i, code in enumerate(codes) if code != 0]
    if any(code == 2 for code in codes):
        raise UserInputError(f"{'; '.join(errors)} (see {out / WORKER_LOGS})")
    return errors


def execute_on_workers(
    specs: Sequence[RunSpec],
    store: ResultStore,
    devices: Sequence[str],
    *,
    pack: PackSize,
    retrain: Sequence[str] = (),
    track: Sequence[str] = (),
    group: str = "",
) -> list[RunOutcome]:
    """`execute_specs` with one worker process per entry of `devices`: one outcome per spec.

    Outcomes come from the store once every worker is done. A spec without a record that a
    live process outside this command holds (hamgraph.claims) is "busy", as in a single
    process; any other is an "error" outcome that names the workers that failed (their logs
    say why; a rerun trains it).
    """
    from hamgraph.claims import Claims

    before = store.finished_keys()
    errors = run_workers(specs, store.root, devices, pack=pack, retrain=retrain, track=track,
                         group=group)
    for line in errors:
        log.error("%s", line)
    finished = store.finished_keys()
    busy = Claims(store.root).busy([spec.key() for spec in specs if spec.key() not in finished])
    why = "; ".join(errors) if errors else "a worker could not train it"
    outcomes = []
    for spec in specs:
        key = spec.key()
        result = store.read(key) if key in finished else None  # None: damaged, set aside
        if result is not None:
            trained = key not in before or key in retrain
            outcomes.append(outcome_of(result, trained=trained))
        elif key in busy:
            owner = busy[key]
            who = owner.label() if owner is not None else "another process"
            outcomes.append(RunOutcome(spec, "busy", None,
                                       f"being trained by {who}; rerun for its result"))
        else:
            outcomes.append(RunOutcome(
                spec, "error", None,
                f"not trained: {why} (see {store.root / WORKER_LOGS}); rerun to finish",
            ))
    return outcomes
