"""Run claims: several processes share one result dir and never train a run twice to completion.

    ROOT/claims/<run key>.<generation>.json     one file per run in training

Before a process trains a pack it claims each member run: it creates the claim file with
O_CREAT | O_EXCL, which succeeds for exactly one process (atomic on POSIX file systems and
NFSv3+). It then looks at the store again and trains only the claimed runs that still have no
record (another process may have stored them since it last looked), stores their results,
and only then deletes the claims. So a run is trained by whoever holds its claim, and a
record, once written, is final: no run is trained twice to completion.

Claims are per run, not per pack, so processes that pack differently (auto pack sizes from
free memory differ between devices) still never overlap; a pack trains the members it got.

A claim whose owner died is taken over: its owner is on this host and its pid is gone (or now
names another process: the claim records the owner's start time from /proc, so a pid reused
after a restart, even this process's own, does not keep a dead owner's claim), or its
heartbeat (the file's mtime, touched every HEARTBEAT_SECONDS while held) is older than the
grace period (owners on other hosts: a killed Slurm node). Taking over creates generation g+1
of the claim with O_EXCL, so when several processes find the same dead claim exactly one
wins; the winner deletes the older generations. Whoever creates a generation lists the claims
again and backs off (deletes its file) if a newer one exists: it worked from a listing made
before a takeover (e.g. created generation 0 after the dead owner's generation 0 was taken
over as 1 and deleted). A claim file that cannot be parsed (its owner died between creating
and writing it) is judged by its mtime alone.

Compare before delete: a process deletes another's claim file (a takeover's older generations,
`prune`) only if it is still the very file it judged stale (same inode and same content). A
file that was deleted and made again meanwhile (another process took the claim over, trained,
released, and a third claimed the run afresh as generation 0) is a live claim: a takeover that
finds such a live older generation backs off instead of deleting it. The steps of a takeover
are methods (`_look`, `_take`) so that a test can interleave processes between them.

Known limits: a live owner whose heartbeat thread cannot run for the grace period (or whose
clock differs from the other hosts' by more than it) looks dead and its runs may be trained
twice; the later record replaces the earlier (training is deterministic on one device).
`NO_CLAIMS` is the null object: every claim granted, nothing written (a single process that
shares its store with nobody, e.g. a sweep trial).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from hamgraph.atomic import host_tag, owner_alive, process_start

log = logging.getLogger(__name__)

CLAIMS_DIR = "claims"
HEARTBEAT_SECONDS = 60.0  # a held claim's mtime is touched this often
GRACE_SECONDS = 300.0  # a claim not touched for this long belongs to a dead process


@dataclass(frozen=True)
class Owner:
    """Who holds a claim (as written in the claim file)."""

    host: str
    pid: int
    started: str  # ISO time the claim was made
    start: str = ""  # the owner's process start time (process_start); "" in old claim files

    def label(self) -> str:
        return f"{self.host} pid {self.pid}"


@dataclass(frozen=True)
class _Look:
    """What a claim attempt saw: the generation to create and the stale file it replaces."""

    gen: int
    judged: Path | None  # the newest generation, judged stale (None: there was none)
    seen: tuple[int, int, bytes] | None  # its identity when judged (_identity)


def _identity(path: Path) -> tuple[int, int, bytes] | None:
    """(inode, device, content) of a claim file; None if it is gone."""
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            return stat.st_ino, stat.st_dev, handle.read()
    except FileNotFoundError:
        return None


def _delete_if_same(path: Path, seen: tuple[int, int, bytes]) -> bool:
    """Delete `path` only if it is still the file seen (compare before delete). -> deleted.

    Known limit: POSIX has no atomic compare-and-unlink; the window left is between this
    comparison and the unlink (microseconds), in which the file would have to be deleted
    and made again by two other processes."""
    if _identity(path) != seen:
        return False
    path.unlink(missing_ok=True)
    return True


def _owner_of(seen: tuple[int, int, bytes] | None) -> Owner | None:
    try:
        data = json.loads(seen[2]) if seen is not None else None
        return None if data is None else Owner(str(data["host"]), int(data["pid"]),
                                               str(data.get("started", "")),
                                               str(data.get("start", "")))
    except (ValueError, KeyError, TypeError):
        return None


def parse_claim_name(name: str) -> tuple[str, int] | None:
    """`<key>.<generation>.json` -> (key, generation); None for other files."""
    if not name.endswith(".json") or name.startswith("."):
        return None
    stem, _, gen = name[: -len(".json")].rpartition(".")
    return (stem, int(gen)) if stem and gen.isdigit() else None


class Claims:
    """The claims of one result dir: `Claims(store.root)`.

    `hold(keys)` claims what it can and releases on exit; `busy(keys)` reports live claims
    of other processes. Thread-safe within a process; made for many processes on many hosts.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        grace: float = GRACE_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        if grace <= heartbeat:
            raise ValueError(f"grace ({grace}) must be longer than the heartbeat ({heartbeat})")
        self.dir = Path(root) / CLAIMS_DIR
        self.grace = grace
        self.heartbeat = heartbeat
        self._held: dict[str, Path] = {}
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None

    # --- reading ---
    def _current(self) -> dict[str, tuple[int, Path]]:
        """The newest generation of every claim file: key -> (generation, path)."""
        current: dict[str, tuple[int, Path]] = {}
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return current
        for name in names:
            parsed = parse_claim_name(name)
            if parsed is not None:
                key, gen = parsed
                if key not in current or gen > current[key][0]:
                    current[key] = (gen, self.dir / name)
        return current

    def owner(self, path: Path) -> Owner | None:
        """The owner written in a claim file; None if missing or unreadable (half-written)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Owner(str(data["host"]), int(data["pid"]), str(data.get("started", "")),
                         str(data.get("start", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _holds(self, path: Path) -> bool:
        with self._lock:
            return path in self._held.values()

    def is_stale(self, path: Path) -> bool:
        """Whether the claim's owner is gone: a dead (or reused) pid on this host, or no heartbeat.

        Only the claims this object holds are ours; a claim naming this process's pid that we
        do not hold (left by a dead process whose pid we got) is judged like any other.
        """
        if self._holds(path):
            return False
        try:
            age = time.time() - path.stat().st_mtime
        except FileNotFoundError:
            return True  # released meanwhile
        owner = self.owner(path)
        if (owner is not None and owner.host == host_tag()
                and not owner_alive(owner.pid, owner.start)):
            return True
        return age > self.grace

    def busy(self, keys: Iterable[str]) -> dict[str, Owner | None]:
        """The keys among `keys` claimed by a live owner other than this process."""
        current = self._current()
        busy: dict[str, Owner | None] = {}
        for key in keys:
            if key in current and key not in self._held:
                path = current[key][1]
                if not self.is_stale(path):
                    busy[key] = self.owner(path)
        return busy

    def prune(self) -> int:
        """Delete the claims of dead owners (e.g. one killed after storing, before releasing).

        Safe while others claim: a stale file never becomes live again, and a file is deleted
        only if it is still the one judged stale (compare before delete). -> count removed.
        """
        return sum(self.remove_if_stale(path) for _gen, path in self._current().values())

    def remove_if_stale(self, path: Path) -> bool:
        """Delete one claim file if its owner is gone, and only if it is still the file judged
        (compare before delete). -> deleted."""
        seen = _identity(path)
        return seen is not None and self.is_stale(path) and _delete_if_same(path, seen)

    # --- claiming ---
    def _create(self, key: str, gen: int) -> Path | None:
        path = self.dir / f"{key}.{gen}.json"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        owner = {
            "host": host_tag(),
            "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "start": process_start(os.getpid()),
            "key": key,
        }
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(owner) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return path

    def try_claim(self, key: str) -> bool:
        """Claim one run; False if a live process holds it. A dead owner's claim is taken over."""
        with self._lock:
            if key in self._held:
                return True
        self.dir.mkdir(parents=True, exist_ok=True)
        look = self._look(key)
        return look is not None and self._take(key, look)

    def _look(self, key: str) -> _Look | None:
        """Step 1 of a claim: the generation to create; None when a live process holds it."""
        current = self._current().get(key)
        if current is None:
            return _Look(0, None, None)
        gen, old = current
        seen = _identity(old)  # before judging: what is deleted later must be this file
        if seen is not None and not self.is_stale(old):
            return None
        return _Look(gen + 1, old, seen)

    def _take(self, key: str, look: _Look) -> bool:
        """Step 2: create generation `look.gen` (O_EXCL), back off if a newer or a live older
        generation exists, delete the stale ones (compare before delete)."""
        mine = look.gen
        path = self._create(key, mine)
        if path is None:
            return False
        newest = self._current().get(key)
        if newest is not None and newest[0] > mine:
            # We listed before another process took a newer generation (e.g. our generation 0
            # from an old listing, after a takeover deleted the dead generation 0): it holds it.
            path.unlink(missing_ok=True)
            return False
        older = sorted((gen, self.dir / name) for name in os.listdir(self.dir)
                       if (parsed := parse_claim_name(name)) is not None and parsed[0] == key
                       and (gen := parsed[1]) < mine)
        for _gen, other in older:
            if other == look.judged and look.seen is not None:
                if _delete_if_same(other, look.seen):
                    continue
            seen = _identity(other)  # not the file we judged: made after our look
            if seen is None:
                continue  # gone meanwhile
            if self.is_stale(other):
                _delete_if_same(other, seen)
                continue
            # a live claim made after our look (a full takeover and release happened, then a
            # fresh generation 0): it holds the run
            path.unlink(missing_ok=True)
            return False
        if look.judged is not None:
            owner = _owner_of(look.seen)
            log.info("took over the claim of %s from %s (its owner is gone)", key,
                     owner.label() if owner else "an unknown process")
        with self._lock:
            self._held[key] = path
        self._start_heartbeat()
        return True

    def release(self, keys: Iterable[str]) -> None:
        """Delete the claims this process holds among `keys` (after their results are stored)."""
        for key in keys:
            with self._lock:
                path = self._held.pop(key, None)
            if path is not None:
                path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def hold(self, keys: Iterable[str]) -> Iterator[set[str]]:
        """Claim what can be claimed among `keys`; yield the claimed keys; release them on exit.

        Exit by an exception (KeyboardInterrupt included) releases too: the runs in training
        were not stored, so another process may train them at once.
        """
        claimed = {key for key in keys if self.try_claim(key)}
        try:
            yield claimed
        finally:
            self.release(claimed)

    # --- heartbeat ---
    def _start_heartbeat(self) -> None:
        with self._lock:
            if self._beat is not None and self._beat.is_alive():
                return
            self._beat = threading.Thread(target=self._beat_loop, name="hamgraph-claims",
                                          daemon=True)
            self._beat.start()

    def _beat_loop(self) -> None:
        while True:
            time.sleep(self.heartbeat)
            self.touch()

    def touch(self) -> None:
        """Beat now (the heartbeat thread does this every `heartbeat` seconds)."""
        with self._lock:
            paths = list(self._held.values())
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.utime(path)


class _NoClaims(Claims):
    """Every claim granted, nothing written, nobody else busy (the null object)."""

    def __init__(self) -> None:  # no dir, no thread
        self._held = {}
        self._lock = threading.Lock()

    def try_claim(self, key: str) -> bool:
        return True

    def release(self, keys: Iterable[str]) -> None:
        return None

    def busy(self, keys: Iterable[str]) -> dict[str, Owner | None]:
        return {}

    def prune(self) -> int:
        return 0


NO_CLAIMS: Claims = _NoClaims()
