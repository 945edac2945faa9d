"""Run specs: train the unfinished ones (in packs where they share a model), store each result.

    [RunSpec] ──► group into packs ──► train (single or packed) ──► ResultStore ──► [RunOutcome]

A pack is M node runs that share dataset, model and params (and the base optimizer); the
packed trainer turns them into M RunResults, each exactly what its single run would have
stored (hamgraph.train.packed). Packing is an execution detail: keys, records and reports do
not know it happened. Graph runs always train one at a time.

Every result is stored the moment it is final (a pack stores a diverged run when it is noticed,
the others when the pack ends), so a crash or `kill -9` loses at most the runs in training,
and of those only the epochs since their last checkpoint: node runs and packs checkpoint every
few minutes (hamgraph.train.checkpoint) into the store's `checkpoints/`, and the next call
continues them. A pack is found again from its runs: a pack checkpoint whose runs are all
still to train (or already recorded) is planned as that pack again, whatever `--pack` sizes
now (except `--pack off`); its recorded runs train along but are not stored again. A pack
checkpoint of other members is ignored, and removed once a pack that shares a run with it
finishes (or all its runs are recorded). A checkpoint is removed once its run(s) are recorded.

A stop request (SIGTERM / SIGUSR1, hamgraph.preemption) makes the run or pack in training
checkpoint at its next epoch boundary and raise Preempted, which propagates like
KeyboardInterrupt (finished results are kept; no new pack starts).
A pack that runs out of device memory is split in two and retried, down to single runs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from hamgraph import preemption, provenance
from hamgraph.claims import NO_CLAIMS, Claims, Owner
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import spec_dataset
from hamgraph.errors import DatasetUnavailableError, UserInputError
from hamgraph.specs import EpochStats, RunResult, RunSpec
from hamgraph.store import CHECKPOINTS_DIR, PACK_PREFIX, ResultStore, plugin_sources
from hamgraph.track import Tracking

log = logging.getLogger(__name__)

OutcomeKind = Literal["ok", "diverged", "unavailable", "error", "busy"]
PackSize = Literal["auto", "off"] | int
MAX_AUTO_PACK = 128  # auto never packs more runs than this (diminishing returns past it)


@dataclass(frozen=True)
class RunOutcome:
    """What became of one spec.

    ok / diverged: `result` is its stored RunResult (trained now or loaded from the store).
    unavailable (the dataset cannot be had) / error (anything else raised): nothing was stored,
    a later call retries it; `message` says why.
    busy: another live process holds its claim (hamgraph.claims); not trained here.
    """

    spec: RunSpec
    kind: OutcomeKind
    result: RunResult | None = None
    message: str = ""
    trained: bool = False  # trained by this call (not loaded from the store)

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def parse_pack(value: str | int) -> PackSize:
    """"auto" | "off" | N >= 1 (the `--pack` option). UserInputError names the bad value."""
    if isinstance(value, int) or str(value).isdigit():
        size = int(value)
        if size < 1:
            raise UserInputError(f"--pack must be auto, off or a number >= 1, got {value!r}")
        return size
    if value in ("auto", "off"):
        return value  # type: ignore[return-value]
    raise UserInputError(f"--pack must be auto, off or a number >= 1, got {value!r}")


def outcome_of(result: RunResult, trained: bool) -> RunOutcome:
    kind: OutcomeKind = "ok" if result.ok else "diverged"
    return RunOutcome(result.spec, kind, result, result.reason, trained)


def _from_another_version(version: str) -> bool:
    from hamgraph import __version__

    return version != __version__


def stale_keys(
    store: ResultStore, keys: Sequence[str], sources: Mapping[str, str] | None = None
) -> list[str]:
    """Finished runs among `keys` whose record came from another hamgraph version, or (runs of
    plug-ins, `sources`: key -> `store.plugin_sources(spec)`) from another source of their
    plug-ins' code; in order.

    Read from runs.csv's hamgraph_version and plugin_sources columns (one file), not from
    every record.
    """
    frame = store.frame()
    versions = dict(zip(frame["key"], frame["hamgraph_version"], strict=True))
    recorded = dict(zip(frame["key"], frame["plugin_sources"], strict=True))
    sources = sources or {}
    return [
        key for key in keys
        if key in versions and (
            _from_another_version(versions[key])
            or (key in sources and sources[key] != recorded[key])
        )
    ]


def spec_sources(specs: Sequence[RunSpec]) -> dict[str, str]:
    """key -> the source hashes of its plug-ins (for `stale_keys`), for runs of plug-ins."""
    return {spec.key(): plugin_sources(spec) for spec in specs if spec.plugins}


# --- packs -------------------------------------------------------------------------------------


def _signature(spec: RunSpec) -> object | None:
    """Specs with equal signatures may share a pack; None: this spec trains alone (graph runs,
    and runs of a user's model, dataset or metric: the packed trainer knows only built-ins)."""
    if spec.plugins:
        return None
    if spec_dataset(spec).task != "node":
        return None
    from hamgraph.train.packed import pack_signature

    return pack_signature(spec)


def plan_packs(
    specs: Sequence[RunSpec], pack: PackSize, size_for: Callable[[RunSpec], int]
) -> list[list[RunSpec]]:
    """Group specs into packs, keeping the order of first appearance.

    `pack`: "off" = every spec alone; N = at most N per pack; "auto" = at most
    `size_for(first spec of the group)` per pack (from memory; see `auto_pack_size`).
    """
    if pack == "off":
        return [[spec] for spec in specs]
    groups: dict[object, list[RunSpec]] = {}
    alone: list[list[RunSpec]] = []
    order: list[object] = []
    for spec in specs:
        signature = _signature(spec)
        if signature is None:
            alone.append([spec])
            order.append(("alone", len(alone) - 1))
            continue
        if signature not in groups:
            groups[signature] = []
            order.append(signature)
        groups[signature].append(spec)
    packs: list[list[RunSpec]] = []
    for item in order:
        if isinstance(item, tuple) and len(item) == 2 and item[0] == "alone":
            packs.append(alone[item[1]])
            continue
        group = groups[item]
        size = pack if isinstance(pack, int) else max(1, size_for(group[0]))
        packs.extend(group[i : i + size] for i in range(0, len(group), size))
    return packs


def auto_pack_size(spec: RunSpec, paths: DataPaths, device: torch.device) -> int:
    """How many runs like `spec` to pack: measured per-run footprint vs free memory.

    Uses half of the free memory (the rest is headroom for the allocator and evaluation),
    capped at MAX_AUTO_PACK. On the CPU also capped by `cpu_pack_limit`: there a pack only
    pays while its activations stay in cache.
    """
    from hamgraph.train.packed import pack_footprint

    info = spec_dataset(spec)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        limit = MAX_AUTO_PACK
    else:
        free = _available_ram()
        limit = min(MAX_AUTO_PACK, cpu_pack_limit(spec, paths))
        if limit == 1:
            return 1
    per_run = max(1, pack_footprint(spec, info, paths, device))
    return int(max(1, min(limit, (free // 2) // per_run)))


# On the CPU only runs whose one-layer activations are this small pack together.
CPU_PACK_BYTES = 2 * 2**20


def cpu_pack_limit(spec: RunSpec, paths: DataPaths) -> int:
    """The widest CPU pack that is not slower than single runs.

    On a CPU the protocol presets are compute- and memory-bound, not overhead-bound: measured
    end to end, 10 minesweeper GCN runs took 49.6 s packed against 43.3 s one by one, and
    wider presets lose more (benchmarks/packed.py: cora GCN 512 wide at M = 25, 0.36-0.81x),
    because a pack's [M, nodes, hidden] activations leave the cache. So M x nodes x hidden x 4
    bytes stays within CPU_PACK_BYTES: every preset trains one run at a time on a CPU, and only
    small graphs (overhead-bound, e.g. the synthetic CSBM ones) pack.
    """
    from hamgraph.train.node import load_node_data

    data = load_node_data(spec_dataset(spec), paths)
    hidden = getattr(spec.params, "hidden", 1)
    return max(1, CPU_PACK_BYTES // (data.num_nodes * hidden * 4))


def _footprint_key(spec: RunSpec) -> tuple[object, ...]:
    """What a run's memory footprint (and so its pack sizes) depends on."""
    return (spec.dataset, spec.model, spec.params)


def _warn_slow_cpu_packs(packs: list[list[RunSpec]], paths: DataPaths) -> None:
    """`--pack N` on a CPU: say once per group when its packs exceed `cpu_pack_limit`
    (slower than single runs there; a user asked for them, so they still train packed)."""
    warned: set[object] = set()
    for members in packs:
        first = members[0]
        shape = _footprint_key(first)
        if len(members) < 2 or shape in warned:
            continue
        warned.add(shape)
        try:
            limit = cpu_pack_limit(first, paths)
        except DatasetUnavailableError:
            continue  # reported when its runs train
        if len(members) > limit:
            log.warning(
                "%s/%s: packs of %d runs are slower than single runs on a CPU (their activations "
                "leave the cache above %d); --pack auto packs only where it pays",
                first.dataset, first.model, len(members), limit,
            )  # fmt: skip


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30  # unknown: assume a modest machine


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# --- training ----------------------------------------------------------------------------------


def _failed(spec: RunSpec, kind: OutcomeKind, message: str) -> RunOutcome:
    return RunOutcome(spec, kind, None, message)


# --- pack checkpoints ------------------------------------------------------------------------


@dataclass(frozen=True)
class PackCheckpoint:
    """A pack checkpoint in the store: its directory, key and run keys (in pack order)."""

    directory: Path
    key: str
    members: tuple[str, ...]


def pack_checkpoints(store: ResultStore) -> list[PackCheckpoint]:
    """Every readable pack checkpoint of the store (`checkpoints/pack-*/`)."""
    from hamgraph.train.checkpoint import pack_members

    found = []
    for directory in sorted((store.root / CHECKPOINTS_DIR).glob(f"{PACK_PREFIX}*")):
        read = pack_members(directory)
        if read is not None:
            found.append(PackCheckpoint(directory, read[0], tuple(read[1])))
    return found


def _resumable(
    checkpoint: PackCheckpoint, todo: set[str], recorded: Callable[[str], bool]
) -> bool:
    """Whether `checkpoint` continues the runs `todo`: they are all its members, and every
    other member is recorded (it diverged in the pack, or finished elsewhere)."""
    members = set(checkpoint.members)
    return todo <= members and all(recorded(k) for k in members - todo)


def _resumed_first(
    specs: list[RunSpec], store: ResultStore, finished: set[str]
) -> tuple[list[list[RunSpec]], list[RunSpec]]:
    """(packs to continue from their checkpoints, the other specs): the runs of a pack
    checkpoint whose other members are all recorded form that pack again."""
    left = {spec.key(): spec for spec in specs}
    packs = []
    for checkpoint in pack_checkpoints(store):
        mine = [k for k in checkpoint.members if k in left]
        if mine and _resumable(checkpoint, set(mine), finished.__contains__):
            packs.append([left.pop(k) for k in mine])
    return packs, list(left.values())


def _discard_dead_pack_checkpoints(store: ResultStore, trained: set[str]) -> None:
    """After a pack of the runs `trained` finished: remove the pack checkpoints of other
    members that share one of them (ignored, superseded) or whose runs are all recorded."""
    from hamgraph.train.checkpoint import remove_checkpoint

    for checkpoint in pack_checkpoints(store):
        members = set(checkpoint.members)
        if members & trained or all(store.record_path(k).exists() for k in members):
            remove_checkpoint(checkpoint.directory)
    with contextlib.suppress(OSError):
        (store.root / CHECKPOINTS_DIR).rmdir()


def _pack_checkpointer(pack: list[RunSpec], store: ResultStore) -> tuple[list[RunSpec], object]:
    """(the specs to train, their Checkpointer) of a node pack: a stored checkpoint that
    continues exactly these runs (its other members recorded: they are trained along, from
    their recorded specs), else a new one keyed by these runs."""
    from hamgraph.train.checkpoint import Checkpointer

    keys = {spec.key() for spec in pack}
    for checkpoint in pack_checkpoints(store):
        if _resumable(checkpoint, keys, lambda k: store.record_path(k).exists()):
            by_key = {spec.key(): spec for spec in pack}
            try:
                specs = [by_key[k] if k in by_key else store.load(k).spec
                         for k in checkpoint.members]
            except Exception as exc:  # an unreadable record: train these runs afresh
                log.warning("not continuing %s: %s: %s", checkpoint.directory,
                            type(exc).__name__, exc)
                continue
            if [s.key() for s in specs] == list(checkpoint.members):  # else: a changed record
                return specs, Checkpointer(
                    checkpoint.directory, checkpoint.key, members=checkpoint.members,
                    set_aside=store.set_aside,
                )
    directory = store.pack_checkpoint_dir(keys)
    members = [spec.key() for spec in pack]
    return pack, Checkpointer(directory, directory.name, members=members,
                              set_aside=store.set_aside)


def _train_pack(
    pack: list[RunSpec],
    paths: DataPaths,
    device: torch.device,
    store: ResultStore,
    stored: Callable[[RunResult], None],
    tracking: Tracking,
) -> None:
    """Train one pack (or a single run); store every result as it becomes final.

    Raises what the trainer raises; an out-of-memory pack is split and retried here.
    Trackers get each run's history rows as the trainer copies them to the host.
    """
    from hamgraph import train
    from hamgraph.train.checkpoint import remove_checkpoint

    started = datetime.now(timezone.utc)
    trackers = {
        spec.key(): tracking.start_run(
            spec,
            {
                "spec": spec.to_dict(),
                "cell": f"{spec.dataset} {spec.model} {spec.optimizer_label}",  # the trial's cell
                "provenance": provenance.collect(device, started),
            },
        )
        for spec in pack
    }

    def keep(result: RunResult) -> None:
        # pack_size: a pack's runs share one clock (train_seconds is the pack's time / M), so
        # the report compares training times only of runs timed alone
        result.provenance = {**provenance.collect(device, started), "pack_size": str(len(specs))}
        store.add(result)
        remove_checkpoint(store.root / CHECKPOINTS_DIR / result.spec.key())  # a single run's
        with contextlib.suppress(OSError):
            (store.root / CHECKPOINTS_DIR).rmdir()  # if that was the last checkpoint
        trackers[result.spec.key()].finish(result)
        stored(result)

    def abandon_unfinished(done: set[str]) -> None:
        for spec in pack:
            if spec.key() not in done:
                trackers[spec.key()].abandon()

    node = spec_dataset(pack[0]).task == "node"
    specs, checkpointer = _pack_checkpointer(pack, store) if node else (pack, None)
    if len(specs) == 1:  # the single-run trainers
        spec = pack[0]
        try:
            result = train.execute(
                spec, paths, device, checkpoint_dir=store.checkpoint_dir(spec),
                on_epochs=trackers[spec.key()].log_epochs,
            )
        except BaseException:
            abandon_unfinished(set())
            raise
        finally:  # a run that raised keeps a non-empty checkpoint dir (graph runs resume)
            store.discard_empty_checkpoint_dir(spec.key())
        keep(result)
        return
    from hamgraph.train.packed import train_node_pack

    info = spec_dataset(pack[0])
    done: set[str] = set()

    def keep_once(result: RunResult) -> None:
        if result.spec.key() not in trackers:  # recorded before: trained along, not stored
            return
        done.add(result.spec.key())
        keep(result)

    def log_epochs(index: int, rows: list[EpochStats]) -> None:
        tracker = trackers.get(specs[index].key())
        if tracker is not None:
            tracker.log_epochs(rows)

    try:
        train_node_pack(specs, info, paths, device, on_result=keep_once, on_epochs=log_epochs,
                        checkpointer=checkpointer)  # type: ignore[arg-type]
        checkpointer.clear()  # type: ignore[union-attr]
        _discard_dead_pack_checkpoints(store, {spec.key() for spec in specs})
        return
    except BaseException as exc:
        abandon_unfinished(done)
        if not _is_out_of_memory(exc):
            raise
    # Retried only here, after the except block: its traceback held the failed pack's frames
    # (model, optimizer state, activations), which would stay allocated during the retries.
    rest = [spec for spec in pack if spec.key() not in done]
    half = (len(rest) + 1) // 2
    log.warning("out of memory with %d runs in a pack; retrying as %d + %d",
                len(rest), half, len(rest) - half)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for part in (rest[:half], rest[half:]):
        if part:
            _train_pack(part, paths, device, store, stored, tracking)


def execute_specs(
    specs: Sequence[RunSpec],
    store: ResultStore,
    paths: DataPaths,
    device: torch.device,
    *,
    pack: PackSize = "auto",
    retrain: Sequence[str] = (),
    claims: Claims = NO_CLAIMS,
    progress: bool = True,
    tracking: Tracking | None = None,
) -> list[RunOutcome]:
    """Train the specs that have no record in `store` yet; one RunOutcome per spec, in order.

    Finished specs (ok or diverged) are loaded from the store, not trained again, except the
    keys in `retrain` (e.g. stale ones). A diverged run is stored as failed. A run that raises
    (dataset unavailable, an error) is logged and NOT stored, so the next call retries it;
    after a DatasetUnavailableError the remaining runs of that dataset are skipped.
    KeyboardInterrupt propagates (finished results are kept). `tracking`: the experiment
    trackers every trained run reports to (none by default).

    Several processes may run this on one store at once: nothing is lost. With `claims`
    (hamgraph.claims) each pack's members are claimed before training and looked up in the
    store again, so no run is trained twice to completion; a run another live process holds
    comes back "busy" (tried again after the last pack, in case its owner died). Without
    claims (NO_CLAIMS: sweep trials) a spec that two processes start at once is trained twice
    (the last record wins). `progress`: False hides the progress bar (worker processes).
    """
    finished = store.finished_keys() - set(retrain)
    keys = [spec.key() for spec in specs]  # hashes every setting: computed once per spec
    unique = dict(zip(keys, specs, strict=True))
    outcomes: dict[str, RunOutcome] = {}
    for key in unique:
        # a damaged record reads as None (the store set it aside): trained again
        if key in finished and (result := store.read(key)) is not None:
            outcomes[key] = outcome_of(result, trained=False)
            if not outcomes[key].ok:
                log.info("kept failed run %s (delete records/%s.json or use --fresh to retry)",
                         key, key)
    todo = [spec for key, spec in unique.items() if key not in outcomes]
    if len(unique) > len(todo):
        log.info("resuming: %d of %d runs already finished", len(unique) - len(todo), len(unique))

    sizes: dict[object, int] = {}

    def size_for(spec: RunSpec) -> int:
        shape = _footprint_key(spec)
        if shape not in sizes:
            try:
                sizes[shape] = auto_pack_size(spec, paths, device)
            except Exception as exc:  # e.g. the dataset is unavailable: its runs train (and
                # fail, reported per run) one at a time instead of aborting the whole command
                log.debug("pack size for %s: %s: %s", spec.dataset, type(exc).__name__, exc)
                sizes[shape] = 1
        return sizes[shape]

    resumed, fresh = _resumed_first(todo, store, finished) if pack != "off" else ([], todo)
    planned = resumed + plan_packs(fresh, pack, size_for)
    alone = sum(1 for spec in todo if spec.plugins)
    if alone and pack != "off":
        log.info("%d run(s) of user plug-ins train one at a time (packing is for built-in "
                 "models, datasets and metrics)", alone)
    if isinstance(pack, int) and device.type == "cpu":
        _warn_slow_cpu_packs(planned, paths)
    unavailable: dict[str, str] = {}
    bar = tqdm(total=len(todo), unit="run", disable=None if progress else True)

    def settle(outcome: RunOutcome) -> None:  # not trained here (see _claimed_packs)
        outcomes[outcome.spec.key()] = outcome
        bar.update(1)

    with (
        logging_redirect_tqdm() if progress else contextlib.nullcontext(),
        bar,
        contextlib.closing(_claimed_packs(
            planned, lambda rest: plan_packs(rest, pack, size_for),
            claims, store, set(retrain), settle,
        )) as packs,
    ):
        for members in packs:
            preemption.check()  # a stop request: no new pack starts
            first = members[0]
            label = _pack_label(members)
            bar.set_description(label)
            if first.dataset in unavailable:
                for spec in members:
                    outcomes[spec.key()] = _failed(spec, "unavailable", unavailable[first.dataset])
                bar.update(len(members))
                continue

            def stored(result: RunResult) -> None:
                outcome = outcome_of(result, trained=True)
                outcomes[result.spec.key()] = outcome
                log_result(result)
                bar.update(1)

            start = time.perf_counter()
            try:
                _train_pack(list(members), paths, device, store, stored, tracking or Tracking())
            except DatasetUnavailableError as exc:
                unavailable[first.dataset] = f"dataset unavailable: {exc}"
                log.error("%s: %s (its remaining runs are skipped)", label, exc)
            except Exception as exc:  # not a result: logged, retried by the next call
                log.error("%s: error: %s: %s", label, type(exc).__name__, exc)
                log.debug("traceback", exc_info=True)
                message = f"error: {type(exc).__name__}: {exc}"
                for spec in members:
                    outcomes.setdefault(spec.key(), _failed(spec, "error", message))
            for spec in members:
                if spec.key() not in outcomes:
                    outcomes[spec.key()] = _failed(spec, "unavailable", unavailable[spec.dataset])
                    bar.update(1)
            log.debug("%s: %.1f s", label, time.perf_counter() - start)
    return [outcomes[key] for key in keys]


def _stored_result(store: ResultStore, spec: RunSpec, retrain: set[str]) -> RunResult | None:
    """The stored result of `spec`; None when it needs training: no record (or a damaged one,
    set aside by the store), or (a key to retrain) a record from another version or from
    other plug-in sources, as in stale_keys (the record itself: another process may have
    stored the run since runs.csv was read)."""
    key = spec.key()
    result = store.read(key)
    if result is None or key not in retrain:
        return result
    if spec.plugins and plugin_sources(result.spec) != plugin_sources(spec):
        return None
    return None if _from_another_version(result.provenance.get("hamgraph_version", "")) else result


def _claimed_packs(
    packs: list[list[RunSpec]],
    replan: Callable[[list[RunSpec]], list[list[RunSpec]]],
    claims: Claims,
    store: ResultStore,
    retrain: set[str],
    settled: Callable[[RunOutcome], None],
) -> Iterator[list[RunSpec]]:
    """Each pack's members that this process claimed and that still need training.

    The claims are held until the caller asks for the next pack (or closes the generator).
    Members another process stored meanwhile are `settled` from the store; members a live
    process holds are tried again after the last pack (replanned; their owner may have died
    since) and, if still held, settled as "busy".
    """
    left: list[RunSpec] = []  # held by live processes at the last look
    busy: dict[str, Owner | None] = {}
    while packs:
        waiting = list(left)
        for members in packs:
            with claims.hold([spec.key() for spec in members]) as held:
                mine = []
                for spec in members:
                    key = spec.key()
                    if key not in held:
                        waiting.append(spec)
                    elif (result := _stored_result(store, spec, retrain)) is None:
                        mine.append(spec)
                    else:  # stored by another process since we looked
                        settled(outcome_of(result, trained=False))
                if mine:
                    yield mine
        busy = claims.busy([spec.key() for spec in waiting])
        left = [spec for spec in waiting if spec.key() in busy]
        packs = replan([spec for spec in waiting if spec.key() not in busy])
    for spec in left:
        key = spec.key()
        result = store.read(key)
        if result is not None:
            settled(outcome_of(result, trained=False))
            continue
        owner = busy.get(key)
        who = owner.label() if owner is not None else "another process"
        settled(RunOutcome(spec, "busy", None, f"being trained by {who}; rerun for its result"))


def _pack_label(members: Sequence[RunSpec]) -> str:
    first = members[0]
    if len(members) == 1:
        return f"{first.dataset} {first.model} {first.optimizer_label} run {first.run}"
    return f"{first.dataset} {first.model} pack of {len(members)}"


def log_result(result: RunResult) -> None:
    """One log line for a finished run: its val and test, or why it failed."""
    spec = result.spec
    label = f"{spec.dataset} {spec.model} {spec.optimizer_label} run {spec.run}"
    if result.ok:
        log.info("%s: val %.2f test %.2f (%.1f s)", label, 100 * result.val, 100 * result.test,
                 result.seconds)
    else:
        log.warning("%s: failed: %s", label, result.reason)
