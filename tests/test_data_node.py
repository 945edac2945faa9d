"""Node datasets from the real mirror: shapes, graph preparation, protocol splits, caching."""

from __future__ import annotations

import pytest
import torch

from hamgraph.data.node import NodeDataset, load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import resolve_dataset
from hamgraph.errors import UnknownNameError


def _load(name: str, paths: DataPaths) -> NodeDataset:
    return load_node_dataset(resolve_dataset(name), paths)


def _assert_prepared(data: NodeDataset) -> None:
    ei = data.edge_index
    assert data.x.dtype == torch.float32 and data.y.dtype == torch.long
    assert ei.dtype == torch.long and ei.size(0) == 2
    assert not bool((ei[0] == ei[1]).any()), "self loops must be removed"
    # undirected: the reversed edge set is the same set
    fwd = set(map(tuple, ei.t().tolist()))
    assert fwd == {(b, a) for a, b in fwd}
    assert len(fwd) == ei.size(1), "coalesced: no duplicate edges"
    # coalesced = sorted by (row, col)
    key = ei[0] * data.num_nodes + ei[1]
    assert bool((key[1:] > key[:-1]).all())
    for split in data.splits:
        split.check(data.num_nodes)


@pytest.mark.parametrize(
    ("name", "nodes", "edges", "features", "classes", "splits"),
    [
        ("cora", 2708, 10556, 1433, 7, 1),
        ("citeseer", 3327, 9104, 3703, 6, 1),
        ("chameleon", 890, 17708, 2325, 5, 10),
        ("squirrel", 2223, 93996, 2089, 5, 10),
        ("minesweeper", 10000, 78804, 7, 2, 10),
    ],
)
def test_mirror_datasets_load_with_expected_shapes(
    data_paths: DataPaths, name, nodes, edges, features, classes, splits
) -> None:
    data = _load(name, data_paths)
    assert data.info.name == name
    assert tuple(data.x.shape) == (nodes, features)
    assert data.y.shape == (nodes,)
    assert data.edge_index.size(1) == edges
    assert data.num_classes == classes
    assert len(data.splits) == splits
    _assert_prepared(data)


def test_planetoid_per_class_split(data_paths: DataPaths) -> None:
    data = _load("cora", data_paths)
    split = data.split_for_run(0)
    assert (split.train.numel(), split.val.numel(), split.test.numel()) == (140, 500, 1000)
    assert torch.equal(torch.bincount(data.y[split.train], minlength=7), torch.full((7,), 20))
    # one split reused by every run
    for run in range(data.info.runs):
        assert data.split_for_run(run) is split
    # not PyG's public split (nodes 0..139): it is a seeded random one
    assert not torch.equal(split.train, torch.arange(140))


@pytest.mark.parametrize(("name", "classes"), [("cora-public", 7), ("citeseer-public", 6)])
def test_planetoid_public_split(data_paths: DataPaths, name: str, classes: int) -> None:
    data = _load(name, data_paths)
    base = _load(name.removesuffix("-public"), data_paths)
    assert data.info.name == name and data.info.split == "planetoid-public"
    # the same graph as the base dataset, only the split differs
    assert torch.equal(data.x, base.x) and torch.equal(data.edge_index, base.edge_index)
    split = data.split_for_run(0)
    n_train = 20 * classes
    assert (split.train.numel(), split.val.numel(), split.test.numel()) == (n_train, 500, 1000)
    # Kipf & Welling: the first 20 * classes nodes train, the next 500 validate
    assert torch.equal(split.train, torch.arange(n_train))
    assert torch.equal(split.val, torch.arange(n_train, n_train + 500))
    assert torch.equal(torch.bincount(data.y[split.train]), torch.full((classes,), 20))
    if name == "cora-public":
        assert torch.equal(split.test, torch.arange(1708, 2708))
    for run in range(data.info.runs):
        assert data.split_for_run(run) is split
    assert not torch.equal(split.train, base.split_for_run(0).train)


def test_fixed_10_splits_are_the_shipped_ones(data_paths: DataPaths) -> None:
    data = _load("chameleon", data_paths)
    assert data.info.runs == 10
    seen = [data.split_for_run(r) for r in range(10)]
    assert all(s.train.numel() > 0 and s.val.numel() > 0 and s.test.numel() > 0 for s in seen)
    assert len({tuple(s.train.tolist()) for s in seen}) == 10, "10 different splits"
    assert data.split_for_run(10) is data.split_for_run(0)
    mines = _load("minesweeper", data_paths)
    s = mines.split_for_run(2)
    assert (s.train.numel(), s.val.numel(), s.test.numel()) == (5000, 2500, 2500)


def test_second_load_is_cached(data_paths: DataPaths) -> None:
    first = _load("cora", data_paths)
    assert _load("cora", data_paths) is first
    assert (data_paths.cache / "Cora" / "processed").is_dir()


def test_graph_dataset_is_not_a_node_dataset(offline_paths: DataPaths) -> None:
    with pytest.raises(UnknownNameError, match="ogbg-molhiv"):
        load_node_dataset(resolve_dataset("ogbg-molhiv"), offline_paths)


def test_split_for_run_rejects_negative_runs(offline_paths: DataPaths) -> None:
    data = load_node_dataset(resolve_dataset("csbm-n200"), offline_paths)
    with pytest.raises(ValueError, match="-1"):
        data.split_for_run(-1)
