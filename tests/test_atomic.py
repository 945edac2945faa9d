"""Durability of atomic writes (issue 21 item 3): after the rename, the directory is synced."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_store import make_result

import hamgraph.atomic as atomic
from hamgraph.store import ResultStore


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every fsync as ("dir" | "file", the path of the fd), in order."""
    calls: list[tuple[str, str]] = []
    real = os.fsync

    def spy(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        calls.append((kind, os.readlink(f"/proc/self/fd/{fd}") if kind == "dir" else ""))
        real(fd)

    if not Path("/proc/self/fd").is_dir():
        pytest.skip("no /proc/self/fd")
    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_a_durable_write_syncs_the_file_then_its_directory(tmp_path: Path, synced) -> None:
    target = tmp_path / "a" / "b.json"
    atomic.atomic_write_text(target, "{}", fsync=True)
    # the new folder's entry (in tmp_path), the file's data, then the rename (in a/)
    assert synced == [("dir", str(tmp_path)), ("file", ""), ("dir", str(tmp_path / "a"))]
    synced.clear()
    atomic.atomic_write_text(target, "{}", fsync=False)
    assert synced == []


def test_store_add_syncs_the_records_dir_and_the_root(tmp_path: Path, synced) -> None:
    store = ResultStore(tmp_path / "out")
    store.add(make_result(0))
    synced.clear()
    store.add(make_result(1))
    dirs = [path for kind, path in synced if kind == "dir"]
    assert str(store.records_dir) in dirs  # the record's rename
    assert str(store.root) in dirs  # runs.csv's rename
    assert dirs.index(str(store.records_dir)) < dirs.index(str(store.root))


def test_directory_sync_is_skipped_where_unsupported(tmp_path: Path, monkeypatch) -> None:
    real_open = os.open

    def no_dirs(path, flags, *args):  # Windows: a directory cannot be opened
        if Path(path).is_dir():
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_dirs)
    atomic.atomic_write_text(tmp_path / "x.txt", "x", fsync=True)
    monkeypatch.setattr(os, "open", real_open)

    def einval(fd: int) -> None:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "fsync", einval)
    atomic.fsync_dir(tmp_path)  # a file system without directory sync: no error
    assert (tmp_path / "x.txt").read_text() == "x"
