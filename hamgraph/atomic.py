"""Atomic file writes: write a temp file beside the target, then `os.replace` it into place.

A reader never sees a half-written file, and a crash leaves at most a temp file named
`.<name>.<host>.<pid>.<random>.tmp` next to the target. Nothing reads such files;
`ResultStore.clean_temp_files()` parses the host and pid back out to remove those of dead
processes, so every temp file is named by `temp_path()`.

Durability (`fsync=True`, used for results): the data are flushed before the rename and the
directory after it (`fsync_dir`), so once the call returns a power loss cannot take the new file
back: a rename lives in the directory, which the kernel may still hold only in memory. Where
a directory cannot be opened or synced (Windows, some network file systems) that second step is
skipped silently; the file's own fsync still holds.
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


def fsync_dir(folder: Path) -> None:
    """Make the entries of `folder` (renames, new files) durable; a no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # Windows cannot open a directory; a vanished one has nothing to sync
        return
    try:
        os.fsync(fd)
    except OSError:  # EINVAL / ENOTSUP on file systems without directory sync
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield a temp file path beside `path` (parent dirs created) for the block to write.

    When the block succeeds the temp file is renamed onto `path`; when it raises (including
    KeyboardInterrupt) the temp file is deleted and the error propagates. `durable`: sync the
    directory after the rename (and the grandparent when the parent was created here), so the
    rename survives a power loss; the block must have synced the file itself.
    """
    path = Path(path)
    created = not path.parent.is_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    if durable and created:
        fsync_dir(path.parent.parent)
    temp = temp_path(path)
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, *, fsync: bool = False) -> None:
    """Write `text` (UTF-8, newlines untranslated) to `path` atomically.

    `fsync=True` flushes the data to disk before the rename and the directory after it, so
    after a power loss the file holds its old content only if the call had not returned, else
    its new content (used for results).
    """
    with atomic_path(path, durable=fsync) as temp, \
            open(temp, "w", encoding="utf-8", newline="") as handle:
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
