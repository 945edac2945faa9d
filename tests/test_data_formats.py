"""Loaders of datasets that are not in the mirror, on small files in the real on-disk formats.

Each test writes the raw files into a fake read-only mirror, loads through the real PyG / OGB
class, and checks the preparation (undirected, no self loops, row-normalization) and splits.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hamgraph.data.node import NodeDataset, load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import resolve_dataset

N, F = 50, 6


def _graph(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small graph: (edges [E, 2] one direction + one self loop + one duplicate, x, y)."""
    rng = np.random.default_rng(seed)
    edges = {(i, (i + 1) % N) for i in range(N)} | {(i, (i + 7) % N) for i in range(0, N, 3)}
    edges = np.array(sorted(edges), dtype=np.int64)
    edges = np.concatenate([edges, [[4, 4], [1, 0]]])  # self loop; reverse of (0, 1)
    x = (rng.random((N, F)) < 0.4).astype(np.float32)
    y = np.arange(N) % 3
    return edges, x, y


def _mirror(tmp_path: Path) -> DataPaths:
    return DataPaths(cache=tmp_path / "cache", mirror=tmp_path / "mirror")


def _check_graph(data: NodeDataset, n_undirected: int) -> None:
    ei = data.edge_index
    assert not bool((ei[0] == ei[1]).any())
    assert ei.size(1) == 2 * n_undirected
    pairs = set(map(tuple, ei.t().tolist()))
    assert pairs == {(b, a) for a, b in pairs}


def _n_undirected(edges: np.ndarray) -> int:
    return len({tuple(sorted(e)) for e in edges.tolist() if e[0] != e[1]})


def _write_gnn_benchmark_npz(path: Path, edges: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
    adj = sp.csr_matrix((np.ones(len(edges), np.float32), (edges[:, 0], edges[:, 1])), (N, N))
    attr = sp.csr_matrix(x * 3.0)  # counts; PyG binarizes them
    path.parent.mkdir(parents=True)
    np.savez(
        path,
        adj_data=adj.data,
        adj_indices=adj.indices,
        adj_indptr=adj.indptr,
        adj_shape=adj.shape,
        attr_data=attr.data,
        attr_indices=attr.indices,
        attr_indptr=attr.indptr,
        attr_shape=attr.shape,
        labels=y,
    )


@pytest.mark.parametrize(
    ("name", "rel"),
    [
        ("amazon-computer", "Computers/raw/amazon_electronics_computers.npz"),
        ("amazon-photo", "Photo/raw/amazon_electronics_photo.npz"),
        ("coauthor-cs", "CS/raw/ms_academic_cs.npz"),
        ("coauthor-physics", "Physics/raw/ms_academic_phy.npz"),
    ],
)
def test_amazon_coauthor_npz(tmp_path: Path, name: str, rel: str) -> None:
    paths = _mirror(tmp_path)
    edges, x, y = _graph()
    _write_gnn_benchmark_npz(paths.mirror / rel, edges, x, y)
    data = load_node_dataset(resolve_dataset(name), paths)
    assert tuple(data.x.shape) == (N, F) and data.num_classes == 3
    assert torch.equal(data.y, torch.from_numpy(y))
    _check_graph(data, _n_undirected(edges))
    # row-normalized binarized features: every nonzero row sums to 1
    sums = data.x.sum(1)
    nonzero = torch.from_numpy(x.sum(1) > 0)
    assert torch.allclose(sums[nonzero], torch.ones(int(nonzero.sum())))
    s = data.split_for_run(2)
    assert len(data.splits) == 1
    assert (s.train.numel(), s.val.numel(), s.test.numel()) == (30, 10, 10)
    assert (paths.cache / rel).is_file()


@pytest.mark.parametrize("name", ["amazon-ratings", "roman-empire", "tolokers", "questions"])
def test_heterophilous_npz(tmp_path: Path, name: str) -> None:
    paths = _mirror(tmp_path)
    edges, x, y = _graph(1)
    dir_name = name.replace("-", "_")
    rng = np.random.default_rng(0)
    masks = {k: np.zeros((10, N), dtype=bool) for k in ("train", "val", "test")}
    for i in range(10):
        perm = rng.permutation(N)
        masks["train"][i, perm[:25]] = True
        masks["val"][i, perm[25:37]] = True
        masks["test"][i, perm[37:]] = True
    path = paths.mirror / dir_name / "raw" / f"{dir_name}.npz"
    path.parent.mkdir(parents=True)
    np.savez(
        path,
        node_features=x,
        node_labels=y,
        edges=edges,
        train_masks=masks["train"],
        val_masks=masks["val"],
        test_masks=masks["test"],
    )
    data = load_node_dataset(resolve_dataset(name), paths)
    assert tuple(data.x.shape) == (N, F)
    assert torch.equal(data.x, torch.from_numpy(x)), "no row-normalization for these"
    _check_graph(data, _n_undirected(edges))
    assert len(data.splits) == 10
    for i in (0, 2, 9):
        s = data.split_for_run(i)
        assert s.train.tolist() == np.flatnonzero(masks["train"][i]).tolist()
        assert s.test.tolist() == np.flatnonzero(masks["test"][i]).tolist()


def test_wikics_json(tmp_path: Path) -> None:
    paths = _mirror(tmp_path)
    edges, x, y = _graph(2)
    links = [[] for _ in range(N)]
    for a, b in edges.tolist():
        links[a].append(b)
    rng = np.random.default_rng(0)
    train = rng.random((20, N)) < 0.2
    val = ~train & (rng.random((20, N)) < 0.2)
    stop = ~train & ~val & (rng.random((20, N)) < 0.2)
    test = np.zeros(N, dtype=bool)
    test[40:] = True
    train[:, 40:] = val[:, 40:] = stop[:, 40:] = False
    payload = {
        "features": x.tolist(),
        "labels": y.tolist(),
        "links": links,
        "train_masks": train.tolist(),
        "val_masks": val.tolist(),
        "stopping_masks": stop.tolist(),
        "test_mask": test.tolist(),
    }
    path = paths.mirror / "WikiCS" / "raw" / "data.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(payload))
    data = load_node_dataset(resolve_dataset("wikics"), paths)
    _check_graph(data, _n_undirected(edges))
    assert len(data.splits) == 20
    for i in (0, 1, 19):
        s = data.split_for_run(i)
        assert s.val.tolist() == np.flatnonzero(val[i] | stop[i]).tolist()
        assert s.test.tolist() == list(range(40, N))


def _csv_gz(path: Path, rows: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = rows.reshape(len(rows), -1)
    with gzip.open(path, "wt") as f:
        for row in rows:
            f.write(",".join(str(v) for v in row) + "\n")


def test_ogbn_arxiv_csv(tmp_path: Path) -> None:
    paths = _mirror(tmp_path)
    edges, x, y = _graph(3)
    edges = edges[edges[:, 0] != edges[:, 1]]  # arxiv has no self loops; directed citations
    root = paths.mirror / "ogbn_arxiv"
    root.mkdir(parents=True)
    (root / "RELEASE_v1.txt").write_text("# Release note for ogbn-arxiv\n")
    _csv_gz(root / "raw" / "edge.csv.gz", edges)
    _csv_gz(root / "raw" / "node-feat.csv.gz", x + 0.5)
    _csv_gz(root / "raw" / "node-label.csv.gz", y)
    _csv_gz(root / "raw" / "num-node-list.csv.gz", np.array([N]))
    _csv_gz(root / "raw" / "num-edge-list.csv.gz", np.array([len(edges)]))
    _csv_gz(root / "raw" / "node_year.csv.gz", np.full(N, 2019))
    _csv_gz(root / "split" / "time" / "train.csv.gz", np.arange(0, 30))
    _csv_gz(root / "split" / "time" / "valid.csv.gz", np.arange(30, 40))
    _csv_gz(root / "split" / "time" / "test.csv.gz", np.arange(40, N))
    data = load_node_dataset(resolve_dataset("ogbn-arxiv"), paths)
    assert tuple(data.x.shape) == (N, F) and data.x.dtype == torch.float32
    assert torch.allclose(data.x, torch.from_numpy(x + 0.5))
    assert torch.equal(data.y, torch.from_numpy(y))
    _check_graph(data, _n_undirected(edges))
    s = data.split_for_run(4)
    assert s.train.tolist() == list(range(30)) and s.test.tolist() == list(range(40, N))
