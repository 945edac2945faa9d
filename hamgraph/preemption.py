"""Preemption: SIGTERM / SIGUSR1 make a training process checkpoint and exit cleanly.

Slurm sends SIGTERM before it preempts a job (and, with `--signal`, a chosen signal some time
before the time limit). `handle_signals()` (installed by `hamgraph run` / `hamgraph sweep` and
by their worker processes) turns either signal into a stop request: a flag, nothing else, so
the signal can arrive at any moment. The trainers look at the flag at every epoch boundary (a
Python check, no device sync); when it is set they write their checkpoint and raise `Preempted`,
which unwinds every layer like KeyboardInterrupt does (results already stored are kept) and
becomes exit code EXIT_PREEMPTED in the CLI. Rerunning the same command continues from the
checkpoints. A parent process forwards the signal to its worker processes (`forward_to`).

Known limit: the flag is per process (a signal is), so it is module state; `reset()` clears it
(tests, or a long-lived process that handled one preemption and goes on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

log = logging.getLogger(__name__)

# sysexits.h EX_TEMPFAIL ("temporary failure; the user is invited to retry"): checkpointed,
# not finished. Distinct from 143 (killed by an unhandled SIGTERM) and from 1 / 2.
EXIT_PREEMPTED = 75
SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)

_stop = threading.Event()
_children: set[int] = set()  # pids the signal is forwarded to


class Preempted(BaseException):
    """Training stopped on request (SIGTERM / SIGUSR1) after writing its checkpoint.

    A BaseException like KeyboardInterrupt: it is not an error of a run, so no `except
    Exception` on the way up records it as one.
    """


def request_stop() -> None:
    """Ask every trainer of this process to checkpoint and stop at its next epoch boundary."""
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def reset() -> None:
    """Forget a stop request."""
    _stop.clear()


def _on_signal(signum: int, _frame: object) -> None:
    first = not _stop.is_set()
    _stop.set()
    for pid in list(_children):
        with contextlib.suppress(OSError):
            os.kill(pid, signum)
    if first:
        log.warning(
            "hamgraph: got %s: checkpointing at the next epoch boundary, then exiting with "
            "code %d (rerun the same command to continue)",
            signal.Signals(signum).name, EXIT_PREEMPTED,
        )


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """SIGTERM and SIGUSR1 request a stop (and are forwarded to `forward_to` children) while
    the block runs; the previous handlers come back afterwards. Main thread only (Python's
    rule for signal handlers); elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def forward_to(pids: list[int]) -> Iterator[None]:
    """Forward SIGTERM / SIGUSR1 to these (child) processes while the block runs; a stop that
    was requested before they started is forwarded at once."""
    _children.update(pids)
    if _stop.is_set():
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
    try:
        yield
    finally:
        _children.difference_update(pids)


def check() -> None:
    """Raise Preempted if a stop was requested (for loops with nothing to checkpoint)."""
    if _stop.is_set():
        raise Preempted
