"""The read-only mirror: copy into the cache, never write into the mirror, fail fast and clean."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from hamgraph.data import mirror as mirror_mod
from hamgraph.data.mirror import ensure_raw_files, fetch_raw_files, file_sources
from hamgraph.data.node import load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import resolve_dataset
from hamgraph.errors import ConfigError, DatasetUnavailableError


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args, **_kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_loading_from_the_real_mirror_never_writes_into_it(mirror: Path, tmp_path: Path) -> None:
    before = _snapshot(mirror)
    paths = DataPaths(cache=tmp_path / "cache", mirror=mirror)
    for name in ("cora", "chameleon"):
        load_node_dataset(resolve_dataset(name), paths)
    assert _snapshot(mirror) == before
    assert (paths.cache / "Cora" / "raw" / "ind.cora.x").is_file()
    assert (paths.cache / "Cora" / "processed").is_dir()
    assert not list((paths.cache / "Cora" / "raw").glob(".*tmp")), "no temp files left"


def test_ensure_raw_files_copies_general_relative_paths(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    files = ["RELEASE_v1.txt", "raw/a.csv.gz", "split/scaffold/train.csv.gz"]
    for rel in files:
        (mirror / "ds" / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / "ds" / rel).write_text(rel)
    before = _snapshot(mirror)
    paths = DataPaths(cache=tmp_path / "cache", mirror=mirror)
    assert set(file_sources("ds", files, paths).values()) == {"mirror"}
    target = ensure_raw_files("ds", files, paths)
    assert target == paths.cache / "ds"
    assert all((target / rel).read_text() == rel for rel in files)
    assert set(file_sources("ds", files, paths).values()) == {"cache"}
    # a cached file wins over the mirror and is not copied again
    (target / "raw" / "a.csv.gz").write_text("cached")
    ensure_raw_files("ds", files, paths)
    assert (target / "raw" / "a.csv.gz").read_text() == "cached"
    assert _snapshot(mirror) == before


def test_partial_mirror_copies_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = tmp_path / "mirror"
    (mirror / "ds" / "raw").mkdir(parents=True)
    (mirror / "ds" / "raw" / "a.npz").write_text("a")
    paths = DataPaths(cache=tmp_path / "cache", mirror=mirror)
    with pytest.raises(DatasetUnavailableError, match=r"ds/raw/b\.npz") as info:
        ensure_raw_files("ds", ["raw/a.npz", "raw/b.npz"], paths, url="https://example.org/b")
    message = str(info.value)
    assert "HAMGRAPH_MIRROR" in message and str(paths.cache) in message
    assert message.startswith("missing ds/raw/b.npz: ")  # only the file found nowhere
    assert "https://example.org/b" in message
    assert not (paths.cache / "ds").exists()


def test_pubmed_from_the_mirror_fails_clearly_and_leaves_the_cache_clean(
    mirror: Path, tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(mirror_mod.ALLOW_DOWNLOAD_ENV, raising=False)  # the download is tried
    paths = DataPaths(cache=tmp_path / "cache", mirror=mirror)
    for _ in range(2):  # a failed attempt must not break (or change) the next one
        with pytest.raises(DatasetUnavailableError, match=r"ind\.pubmed\.allx") as info:
            load_node_dataset(resolve_dataset("pubmed"), paths)
        assert "HAMGRAPH_MIRROR" in str(info.value)
        assert "download failed" in str(info.value)
        leftovers = [p.name for p in paths.cache.iterdir() if p.name != ".locks"]
        assert leftovers == [], f"cache not clean: {leftovers}"


def test_downloads_off_fails_fast_without_network(
    offline_paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(mirror_mod.ALLOW_DOWNLOAD_ENV, "0")

    def must_not_run(_root: Path) -> None:
        raise AssertionError("download attempted")

    with pytest.raises(DatasetUnavailableError, match="HAMGRAPH_ALLOW_DOWNLOAD=0"):
        fetch_raw_files("x", ["raw/x.npz"], offline_paths, download=must_not_run)
    with pytest.raises(DatasetUnavailableError, match=r"roman_empire/raw/roman_empire\.npz"):
        load_node_dataset(resolve_dataset("roman-empire"), offline_paths)


def test_download_success_moves_files_into_the_cache(
    offline_paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(mirror_mod.ALLOW_DOWNLOAD_ENV, raising=False)
    seen: list[Path] = []

    def download(root: Path) -> None:
        seen.append(root)
        assert root.parent == offline_paths.cache and root.name.startswith(".download-")
        (root / "ds" / "raw").mkdir(parents=True)
        (root / "ds" / "raw" / "x.npz").write_text("x")
        (root / "ds" / "junk.zip").write_text("junk")

    target = fetch_raw_files("ds", ["raw/x.npz"], offline_paths, download=download)
    assert (target / "raw" / "x.npz").read_text() == "x"
    assert not (target / "junk.zip").exists()
    assert not seen[0].exists(), "staging dir removed"


def test_download_that_provides_nothing_is_an_error(
    offline_paths: DataPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(mirror_mod.ALLOW_DOWNLOAD_ENV, raising=False)
    with pytest.raises(DatasetUnavailableError, match="did not provide"):
        fetch_raw_files("ds", ["raw/x.npz"], offline_paths, download=lambda root: None)
    assert [p.name for p in offline_paths.cache.iterdir()] == []


def test_cache_inside_the_mirror_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m" / "ds" / "raw").mkdir(parents=True)
    (tmp_path / "m" / "ds" / "raw" / "f").write_text("f")
    with pytest.raises(ConfigError, match="inside the read-only mirror"):
        paths = DataPaths(cache=tmp_path / "m" / "c", mirror=tmp_path / "m")
        ensure_raw_files("ds", ["raw/f"], paths)


def test_copy_is_atomic_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"0" * 1000)

    def broken_copy(a, b):
        Path(b).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(shutil, "copyfile", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        mirror_mod._copy_atomic(src, tmp_path / "out" / "dst.bin")
    assert os.listdir(tmp_path / "out") == []
