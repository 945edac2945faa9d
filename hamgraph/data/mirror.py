"""Raw files: the writable cache, the read-only mirror, and (when allowed) a guarded download.

The cache (`DataPaths.cache`) is a PyG-style data root: `<cache>/<dataset dir>/raw/...`, and the
PyG/OGB loaders write `processed/` next to `raw/`. The mirror is a root of the same shape that
holds raw files only; it is never written: files are *copied* out of it into the cache.

A dataset's files are given as paths relative to its dataset dir (`raw/ind.cora.x`,
`RELEASE_v1.txt`, `split/scaffold/train.csv.gz`), so OGB loaders can use the same helpers.

Known limits: the download fallback sets the process-wide socket timeout while it runs (not
thread-safe); concurrent processes are serialized by a file lock per dataset dir, so two grid
workers never process the same dataset at the same time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from filelock import FileLock

from hamgraph.atomic import atomic_path
from hamgraph.data.paths import CACHE_ENV, MIRROR_ENV, DataPaths
from hamgraph.errors import ConfigError, DatasetUnavailableError

log = logging.getLogger(__name__)

ALLOW_DOWNLOAD_ENV = "HAMGRAPH_ALLOW_DOWNLOAD"  # "0": never try to download, fail at once
DOWNLOAD_TIMEOUT = 30.0  # seconds without a byte before a download attempt gives up
_STAGING_PREFIX = ".download-"
_LOCK_DIR = ".locks"


class _LogStream:
    """A write-only text stream that forwards loader chatter (print) to the debug log."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("%s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


def downloads_allowed() -> bool:
    """False when $HAMGRAPH_ALLOW_DOWNLOAD is "0" (offline machines, tests)."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "1").strip() != "0"


def _check_paths(paths: DataPaths) -> None:
    if paths.mirror is None:
        return
    cache, mirror = paths.cache.resolve(), paths.mirror.resolve()
    if cache == mirror or mirror in cache.parents:
        raise ConfigError(
            f"the data cache {cache} (${CACHE_ENV}) is inside the read-only mirror {mirror} "
            f"(${MIRROR_ENV}); point ${CACHE_ENV} somewhere else"
        )


def file_sources(dataset_dir: str, files: Sequence[str], paths: DataPaths) -> dict[str, str]:
    """Where each file is: "cache", "mirror" or "missing" (checks existence only, loads nothing)."""
    where: dict[str, str] = {}
    for rel in files:
        if (paths.cache / dataset_dir / rel).is_file():
            where[rel] = "cache"
        elif paths.mirror is not None and (paths.mirror / dataset_dir / rel).is_file():
            where[rel] = "mirror"
        else:
            where[rel] = "missing"
    return where


def missing_files(dataset_dir: str, files: Sequence[str], paths: DataPaths) -> list[str]:
    """The files found neither in the cache nor in the mirror."""
    sources = file_sources(dataset_dir, files, paths)
    return [rel for rel, where in sources.items() if where == "missing"]


def unavailable_message(
    dataset_dir: str, missing: Sequence[str], paths: DataPaths, url: str | None = None
) -> str:
    """The message of a DatasetUnavailableError: what is missing and how to provide it."""
    listed = ", ".join(f"{dataset_dir}/{rel}" for rel in missing)
    where = f"the cache {paths.cache}"
    where += f" or the mirror {paths.mirror}" if paths.mirror else f" (${MIRROR_ENV} is not set)"
    hint = f" (download: {url})" if url else ""
    return (
        f"missing {listed}: not found in {where}. Put the files{hint} under "
        f"{paths.cache / dataset_dir} or under a read-only mirror root named by ${MIRROR_ENV}"
    )


def _copy_atomic(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def ensure_raw_files(
    dataset_dir: str, files: Sequence[str], paths: DataPaths, url: str | None = None
) -> Path:
    """Make `files` (relative to `<root>/<dataset_dir>`) present in the cache; return that dir.

    Files missing from the cache are copied from the mirror (temp file + os.replace, so a
    crash never leaves a half-copied file). Nothing is copied unless every file is available,
    so a failed call leaves the cache as it was. Raises DatasetUnavailableError naming the
    files found nowhere. Never writes into the mirror.
    """
    _check_paths(paths)
    sources = file_sources(dataset_dir, files, paths)
    missing = [rel for rel, where in sources.items() if where == "missing"]
    if missing:
        raise DatasetUnavailableError(unavailable_message(dataset_dir, missing, paths, url))
    target = paths.cache / dataset_dir
    for rel, where in sources.items():
        if where == "mirror":
            assert paths.mirror is not None
            log.debug("copying %s/%s from the mirror %s", dataset_dir, rel, paths.mirror)
            _copy_atomic(paths.mirror / dataset_dir / rel, target / rel)
    return target


@contextlib.contextmanager
def dataset_lock(paths: DataPaths, dataset_dir: str) -> Iterator[None]:
    """Serialize copying and processing of one dataset dir across processes."""
    lock_dir = paths.cache / _LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_dir / f"{dataset_dir}.lock")):
        yield


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def fetch_raw_files(
    dataset_dir: str,
    files: Sequence[str],
    paths: DataPaths,
    download: Callable[[Path], object],
    url: str | None = None,
) -> Path:
    """`ensure_raw_files`, falling back to the loader's own download when files are missing.

    `download(root)` must place `<root>/<dataset_dir>/<file>` for every file (usually: build
    the PyG/OGB dataset class on `root`). It runs in a fresh staging dir inside the cache with
    a socket timeout; on success the files are moved into the cache, on any failure the staging
    dir is deleted and DatasetUnavailableError names the missing files. Skipped entirely when
    $HAMGRAPH_ALLOW_DOWNLOAD=0.
    """
    try:
        return ensure_raw_files(dataset_dir, files, paths, url)
    except DatasetUnavailableError as exc:
        if not downloads_allowed():
            raise DatasetUnavailableError(
                f"{exc} (downloads are off: ${ALLOW_DOWNLOAD_ENV}=0)"
            ) from None
        missing = missing_files(dataset_dir, files, paths)
        message = str(exc)
    paths.cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=paths.cache))
    try:
        log.info("downloading %s (%s) ...", dataset_dir, url or "loader default")
        try:
            with _socket_timeout(DOWNLOAD_TIMEOUT), quiet_loader():
                download(staging)
        except (Exception, SystemExit) as exc:  # ogb calls exit(); urllib, fsspec, zip errors
            raise DatasetUnavailableError(
                f"{message}; the download failed: {type(exc).__name__}: {exc}"
            ) from exc
        still_missing = [rel for rel in missing if not (staging / dataset_dir / rel).is_file()]
        if still_missing:
            raise DatasetUnavailableError(
                unavailable_message(dataset_dir, still_missing, paths, url)
                + " (the download did not provide them)"
            )
        target = paths.cache / dataset_dir
        for rel in missing:
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / dataset_dir / rel, target / rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ensure_raw_files(dataset_dir, files, paths, url)


@contextlib.contextmanager
def quiet_loader() -> Iterator[None]:
    """Route PyG/OGB prints (stdout and stderr) to the debug log while a loader runs."""
    with contextlib.redirect_stdout(_LogStream()), contextlib.redirect_stderr(_LogStream()):
        yield
