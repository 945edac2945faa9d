"""Node-classification datasets: one loader for every node entry of the registry.

`load_node_dataset(info, paths)` returns a `NodeDataset` prepared the same way for every
dataset (REFERENCE §2): undirected, self loops removed, coalesced (the trainer adds self loops
once), float32 features (row-normalized where the protocol says so), and the protocol's splits.

Raw files come from the cache or are copied from the read-only mirror (`hamgraph.data.mirror`);
the real PyG / OGB dataset classes read them and keep their `processed/` files in the cache, so
the second load is fast. The filtered chameleon / squirrel npz files have no PyG class and are
read here; CSBM graphs are generated (cheap, deterministic). A small in-process cache returns
the same `NodeDataset` object for repeated loads in one process: treat its tensors as read-only.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

from hamgraph.data import splits as split_builders
from hamgraph.data.csbm import generate_csbm
from hamgraph.data.mirror import dataset_lock, fetch_raw_files, quiet_loader
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import DATASETS, SPLIT_SEED, DatasetInfo
from hamgraph.data.splits import NodeSplit
from hamgraph.errors import ConfigError, UnknownNameError

log = logging.getLogger(__name__)

__all__ = ["NODE_SOURCES", "NodeDataset", "NodeSource", "NodeSplit", "load_node_dataset"]


@dataclass(frozen=True)
class NodeDataset:
    """A prepared node-classification dataset and its protocol's splits."""

    info: DatasetInfo
    x: Tensor  # [N, F] float32, preprocessed per the protocol
    y: Tensor  # [N] long
    edge_index: Tensor  # [2, E] undirected (both directions), coalesced, no self loops
    num_classes: int
    splits: list[NodeSplit]  # run i uses splits[i % len(splits)]

    @property
    def num_nodes(self) -> int:
        return int(self.x.size(0))

    @property
    def num_features(self) -> int:
        return int(self.x.size(1))

    def split_for_run(self, run: int) -> NodeSplit:
        """The split of protocol run `run` (0-based): splits[run % number of splits]."""
        if run < 0:
            raise ValueError(f"run must be >= 0, got {run}")
        return self.splits[run % len(self.splits)]


@dataclass
class _Raw:
    """What a dataset class gives us before the common preparation."""

    x: Tensor
    y: Tensor
    edge_index: Tensor
    masks: dict[str, Tensor]  # train_mask / val_mask / test_mask / stopping_mask, if shipped
    split_idx: dict[str, Tensor] | None = None  # OGB's official split


@dataclass(frozen=True)
class NodeSource:
    """Where a dataset's files live (relative to `<root>/<dir_name>`) and how to read them."""

    dir_name: str
    files: tuple[str, ...]
    url: str
    read: Callable[[Path], _Raw]  # read(data root) after the files are in the cache


# ---------------------------------------------------------------------------------------------
# readers: one per dataset class; each builds the PyG / OGB class on the data root


def _from_pyg(data, split_idx: dict[str, Tensor] | None = None) -> _Raw:
    masks = {
        key: data[key]
        for key in ("train_mask", "val_mask", "test_mask", "stopping_mask")
        if key in data
    }
    return _Raw(data.x, data.y.view(-1), data.edge_index, masks, split_idx)


def _planetoid(name: str) -> Callable[[Path], _Raw]:
    def read(root: Path) -> _Raw:
        from torch_geometric.datasets import Planetoid

        return _from_pyg(Planetoid(str(root), name)[0])

    return read


def _amazon(name: str) -> Callable[[Path], _Raw]:
    def read(root: Path) -> _Raw:
        from torch_geometric.datasets import Amazon

        return _from_pyg(Amazon(str(root), name)[0])

    return read


def _coauthor(name: str) -> Callable[[Path], _Raw]:
    def read(root: Path) -> _Raw:
        from torch_geometric.datasets import Coauthor

        return _from_pyg(Coauthor(str(root), name)[0])

    return read


def _heterophilous(name: str) -> Callable[[Path], _Raw]:
    def read(root: Path) -> _Raw:
        from torch_geometric.datasets import HeterophilousGraphDataset

        return _from_pyg(HeterophilousGraphDataset(str(root), name)[0])

    return read


def _wikics(root: Path) -> _Raw:
    from torch_geometric.datasets import WikiCS

    return _from_pyg(WikiCS(str(root / "WikiCS"), is_undirected=True)[0])


def _allow_pyg_storage_in_torch_load() -> None:
    """ogb 1.3.6 calls torch.load without weights_only=False (torch >= 2.6 refuses Data)."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    torch.serialization.add_safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage])


class _NoInput:
    """stdin for OGB: its interactive questions get EOF instead of hanging a batch job."""

    def readline(self, *_args) -> str:
        return ""

    def read(self, *_args) -> str:
        return ""


def _ogbn_arxiv(root: Path) -> _Raw:
    from ogb.nodeproppred import PygNodePropPredDataset

    _allow_pyg_storage_in_torch_load()
    stdin, sys.stdin = sys.stdin, _NoInput()  # type: ignore[assignment]
    try:
        dataset = PygNodePropPredDataset("ogbn-arxiv", root=str(root))
        split_idx = dataset.get_idx_split()
    finally:
        sys.stdin = stdin
    return _from_pyg(dataset[0], split_idx)


def _filtered_npz(name: str) -> Callable[[Path], _Raw]:
    """The filtered chameleon / squirrel of Platonov et al. (2023); no PyG class exists."""

    def read(root: Path) -> _Raw:
        path = root / f"{name}_filtered" / "raw" / f"{name}_filtered.npz"
        with np.load(path) as raw:
            x = torch.from_numpy(np.asarray(raw["node_features"]))
            y = torch.from_numpy(np.asarray(raw["node_labels"]))
            edges = torch.from_numpy(np.asarray(raw["edges"])).long()  # [E, 2], one direction
            masks = {
                f"{part}_mask": torch.from_numpy(np.asarray(raw[f"{part}_masks"])).t()  # [N, 10]
                for part in ("train", "val", "test")
            }
        return _Raw(x, y, edges.t().contiguous(), masks)

    return read


_PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"
_GNN_BENCHMARK_URL = "https://github.com/shchur/gnn-benchmark/raw/master/data/npz/"
_HETEROPHILOUS_URL = "https://github.com/yandex-research/heterophilous-graphs/raw/main/data"


def _planetoid_source(name: str) -> NodeSource:
    parts = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
    files = tuple(f"raw/ind.{name.lower()}.{part}" for part in parts)
    return NodeSource(name, files, _PLANETOID_URL, _planetoid(name))


def _heterophilous_source(name: str) -> NodeSource:
    dir_name = name.lower().replace("-", "_")
    return NodeSource(
        dir_name,
        (f"raw/{dir_name}.npz",),
        f"{_HETEROPHILOUS_URL}/{dir_name}.npz",
        _heterophilous(name),
    )


def _filtered_source(name: str) -> NodeSource:
    return NodeSource(
        f"{name}_filtered",
        (f"raw/{name}_filtered.npz",),
        f"{_HETEROPHILOUS_URL}/{name}_filtered.npz",
        _filtered_npz(name),
    )


_ARXIV_FILES = (
    "RELEASE_v1.txt",
    *(
        f"raw/{f}.csv.gz"
        for f in ("edge", "node-feat", "node-label", "num-node-list", "num-edge-list", "node_year")
    ),
    *(f"split/time/{part}.csv.gz" for part in ("train", "valid", "test")),
)

NODE_SOURCES: dict[str, NodeSource] = {
    "cora": _planetoid_source("Cora"),
    "citeseer": _planetoid_source("CiteSeer"),
    "pubmed": _planetoid_source("PubMed"),
    "wikics": NodeSource(
        "WikiCS",
        ("raw/data.json",),
        "https://github.com/pmernyei/wiki-cs-dataset/raw/master/dataset/data.json",
        _wikics,
    ),
    "coauthor-cs": NodeSource(
        "CS",
        ("raw/ms_academic_cs.npz",),
        _GNN_BENCHMARK_URL + "ms_academic_cs.npz",
        _coauthor("CS"),
    ),
    "coauthor-physics": NodeSource(
        "Physics",
        ("raw/ms_academic_phy.npz",),
        _GNN_BENCHMARK_URL + "ms_academic_phy.npz",
        _coauthor("Physics"),
    ),
    "amazon-computer": NodeSource(
        "Computers",
        ("raw/amazon_electronics_computers.npz",),
        _GNN_BENCHMARK_URL + "amazon_electronics_computers.npz",
        _amazon("Computers"),
    ),
    "amazon-photo": NodeSource(
        "Photo",
        ("raw/amazon_electronics_photo.npz",),
        _GNN_BENCHMARK_URL + "amazon_electronics_photo.npz",
        _amazon("Photo"),
    ),
    "amazon-ratings": _heterophilous_source("Amazon-ratings"),
    "minesweeper": _heterophilous_source("Minesweeper"),
    "roman-empire": _heterophilous_source("Roman-empire"),
    "tolokers": _heterophilous_source("Tolokers"),
    "questions": _heterophilous_source("Questions"),
    "chameleon": _filtered_source("chameleon"),
    "squirrel": _filtered_source("squirrel"),
    "ogbn-arxiv": NodeSource(
        "ogbn_arxiv",
        _ARXIV_FILES,
        "http://snap.stanford.edu/ogb/data/nodeproppred/arxiv.zip",
        _ogbn_arxiv,
    ),
}
# variants (e.g. cora-public) read the files of their base dataset
NODE_SOURCES.update(
    {
        info.name: NODE_SOURCES[info.base]
        for info in DATASETS.values()
        if info.base is not None and info.base in NODE_SOURCES
    }
)


# ---------------------------------------------------------------------------------------------
# preparation shared by every dataset


def _row_normalize(x: Tensor) -> Tensor:
    """PyG's NormalizeFeatures: shift to >= 0, divide each row by max(row sum, 1)."""
    x = x - x.min()
    return x / x.sum(dim=-1, keepdim=True).clamp(min=1.0)


def _prepare_graph(edge_index: Tensor, num_nodes: int) -> Tensor:
    edge_index = to_undirected(edge_index.long(), num_nodes=num_nodes)
    edge_index, _ = remove_self_loops(edge_index)
    return coalesce(edge_index, num_nodes=num_nodes)


def _splits(info: DatasetInfo, raw: _Raw, num_classes: int) -> list[NodeSplit]:
    if info.split == "per-class-20/500/1000":
        return [split_builders.per_class_split(raw.y, num_classes, seed=SPLIT_SEED)]
    if info.split == "random-60/20/20":
        return [split_builders.random_split(raw.y.numel(), 0.6, 0.2, seed=SPLIT_SEED)]
    if info.split == "wikics-20":
        m = raw.masks
        return split_builders.wikics_splits(
            m["train_mask"], m["val_mask"], m["stopping_mask"], m["test_mask"]
        )
    if info.split == "fixed-10":
        m = raw.masks
        return split_builders.mask_splits(m["train_mask"], m["val_mask"], m["test_mask"])
    if info.split == "planetoid-public":
        m = raw.masks
        if not {"train_mask", "val_mask", "test_mask"} <= m.keys():
            raise ConfigError(f"dataset {info.name!r}: split 'planetoid-public' needs Planetoid")
        public = split_builders.planetoid_public_split
        return [public(m["train_mask"], m["val_mask"], m["test_mask"])]
    if info.split == "ogb-official":
        if raw.split_idx is None:
            raise ConfigError(f"dataset {info.name!r}: split 'ogb-official' needs an OGB dataset")
        return [split_builders.index_split(raw.split_idx)]
    raise ConfigError(f"dataset {info.name!r}: unknown split protocol {info.split!r}")


def _read_raw(info: DatasetInfo, paths: DataPaths) -> _Raw:
    if info.csbm is not None:
        x, y, edge_index = generate_csbm(info.csbm)
        return _Raw(x, y, edge_index, {})
    source = NODE_SOURCES.get(info.name)
    if source is None or info.task != "node":
        raise UnknownNameError(
            f"{info.name!r} is not a node-classification dataset; "
            f"valid names: {', '.join(NODE_SOURCES)}, csbm-h<0..1>"
        )
    with dataset_lock(paths, source.dir_name):
        fetch_raw_files(source.dir_name, source.files, paths, download=source.read, url=source.url)
        log.debug("reading %s from %s", info.name, paths.cache / source.dir_name)
        with quiet_loader():
            return source.read(paths.cache)


@functools.lru_cache(maxsize=4)
def _load_cached(info: DatasetInfo, paths: DataPaths) -> NodeDataset:
    plugin_graph = None
    if info.plugin is not None:  # a user's dataset (hamgraph.data.plugin)
        from hamgraph.data.plugin import read_plugin_raw

        x, y, edge_index, plugin_graph = read_plugin_raw(info, paths)
        raw = _Raw(x, y, edge_index, {})
    else:
        raw = _read_raw(info, paths)
    num_nodes = int(raw.x.size(0))
    x = raw.x.to(torch.float32)
    if info.row_normalize:
        x = _row_normalize(x)
    y = raw.y.view(-1).long()
    num_classes = int(y.max()) + 1
    if info.plugin is not None:
        from hamgraph.data.plugin import plugin_splits

        splits = plugin_splits(info.plugin, plugin_graph, y, num_classes)
    else:
        splits = _splits(info, raw, num_classes)
    for split in splits:
        split.check(num_nodes)
    return NodeDataset(
        info=info,
        x=x.contiguous(),
        y=y,
        edge_index=_prepare_graph(raw.edge_index, num_nodes),
        num_classes=num_classes,
        splits=splits,
    )


def load_node_dataset(info: DatasetInfo, paths: DataPaths) -> NodeDataset:
    """Load, prepare and split a node-classification dataset (REFERENCE §2).

    Raises DatasetUnavailableError (naming the missing files) when the raw files are neither in
    the cache nor in the mirror and cannot be downloaded; UnknownNameError for graph datasets.
    Repeated calls in one process return the same object (its tensors must not be modified).
    """
    return _load_cached(info, paths)
