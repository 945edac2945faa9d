"""Checkpoints of training runs: one file per run (or pack), written atomically.

    <directory>/checkpoint.pt     the state after a finished epoch (torch.save, weights only)
    <directory>/members.json      packs only: the keys of the pack's runs, in pack order

A checkpoint is written to a temp file, flushed to disk (fsync) and renamed into place, so a
kill at any moment leaves the previous checkpoint or the new one, never half of one. It holds
everything an epoch depends on (weights, optimizer state incl. HAM's, every RNG and generator,
the best-epoch tracker, the history so far, the time spent), so the run continues exactly as
if it had not stopped. A checkpoint that cannot be read (truncated by a full disk, say), or
that another hamgraph version wrote, is ignored with a warning: the run starts over.

When: node runs and packs save every `checkpoint_interval()` seconds of wall-clock (checked at
their host syncs, so saving adds no sync to an epoch), and at once when a stop was requested
(hamgraph.preemption); graph runs after every epoch. Cost: one device-to-host copy of the
state and one file write per save (the weights and the optimizer moments: about 3x the
weights' size).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hamgraph import __version__
from hamgraph.atomic import atomic_path, atomic_write_text
from hamgraph.errors import UserInputError

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
MEMBERS_FILE = "members.json"
CHECKPOINT_SECONDS = 300.0  # wall-clock between checkpoints of a node run or pack
CHECKPOINT_ENV = "HAMGRAPH_CHECKPOINT_SECONDS"  # overrides CHECKPOINT_SECONDS (0: every sync)


def checkpoint_interval() -> float:
    """Seconds between checkpoints: $HAMGRAPH_CHECKPOINT_SECONDS, else CHECKPOINT_SECONDS."""
    text = os.environ.get(CHECKPOINT_ENV, "").strip()
    if not text:
        return CHECKPOINT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserInputError(f"${CHECKPOINT_ENV}={text!r}: expected seconds >= 0, e.g. 300")
    return value


class NullCheckpointer:
    """No checkpoint directory: nothing is saved, nothing is resumed."""

    def load(self) -> dict[str, Any] | None:
        return None

    def due(self) -> bool:
        return False

    def save(self, state: dict[str, Any]) -> None:
        pass

    def clear(self) -> None:
        pass


class Checkpointer:
    """`<directory>/checkpoint.pt` of the run (or pack) `key`; see the module docstring.

    `interval`: seconds between saves that `due()` asks for (default: `checkpoint_interval()`).
    `members`: a pack's run keys, written to members.json so a later command can find the
    checkpoint from its runs (ResultStore.pack_checkpoints).
    `set_aside`: called with the directory and the problem when the checkpoint cannot be read
    (e.g. `ResultStore.set_aside`, which moves it under `damaged/`); without it such a file is
    ignored with a warning (and overwritten by the next save).
    Known limit: two processes training the same key into one directory overwrite each
    other's checkpoints (claims keep `hamgraph run` processes from doing so).
    """

    def __init__(
        self,
        directory: Path,
        key: str,
        *,
        interval: float | None = None,
        members: Sequence[str] | None = None,
        set_aside: Callable[[Path, str], object] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CHECKPOINT_FILE
        self.key = key
        self.members = None if members is None else list(members)
        self.interval = checkpoint_interval() if interval is None else float(interval)
        self.set_aside = set_aside
        self._last = time.monotonic()

    def load(self) -> dict[str, Any] | None:
        if not self.path.is_file():
            return None
        try:
            with warnings.catch_warnings():  # a torn file: torch warns before it raises
                warnings.simplefilter("ignore")
                state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, not a checkpoint: start over, say so
            problem = f"cannot read it ({type(exc).__name__}: {str(exc).strip()[:120]})"
            if self.set_aside is not None:
                self.set_aside(self.directory, problem)
            else:
                log.warning("ignoring %s: %s", self.path, problem)
            return None
        if not isinstance(state, dict) or state.get("key") != self.key:
            who = state.get("key") if isinstance(state, dict) else None
            log.warning("ignoring %s: it belongs to %s, not %s", self.path, who, self.key)
            return None
        if self.members is not None and state.get("members") != self.members:
            log.warning("ignoring %s: it was written for other pack members", self.path)
            return None
        if state.get("hamgraph_version", __version__) != __version__:
            log.warning("ignoring %s: written by hamgraph %s, this is %s", self.path,
                        state["hamgraph_version"], __version__)
            return None
        return state

    def due(self) -> bool:
        """Whether `interval` seconds passed since the last save (or since construction)."""
        return time.monotonic() - self._last >= self.interval

    def save(self, state: dict[str, Any]) -> None:
        """Write the state (atomically, fsync'ed); with members, members.json first."""
        if self.members is not None:
            atomic_write_text(
                self.directory / MEMBERS_FILE,
                json.dumps({"key": self.key, "members": self.members}) + "\n",
                fsync=True,
            )
        with atomic_path(self.path) as tmp, open(tmp, "wb") as handle:
            identity = {"key": self.key, "members": self.members, "hamgraph_version": __version__}
            torch.save({**state, **identity}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        self._last = time.monotonic()
        log.debug("%s: checkpoint written to %s", self.key, self.path)

    def clear(self) -> None:
        """Remove the checkpoint (and members.json, and the directory if then empty)."""
        remove_checkpoint(self.directory)


def rng_state() -> dict[str, Any]:
    """The global RNGs of Python, NumPy and torch (CPU and every CUDA device), as plain values
    (so a checkpoint loads with weights_only=True)."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state()` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuple(state["python"]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list | tuple) else value


def remove_checkpoint(directory: Path) -> None:
    """Remove the checkpoint in `directory` (and the directory if then empty), if any."""
    for name in (CHECKPOINT_FILE, MEMBERS_FILE):
        with contextlib.suppress(FileNotFoundError):
            (Path(directory) / name).unlink()
    with contextlib.suppress(OSError):
        Path(directory).rmdir()


def pack_members(directory: Path) -> tuple[str, list[str]] | None:
    """(key, run keys in pack order) of the pack checkpoint in `directory`; None when there is
    no readable members.json or no checkpoint beside it."""
    try:
        data = json.loads((Path(directory) / MEMBERS_FILE).read_text(encoding="utf-8"))
        key, members = str(data["key"]), [str(k) for k in data["members"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (Path(directory) / CHECKPOINT_FILE).is_file():
        return None
    return key, members
