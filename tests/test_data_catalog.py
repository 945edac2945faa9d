"""`hamgraph datasets`: table content, availability, cached statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hamgraph.data import catalog
from hamgraph.data.paths import CACHE_ENV, MIRROR_ENV
from hamgraph.errors import UnknownNameError


def test_datasets_table(
    mirror: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, str(mirror))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    out = catalog.format_datasets(["cora", "pubmed", "ogbg-molhiv", "csbm-h0.2", "wikics"])
    header = out.splitlines()[0].split()
    assert header == [
        "dataset",
        "task",
        "metric",
        "split",
        "runs",
        "family",
        "available",
        *catalog.STAT_COLUMNS,
    ]
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:6]}
    assert rows["cora"][6:] == ["mirror", "2708", "5278", "1433", "7", "0.810", "0.771"]
    assert rows["pubmed"][6] == "no" and len(rows["pubmed"]) == 7
    assert rows["ogbg-molhiv"][6] == "mirror" and len(rows["ogbg-molhiv"]) == 7
    assert rows["wikics"][6] == "no"
    assert rows["csbm-h0.2"][6] == "generated"
    assert "pubmed: missing PubMed/raw/ind.pubmed.allx" in out

    # statistics are cached: a second call loads nothing
    stats = json.loads((tmp_path / "cache" / catalog.STATS_FILE).read_text())
    assert stats["datasets"]["cora"]["nodes"] == 2708

    def no_load(*_args):
        raise AssertionError("statistics recomputed")

    monkeypatch.setattr(catalog, "node_stats", no_load)
    assert "0.771" in catalog.format_datasets(["cora"])


def test_all_datasets_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    out = catalog.format_datasets([])
    first_words = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert {"cora", "ogbn-arxiv", "minesweeper", "ogbg-code2", "csbm"} <= first_words
    assert "rocauc" in out and "fixed-10" in out and "wikics-20" in out


def test_unknown_name() -> None:
    with pytest.raises(UnknownNameError, match="nope"):
        catalog.format_datasets(["cora", "nope"])
