"""Atomic file writes: write a temp file beside the target, then `os.replace` it into place.

A reader never sees a half-written file, and a crash leaves at most a temp file named
`.<name>.<host>.<pid>.<random>.tmp` next to the target. Nothing reads such files;
`ResultStore.clean_temp_files()` parses the host and pid back out to remove those of dead
processes, so every temp file is named by `temp_path()`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def host_tag() -> str:
    """This host's name as it appears in temp file names (dots replaced)."""
    return socket.gethostname().replace(".", "_")


def temp_path(path: Path) -> Path:
    """A fresh temp file name beside `path`: `.<name>.<host>.<pid>.<random>.tmp`."""
    token = secrets.token_hex(4)
    return path.with_name(f".{path.name}.{host_tag()}.{os.getpid()}.{token}{TEMP_SUFFIX}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp file path beside `path` (parent dirs created) for the block to write.

    When the block succeeds the temp file is renamed onto `path`; when it raises (including
    KeyboardInterrupt) the temp file is deleted and the error propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str, *, fsync: bool = False) -> None:
    """Write `text` (UTF-8, newlines untranslated) to `path` atomically.

    `fsync=True` flushes the data to disk before the rename, so after a power loss the
    file holds either its old or its new content (used for results).
    """
    with atomic_path(path) as temp, open(temp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a permission error means it does)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_start(pid: int) -> str:
    """The kernel's start time of `pid` (guards against pid reuse); "" where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(pid: int, start: str) -> bool:
    """Whether process `pid` of this host lives and, if `start` is known, is the one that started
    then (not a later process that got the same pid)."""
    return pid_alive(pid) and (not start or process_start(pid) in ("", start))
