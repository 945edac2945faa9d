"""OGB graph datasets: molhiv from the mirror (a small subset in the real on-disk format),
molpcba / ppa / code2 on small generated files in OGB's raw format, error paths, RWSE.

The helpers and the session fixture `molhiv_subset` are imported by the other graph tests.
"""

from __future__ import annotations

import builtins
import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hamgraph.data import rwse as rwse_module
from hamgraph.data.mirror import ALLOW_DOWNLOAD_ENV
from hamgraph.data.ogbg import (
    CODE2_MAX_NODES,
    GRAPH_SOURCES,
    RELEASE_FILE,
    _ogb_guards,
    augment_edge,
    get_vocab_mapping,
    graph_task,
    load_graph_dataset,
)
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import resolve_dataset
from hamgraph.data.rwse import cached_rwse, rwse_all, rwse_dense, rwse_sparse
from hamgraph.errors import DatasetUnavailableError

# --------------------------------------------------------------------------------------------
# Writers of OGB's raw format (csv.gz, no header), used by every graph test


def _csv(path: Path, frame: pd.DataFrame | np.ndarray | list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(frame).to_csv(path, header=False, index=False, compression="gzip")


def write_ogb_raw(
    dataset_dir: Path,
    *,
    edges: list[np.ndarray],  # per graph [2, E_g], graph-local node ids
    num_nodes: list[int],
    labels: np.ndarray | list,  # one row per graph
    split: tuple[str, dict[str, list[int]]],  # (split folder, {"train": [...], ...})
    node_feat: list[np.ndarray] | None = None,
    edge_feat: list[np.ndarray] | None = None,
    node_files: dict[str, list[np.ndarray]] | None = None,
    mappings: dict[str, int] | None = None,  # mapping file -> rows
    release: bool = True,
) -> Path:
    raw = dataset_dir / "raw"
    _csv(raw / "edge.csv.gz", np.concatenate([e.T for e in edges], axis=0).astype(np.int64))
    _csv(raw / "num-node-list.csv.gz", np.asarray(num_nodes, dtype=np.int64))
    _csv(raw / "num-edge-list.csv.gz", np.asarray([e.shape[1] for e in edges], dtype=np.int64))
    _csv(raw / "graph-label.csv.gz", labels)
    if node_feat is not None:
        _csv(raw / "node-feat.csv.gz", np.concatenate(node_feat, axis=0))
    if edge_feat is not None:
        _csv(raw / "edge-feat.csv.gz", np.concatenate(edge_feat, axis=0))
    for name, values in (node_files or {}).items():
        _csv(raw / f"{name}.csv.gz", np.concatenate(values).reshape(-1, 1))
    folder, parts = split
    for part, idx in parts.items():
        _csv(dataset_dir / "split" / folder / f"{part}.csv.gz", np.asarray(idx, dtype=np.int64))
    for name, rows in (mappings or {}).items():
        frame = pd.DataFrame({"idx": range(rows), "name": [f"t{i}" for i in range(rows)]})
        (dataset_dir / "mapping").mkdir(parents=True, exist_ok=True)
        frame.to_csv(dataset_dir / "mapping" / name, index=False, compression="gzip")
    if release:
        (dataset_dir / RELEASE_FILE).write_text("release 1 (generated for tests)\n")
    return dataset_dir


def _read(path: Path) -> np.ndarray:
    return pd.read_csv(path, header=None, compression="gzip").values


def make_molhiv_subset(mirror: Path, root: Path, per_split: dict[str, tuple[int, int]]) -> Path:
    """A mirror-like root holding a subset of the real ogbg-molhiv in OGB's raw format.

    per_split: split -> (negatives, positives) taken from the head of each official split.
    Returns `root` (use it as DataPaths.mirror).
    """
    src = mirror / "ogbg_molhiv"
    nodes = _read(src / "raw" / "num-node-list.csv.gz")[:, 0]
    edges_n = _read(src / "raw" / "num-edge-list.csv.gz")[:, 0]
    labels = _read(src / "raw" / "graph-label.csv.gz")[:, 0]
    node_feat = _read(src / "raw" / "node-feat.csv.gz")
    edge_feat = _read(src / "raw" / "edge-feat.csv.gz")
    edge = _read(src / "raw" / "edge.csv.gz")
    n_off = np.concatenate([[0], np.cumsum(nodes)])
    e_off = np.concatenate([[0], np.cumsum(edges_n)])
    chosen: list[int] = []
    parts: dict[str, list[int]] = {}
    for part, (neg, pos) in per_split.items():
        idx = _read(src / "split" / "scaffold" / f"{part}.csv.gz")[:, 0]
        picked = [*idx[labels[idx] == 0][:neg], *idx[labels[idx] == 1][:pos]]
        parts[part] = list(range(len(chosen), len(chosen) + len(picked)))
        chosen.extend(int(g) for g in sorted(picked))
    dst = root / "ogbg_molhiv"
    write_ogb_raw(
        dst,
        edges=[edge[e_off[g] : e_off[g + 1]].T for g in chosen],
        num_nodes=[int(nodes[g]) for g in chosen],
        labels=labels[chosen].reshape(-1, 1),
        split=("scaffold", parts),
        node_feat=[node_feat[n_off[g] : n_off[g + 1]] for g in chosen],
        edge_feat=[edge_feat[e_off[g] : e_off[g + 1]] for g in chosen],
        release=False,
    )
    (dst / RELEASE_FILE).write_bytes((src / RELEASE_FILE).read_bytes())
    return root


@pytest.fixture(scope="session")
def molhiv_subset(mirror: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~300 real molhiv graphs (train 200, valid 50, test 50, with positives in each split)."""
    root = tmp_path_factory.mktemp("molhiv-subset-mirror")
    return make_molhiv_subset(mirror, root, {"train": (180, 20), "valid": (42, 8), "test": (42, 8)})


def _random_graphs(rng: np.random.Generator, count: int, max_nodes: int = 8):
    sizes = rng.integers(2, max_nodes + 1, size=count).tolist()
    edges = []
    for n in sizes:  # a path plus a random chord, stored once per bond
        src = np.arange(n - 1)
        e = np.stack([src, src + 1])
        if n > 2:
            e = np.concatenate([e, [[0], [n - 1]]], axis=1)
        edges.append(e)
    return sizes, edges


# --------------------------------------------------------------------------------------------
# molhiv (real data, subset)


def test_molhiv_subset_loads_without_prompts(molhiv_subset, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no keyboard: a prompt would fail
    called = []
    monkeypatch.setattr(builtins, "input", lambda *a: called.append(a) or "n")
    paths = DataPaths(cache=tmp_path / "cache", mirror=molhiv_subset)
    data = load_graph_dataset(resolve_dataset("ogbg-molhiv"), paths, rwse_steps=4)
    assert called == []
    assert len(data.dataset) == 300
    assert {k: len(v) for k, v in data.split_idx.items()} == {"train": 200, "valid": 50, "test": 50}
    assert (data.num_tasks, data.num_outputs, data.eval_metric) == (1, 1, "rocauc")
    assert data.task == graph_task("ogbg-molhiv", 1, rwse_steps=4)
    g = data.dataset[0]
    assert g.x.shape[1] == 9 and g.edge_attr.shape[1] == 3
    assert g.edge_index.shape[1] % 2 == 0  # OGB added the reverse of every bond
    assert g.rwse.shape == (g.num_nodes, 4)
    assert int(data.val.y.sum()) == 8 and len(data.test) == 50
    # the mirror stays untouched, the cache holds processed data + the RWSE cache
    assert not (molhiv_subset / "ogbg_molhiv" / "processed").exists()
    assert (tmp_path / "cache" / "ogbg_molhiv" / "processed" / "rwse_k4.pt").is_file()
    # a second load (processed files present) gives the same graphs
    again = load_graph_dataset(resolve_dataset("ogbg-molhiv"), paths, rwse_steps=4)
    assert torch.equal(again.dataset[7].x, data.dataset[7].x)
    assert torch.equal(again.dataset[7].rwse, data.dataset[7].rwse)


def test_release_file_is_provided_when_missing(molhiv_subset, tmp_path):
    """No RELEASE_v1.txt anywhere: hamgraph writes a marker, ogb never asks a question."""
    mirror = tmp_path / "mirror"
    src = molhiv_subset / "ogbg_molhiv"
    for path in src.rglob("*.csv.gz"):
        target = mirror / "ogbg_molhiv" / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    paths = DataPaths(cache=tmp_path / "cache", mirror=mirror)
    data = load_graph_dataset(resolve_dataset("ogbg-molhiv"), paths)
    assert len(data.dataset) == 300
    assert (paths.cache / "ogbg_molhiv" / RELEASE_FILE).is_file()


def test_ogb_question_raises_instead_of_blocking(tmp_path):
    from ogb.graphproppred import PygGraphPropPredDataset

    root = tmp_path / "ogbg_molhiv"
    root.mkdir()  # exists, but no RELEASE_v1.txt: ogb would call input()
    with (
        pytest.raises(DatasetUnavailableError, match=RELEASE_FILE),
        _ogb_guards(GRAPH_SOURCES["ogbg-molhiv"], root),
    ):
        PygGraphPropPredDataset("ogbg-molhiv", root=str(tmp_path))


def test_missing_files_name_them(offline_paths, monkeypatch):
    monkeypatch.setenv(ALLOW_DOWNLOAD_ENV, "0")
    with pytest.raises(DatasetUnavailableError, match=r"ogbg_molpcba/raw/edge\.csv\.gz"):
        load_graph_dataset(resolve_dataset("ogbg-molpcba"), offline_paths)


@pytest.mark.slow
def test_full_molhiv_from_mirror(data_paths):
    data = load_graph_dataset(resolve_dataset("ogbg-molhiv"), data_paths)
    assert len(data.dataset) == 41127
    assert [len(data.split_idx[k]) for k in ("train", "valid", "test")] == [32901, 4113, 4113]


# --------------------------------------------------------------------------------------------
# molpcba, ppa, code2 (generated files in OGB's raw format)


def write_molpcba(dataset_dir: Path, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes, edges = _random_graphs(rng, 12)
    labels = rng.integers(0, 2, size=(12, 128)).astype(float)
    labels[rng.random(labels.shape) < 0.5] = np.nan
    write_ogb_raw(
        dataset_dir,
        edges=edges,
        num_nodes=sizes,
        labels=labels,
        split=("scaffold", {"train": list(range(8)), "valid": [8, 9], "test": [10, 11]}),
        node_feat=[rng.integers(0, 2, size=(n, 9)) for n in sizes],
        edge_feat=[rng.integers(0, 2, size=(e.shape[1], 3)) for e in edges],
    )
    return edges


def write_ppa(dataset_dir: Path, seed: int = 1) -> tuple[list[int], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    sizes, edges = _random_graphs(rng, 10)
    write_ogb_raw(
        dataset_dir,
        edges=edges,
        num_nodes=sizes,
        labels=rng.integers(0, 37, size=(10, 1)),
        split=("species", {"train": list(range(6)), "valid": [6, 7], "test": [8, 9]}),
        edge_feat=[rng.random((e.shape[1], 7)) for e in edges],
    )
    return sizes, edges


def test_molpcba_generated(offline_paths):
    edges = write_molpcba(offline_paths.cache / "ogbg_molpcba")
    data = load_graph_dataset(resolve_dataset("ogbg-molpcba"), offline_paths, rwse_steps=3)
    assert (data.num_tasks, data.num_outputs, data.eval_metric) == (128, 128, "ap")
    g = data.dataset[3]
    assert g.y.shape == (1, 128) and g.y.dtype == torch.float32
    assert torch.isnan(g.y).any()
    assert g.edge_index.shape[1] == 2 * edges[3].shape[1]
    assert g.rwse.shape == (g.num_nodes, 3)
    assert len(data.train) == 8 and len(data.test) == 2


def test_ppa_generated(offline_paths):
    sizes, edges = write_ppa(offline_paths.cache / "ogbg_ppa")
    data = load_graph_dataset(resolve_dataset("ogbg-ppa"), offline_paths)
    assert (data.num_outputs, data.eval_metric) == (37, "acc")
    g = data.dataset[2]
    assert g.x.dtype == torch.long and torch.equal(g.x, torch.zeros(sizes[2], dtype=torch.long))
    assert g.edge_attr.shape == (2 * edges[2].shape[1], 7)
    assert g.edge_attr.dtype == torch.float32


def _ast(rng: np.random.Generator, n: int):
    """A random tree with nodes numbered in DFS pre-order (as code2 stores them)."""
    parent, depth, stack = [-1], [0], [0]
    for i in range(1, n):
        keep = int(rng.integers(1, len(stack) + 1))
        del stack[keep:]
        parent.append(stack[-1])
        depth.append(depth[stack[-1]] + 1)
        stack.append(i)
    edges = np.array([parent[1:], list(range(1, n))], dtype=np.int64).reshape(2, n - 1)
    return edges, np.array(depth)


def write_code2(dataset_dir: Path, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    sizes = [12, 9, 15, CODE2_MAX_NODES + 50, 10, 11, 8, 13]
    names = [
        ["get", "value"],
        ["set", "value"],
        ["get", "name", "of", "the", "thing", "x"],
        ["get", "value"],
        ["run"],
        ["only", "in", "valid"],
        ["get"],
        ["zzz", "test"],
    ]
    edges, depths, attributed = [], [], []
    for n in sizes:
        e, d = _ast(rng, n)
        edges.append(e)
        depths.append(np.minimum(d, 30))
        attributed.append((rng.random(n) < 0.5).astype(np.int64))
    write_ogb_raw(
        dataset_dir,
        edges=edges,
        num_nodes=sizes,
        labels=[" ".join(seq) for seq in names],
        split=("project", {"train": [0, 1, 2, 3, 4], "valid": [5, 6], "test": [7]}),
        node_feat=[np.stack([rng.integers(0, 5, n), rng.integers(0, 7, n)], 1) for n in sizes],
        node_files={
            "node_is_attributed": attributed,
            "node_dfs_order": [np.arange(n) for n in sizes],
            "node_depth": depths,
        },
        mappings={"typeidx2type.csv.gz": 5, "attridx2attr.csv.gz": 7},
    )
    return names


def test_code2_generated_twice_identical(offline_paths, tmp_path):
    names = write_code2(offline_paths.cache / "ogbg_code2")
    first = load_graph_dataset(resolve_dataset("ogbg-code2"), offline_paths)
    second = load_graph_dataset(resolve_dataset("ogbg-code2"), offline_paths)
    assert first.vocab == second.vocab
    # vocabulary from the train split only, most frequent first, then UNK and EOS
    assert first.vocab.idx2vocab[:2] == ("get", "value")
    assert "valid" not in first.vocab.idx2vocab and "zzz" not in first.vocab.idx2vocab
    assert first.vocab.idx2vocab[-2:] == ("__UNK__", "__EOS__")
    assert first.num_outputs == first.vocab.size
    task = first.task
    assert (task.num_node_types, task.num_node_attributes, first.eval_metric) == (5, 7, "F1")
    assert (task.head, task.target, task.seq_len, task.num_outputs) == (
        "sequence",
        "sequence",
        5,
        first.vocab.size,
    )
    for i in range(len(names)):
        a, b = first.dataset[i], second.dataset[i]
        assert torch.equal(a.y_arr, b.y_arr) and torch.equal(a.edge_index, b.edge_index)
        assert a.y == names[i]  # the full reference sequence stays for the F1 evaluator
    v = first.vocab.vocab2idx
    assert first.dataset[0].y_arr.tolist() == [[v["get"], v["value"]] + [first.vocab.eos] * 3]
    assert first.dataset[7].y_arr[0, 0] == first.vocab.unk  # a test-only token
    assert first.vocab.decode(first.dataset[0].y_arr[0]) == ["get", "value"]
    big = first.dataset[3]  # clipped to 1000 nodes
    assert big.num_nodes == CODE2_MAX_NODES and big.x.shape[0] == CODE2_MAX_NODES
    assert big.node_depth.shape[0] == CODE2_MAX_NODES
    assert int(big.edge_index.max()) < CODE2_MAX_NODES
    assert big.edge_attr.dtype == torch.long and big.edge_attr.shape[1] == 2


def test_augment_edge_matches_ogb_layout():
    from torch_geometric.data import Data

    data = Data(
        edge_index=torch.tensor([[0, 0, 1], [1, 3, 2]]),
        node_is_attributed=torch.tensor([[0], [0], [1], [1]]),
        num_nodes=4,
    )
    out = augment_edge(data)
    assert out.edge_index.tolist() == [[0, 0, 1, 1, 3, 2, 2, 3], [1, 3, 2, 0, 0, 1, 3, 2]]
    assert out.edge_attr.tolist() == [[0, 0]] * 3 + [[0, 1]] * 3 + [[1, 0], [1, 1]]


def test_vocab_mapping_is_frequency_ordered():
    vocab = get_vocab_mapping([["a", "b"], ["b", "c"], ["b", "a"]], num_vocab=2)
    assert vocab.idx2vocab == ("b", "a", "__UNK__", "__EOS__")
    assert vocab.encode(["c", "b"]).tolist() == [[2, 0, 3, 3, 3]]


# --------------------------------------------------------------------------------------------
# RWSE (preprocessing: hamgraph.data.rwse)


def _random_graph(gen: torch.Generator, n: int, m: int) -> torch.Tensor:
    src = torch.randint(0, n, (m,), generator=gen)
    dst = torch.randint(0, n, (m,), generator=gen)
    return torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)


def test_rwse_dense_hand_values():
    # a triangle: return after 1 step impossible, after 2 steps 1/2, after 3 steps 1/4
    ei = torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]])
    pe = rwse_dense(ei, 3, 3)
    assert torch.allclose(pe, torch.tensor([[0.0, 0.5, 0.25]] * 3))


def test_rwse_batched_and_sparse_match_dense(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    sizes = [1, 4, 7, 3, 12, 30, 5]  # includes an isolated node (n = 1)
    graphs = [
        _random_graph(gen, n, max(n, 1)) if n > 1 else torch.zeros(2, 0, dtype=torch.long)
        for n in sizes
    ]
    edge_index = torch.cat(graphs, dim=1)
    node_slices = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    edge_slices = torch.tensor([0, *torch.tensor([g.shape[1] for g in graphs]).cumsum(0).tolist()])
    expected = torch.cat([rwse_dense(g, n, 6) for g, n in zip(graphs, sizes, strict=True)])
    got = rwse_all(edge_index, edge_slices, node_slices, 6)
    assert torch.allclose(got, expected, atol=1e-6)
    # graphs above the dense cap take the sparse path (small blocks)
    monkeypatch.setattr(rwse_module, "DENSE_MAX_NODES", 6)
    monkeypatch.setattr(rwse_module, "SPARSE_BLOCK", 5)
    assert torch.allclose(rwse_all(edge_index, edge_slices, node_slices, 6), expected, atol=1e-6)
    assert torch.allclose(rwse_sparse(graphs[5], 30, 6, block=7), expected[-35:-5], atol=1e-6)


def test_rwse_is_cached_on_disk(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    edge_index = torch.cat([_random_graph(gen, 5, 6), _random_graph(gen, 4, 4)], dim=1)
    kwargs = {
        "edge_index": edge_index,
        "edge_slices": torch.tensor([0, 12, 20]),
        "node_slices": torch.tensor([0, 5, 9]),
        "steps": 4,
    }
    calls = []
    real = rwse_module.rwse_all
    monkeypatch.setattr(rwse_module, "rwse_all", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "processed" / "rwse_k4.pt"
    first = cached_rwse(path, **kwargs)
    mtime = path.stat().st_mtime_ns
    second = cached_rwse(path, **kwargs)
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    assert torch.equal(first, second)
    other = cached_rwse(tmp_path / "processed" / "rwse_k3.pt", **{**kwargs, "steps": 3})
    assert len(calls) == 2 and torch.allclose(other, first[:, :3])
    # a stale file (different graphs) is recomputed
    cached_rwse(path, **{**kwargs, "node_slices": torch.tensor([0, 6, 10])})
    assert len(calls) == 3
    assert not list(path.parent.glob("*.tmp"))
