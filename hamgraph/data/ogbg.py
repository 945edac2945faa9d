"""Graph-classification datasets of OGB: ogbg-molhiv, ogbg-molpcba, ogbg-ppa, ogbg-code2.

`load_graph_dataset(info, paths, rwse_steps=0)` returns a `GraphDataset`: OGB's own
`PygGraphPropPredDataset` (so processing is exactly OGB's), its official split, the OGB
Evaluator metric, and the per-dataset preparation of REFERENCE §3:

- ppa: graphs have no node features; the model uses one learned node vector.
- code2: graphs clipped to their first 1000 nodes (DFS order, so the clipped graph is a
  connected sub-tree), inverse AST and next-token edges added (`augment_edge`, edge_attr
  [E, 2] = (is next-token edge, is inverse)), and the target sequence encoded with a
  vocabulary built from the *train* split only (top 5000 tokens + __UNK__ + __EOS__, length 5).
  The vocabulary belongs to the returned `GraphDataset`; nothing global grows, so loading twice
  in one process gives identical results.
- RWSE (optional): random-walk return probabilities, computed once per dataset and step count
  and cached next to OGB's processed file (`hamgraph.data.rwse`).

What differs between the kinds of OGB graph datasets (mol / ppa / code2: encoders, head,
target, preparation) is one row each of `GRAPH_KINDS`; what differs between datasets is one
row each of `GRAPH_SOURCES` (like OGB's master.csv). A model never sees a `GraphDataset`: it
receives the `GraphTask` (`hamgraph.specs`) that `GraphDataset.task` builds from those rows.

Raw files come from the cache or are copied from the read-only mirror (`hamgraph.data.mirror`);
OGB writes `processed/` in the cache. OGB's interactive "update the dataset?" question never
blocks: `RELEASE_v1.txt` is provided and `input()` raises DatasetUnavailableError while OGB runs.
"""

from __future__ import annotations

import builtins
import contextlib
import gzip
import logging
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import subgraph

from hamgraph.atomic import atomic_write_text
from hamgraph.data.mirror import dataset_lock, ensure_raw_files, fetch_raw_files, quiet_loader
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import DatasetInfo
from hamgraph.data.rwse import cached_rwse
from hamgraph.errors import DatasetUnavailableError, UnknownNameError
from hamgraph.specs import EdgeEncoderName, GraphTask, HeadName, NodeEncoderName, TargetName

log = logging.getLogger(__name__)

__all__ = [
    "GRAPH_KINDS",
    "GRAPH_SOURCES",
    "Code2Transform",
    "Code2Vocab",
    "GraphDataset",
    "GraphKindRow",
    "GraphSource",
    "augment_edge",
    "clip_graph",
    "get_vocab_mapping",
    "graph_task",
    "load_graph_dataset",
]

GraphKind = Literal["mol", "ppa", "code2"]
RELEASE_FILE = "RELEASE_v1.txt"  # OGB asks for keyboard input when this file is missing

CODE2_NUM_VOCAB = 5000  # target vocabulary: the most frequent train tokens (+ UNK + EOS)
CODE2_MAX_SEQ_LEN = 5  # predicted sub-tokens per method name
CODE2_MAX_NODES = 1000  # graphs are clipped to their first 1000 nodes
CODE2_UNK = "__UNK__"
CODE2_EOS = "__EOS__"


@dataclass(frozen=True)
class GraphSource:
    """Where an OGB graph dataset's files live (relative to `<cache>/<dir_name>`)."""

    ogb_name: str  # the name in ogb's master.csv
    dir_name: str  # OGB's folder name: "ogbg-molhiv" -> "ogbg_molhiv"
    kind: GraphKind
    split: str  # the official split folder under split/
    raw: tuple[str, ...]  # raw/*.csv.gz files OGB reads
    extra: tuple[str, ...] = ()  # other files the loader reads (code2 mappings)
    url: str = ""
    head_layers: int = 1  # depth of an "mlp" head (molhiv: 3, i.e. d-d/2-d/4-1; molpcba: 1)

    @property
    def files(self) -> list[str]:
        splits = [f"split/{self.split}/{part}.csv.gz" for part in ("train", "valid", "test")]
        return [*(f"raw/{name}.csv.gz" for name in self.raw), *splits, *self.extra]


_MOL_RAW = ("edge", "node-feat", "edge-feat", "num-node-list", "num-edge-list", "graph-label")
_OGB_URL = "http://snap.stanford.edu/ogb/data/graphproppred/"

GRAPH_SOURCES: dict[str, GraphSource] = {
    "ogbg-molhiv": GraphSource(
        "ogbg-molhiv",
        "ogbg_molhiv",
        "mol",
        "scaffold",
        _MOL_RAW,
        url=_OGB_URL + "csv_mol_download/hiv.zip",
        head_layers=3,
    ),
    "ogbg-molpcba": GraphSource(
        "ogbg-molpcba",
        "ogbg_molpcba",
        "mol",
        "scaffold",
        _MOL_RAW,
        url=_OGB_URL + "csv_mol_download/pcba.zip",
    ),
    "ogbg-ppa": GraphSource(
        "ogbg-ppa",
        "ogbg_ppa",
        "ppa",
        "species",
        ("edge", "edge-feat", "num-node-list", "num-edge-list", "graph-label"),
        url=_OGB_URL + "ogbg_ppi_medium.zip",
    ),
    "ogbg-code2": GraphSource(
        "ogbg-code2",
        "ogbg_code2",
        "code2",
        "project",
        (
            "edge",
            "node-feat",
            "num-node-list",
            "num-edge-list",
            "graph-label",
            "node_is_attributed",
            "node_dfs_order",
            "node_depth",
        ),
        extra=("mapping/typeidx2type.csv.gz", "mapping/attridx2attr.csv.gz"),
        url=_OGB_URL + "code2.zip",
    ),
}

# OGB Evaluator key of each registry metric
OGB_METRIC = {"rocauc": "rocauc", "ap": "ap", "accuracy": "acc", "f1": "F1"}


# --------------------------------------------------------------------------------------------
# code2: vocabulary, target encoding, graph clipping, edge augmentation (OGB's example utils)


@dataclass(frozen=True)
class Code2Vocab:
    """The target vocabulary of one loaded code2 dataset (never shared, never grown)."""

    idx2vocab: tuple[str, ...]  # top train tokens (most frequent first), then UNK, then EOS
    max_seq_len: int = CODE2_MAX_SEQ_LEN

    @property
    def vocab2idx(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.idx2vocab)}

    @property
    def size(self) -> int:
        return len(self.idx2vocab)

    @property
    def unk(self) -> int:
        return self.size - 2

    @property
    def eos(self) -> int:
        return self.size - 1

    def encode(self, seq: Sequence[str], vocab2idx: dict[str, int] | None = None) -> Tensor:
        """A token list -> [1, max_seq_len] long (truncated, padded with EOS, UNK if unknown)."""
        lookup = self.vocab2idx if vocab2idx is None else vocab2idx
        padded = list(seq[: self.max_seq_len])
        padded += [CODE2_EOS] * (self.max_seq_len - len(padded))
        return torch.tensor([[lookup.get(word, self.unk) for word in padded]], dtype=torch.long)

    def decode(self, arr: Tensor) -> list[str]:
        """Predicted indices [max_seq_len] -> tokens up to the first EOS (OGB's decoder)."""
        tokens: list[str] = []
        for idx in arr.tolist():
            if idx == self.eos:
                break
            tokens.append(self.idx2vocab[idx])
        return tokens


def get_vocab_mapping(seq_list: Sequence[Sequence[str]], num_vocab: int) -> Code2Vocab:
    """The `num_vocab` most frequent tokens (ties: first seen first) + UNK + EOS.

    Same order as OGB's `get_vocab_mapping`; unlike it, UNK / EOS follow the kept tokens
    directly when fewer than `num_vocab` distinct tokens exist (OGB would leave a gap).
    """
    counts = Counter(word for seq in seq_list for word in seq)  # insertion order = first seen
    words = list(counts)
    cnt = np.array([counts[w] for w in words], dtype=np.int64)
    top = np.argsort(-cnt, kind="stable")[:num_vocab]
    kept = [words[i] for i in top]
    if kept:
        log.info(
            "code2 vocabulary: %d tokens cover %.4f of the train tokens",
            len(kept),
            float(cnt[top].sum()) / float(cnt.sum()),
        )
    return Code2Vocab(idx2vocab=(*kept, CODE2_UNK, CODE2_EOS))


_NODE_ATTRS = ("x", "node_is_attributed", "node_dfs_order", "node_depth", "rwse")


def clip_graph(data: Data, max_nodes: int) -> Data:
    """Keep the first `max_nodes` nodes (and the edges between them) of a graph."""
    num_nodes = int(data.num_nodes)
    if num_nodes <= max_nodes:
        return data
    edge_attr = data.edge_attr if "edge_attr" in data else None
    edge_index, edge_attr = subgraph(
        torch.arange(max_nodes), data.edge_index, edge_attr, num_nodes=num_nodes
    )
    data.edge_index = edge_index
    if edge_attr is not None:
        data.edge_attr = edge_attr
    for key in _NODE_ATTRS:
        if key in data:
            data[key] = data[key][:max_nodes]
    data.num_nodes = max_nodes
    return data


def augment_edge(data: Data) -> Data:
    """Add inverse AST edges and (both directions of) next-token edges, as OGB's code2 example.

    edge_attr [E, 2] long: column 0 = AST edge (0) / next-token edge (1), column 1 = original
    direction (0) / inverse (1). The nodes are stored in DFS order, so the attributed nodes in
    index order are the tokens in source order.
    """
    ast = data.edge_index
    ast_inv = ast.flip(0)
    tokens = torch.nonzero(data.node_is_attributed.view(-1) == 1).view(-1)
    nxt = torch.stack([tokens[:-1], tokens[1:]], dim=0)
    nxt_inv = nxt.flip(0)

    def attr(n: int, kind: int, inverse: int) -> Tensor:
        return torch.tensor([kind, inverse], dtype=torch.long).expand(n, 2)

    data.edge_index = torch.cat([ast, ast_inv, nxt, nxt_inv], dim=1)
    data.edge_attr = torch.cat(
        [
            attr(ast.size(1), 0, 0),
            attr(ast.size(1), 0, 1),
            attr(nxt.size(1), 1, 0),
            attr(nxt.size(1), 1, 1),
        ],
        dim=0,
    )
    return data


class Code2Transform:
    """clip to 1000 nodes -> augment edges -> y_arr [1, 5] (a picklable DataLoader transform)."""

    def __init__(self, vocab: Code2Vocab, max_nodes: int = CODE2_MAX_NODES) -> None:
        self.vocab = vocab
        self.max_nodes = max_nodes
        self._vocab2idx = vocab.vocab2idx

    def __call__(self, data: Data) -> Data:
        data = augment_edge(clip_graph(data, self.max_nodes))
        data.y_arr = self.vocab.encode(data.y, self._vocab2idx)
        return data


class PpaTransform:
    """ppa graphs have no node features: x = zeros, indexing the one learned node vector."""

    def __call__(self, data: Data) -> Data:
        data.x = torch.zeros(int(data.num_nodes), dtype=torch.long)
        return data


# --------------------------------------------------------------------------------------------
# The per-kind table: one row per kind of OGB graph dataset


@dataclass(frozen=True)
class Prepared:
    """What preparing one kind of dataset found out (sizes known only after loading)."""

    num_outputs: int  # per graph: tasks (mol), classes (ppa), vocabulary size per token (code2)
    vocab: Code2Vocab | None = None  # code2 only
    seq_len: int = 1  # tokens predicted per graph (code2)
    num_node_types: int = 0  # code2 only: AST node types
    num_node_attributes: int = 0  # code2 only: AST node attributes


def _prepare_mol(dataset: Any, split_idx: dict[str, Tensor]) -> Prepared:
    return Prepared(num_outputs=int(dataset.num_tasks))


def _prepare_ppa(dataset: Any, split_idx: dict[str, Tensor]) -> Prepared:
    dataset.transform = PpaTransform()
    return Prepared(num_outputs=int(dataset.num_classes))  # 37 species


def _prepare_code2(dataset: Any, split_idx: dict[str, Tensor]) -> Prepared:
    labels = dataset._data.y  # a list of token lists, one per graph
    vocab = get_vocab_mapping([labels[i] for i in split_idx["train"].tolist()], CODE2_NUM_VOCAB)
    dataset.transform = Code2Transform(vocab)
    mapping = Path(dataset.root) / "mapping"
    x = dataset._data.x
    return Prepared(
        num_outputs=vocab.size,
        vocab=vocab,
        seq_len=vocab.max_seq_len,
        num_node_types=max(
            _read_mapping_size(mapping / "typeidx2type.csv.gz"), int(x[:, 0].max()) + 1
        ),
        num_node_attributes=max(
            _read_mapping_size(mapping / "attridx2attr.csv.gz"), int(x[:, 1].max()) + 1
        ),
    )


@dataclass(frozen=True)
class GraphKindRow:
    """The facts shared by every dataset of one kind (REFERENCE §3)."""

    kind: GraphKind
    node_encoder: NodeEncoderName
    edge_encoder: EdgeEncoderName
    head: HeadName  # the head's family; its depth is the dataset's (`GraphSource.head_layers`)
    target: TargetName  # the loss and the evaluator's input format
    prepare: Callable[[Any, dict[str, Tensor]], Prepared]  # sets the transform, finds the sizes


GRAPH_KINDS: dict[GraphKind, GraphKindRow] = {
    "mol": GraphKindRow("mol", "atom", "bond", "mlp", "binary", _prepare_mol),
    "ppa": GraphKindRow("ppa", "ppa", "ppa", "ppa", "multiclass", _prepare_ppa),
    "code2": GraphKindRow("code2", "ast", "ast", "sequence", "sequence", _prepare_code2),
}


def _graph_source(name: str, task: str = "graph") -> GraphSource:
    source = GRAPH_SOURCES.get(name)
    if source is None or task != "graph":
        raise UnknownNameError(
            f"{name!r} is not a graph-classification dataset; "
            f"valid names: {', '.join(GRAPH_SOURCES)}"
        )
    return source


def graph_task(
    name: str,
    num_outputs: int,
    *,
    rwse_steps: int = 0,
    seq_len: int = 1,
    num_node_types: int = 0,
    num_node_attributes: int = 0,
) -> GraphTask:
    """The GraphTask of dataset `name`: its kind's row and its own row, plus the given sizes.

    `load_graph_dataset` builds every task through here; tests build one without any data.
    """
    source = _graph_source(name)
    row = GRAPH_KINDS[source.kind]
    return GraphTask(
        node_encoder=row.node_encoder,
        edge_encoder=row.edge_encoder,
        head=row.head,
        target=row.target,
        num_outputs=num_outputs,
        head_layers=source.head_layers,
        seq_len=seq_len,
        num_node_types=num_node_types,
        num_node_attributes=num_node_attributes,
        rwse_steps=rwse_steps,
    )


# --------------------------------------------------------------------------------------------
# The dataset value


@dataclass
class GraphDataset:
    """A loaded OGB graph dataset with its official split and what the model / metric need."""

    info: DatasetInfo
    source: GraphSource
    dataset: Any  # ogb PygGraphPropPredDataset (every graph; transform set)
    split_idx: dict[str, Tensor]  # "train" / "valid" / "test" -> graph indices
    num_tasks: int  # OGB's number of tasks (molpcba: 128)
    eval_metric: str  # the OGB Evaluator key: "rocauc" | "ap" | "acc" | "F1"
    task: GraphTask  # all a model and its loss are told about this dataset
    vocab: Code2Vocab | None = None  # code2 only: decodes predicted token indices

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def num_outputs(self) -> int:
        return self.task.num_outputs

    @property
    def rwse_steps(self) -> int:
        return self.task.rwse_steps

    @property
    def root(self) -> Path:
        return Path(self.dataset.root)

    def subset(self, split: Literal["train", "valid", "test"]) -> Any:
        return self.dataset[self.split_idx[split]]

    @property
    def train(self) -> Any:
        return self.subset("train")

    @property
    def val(self) -> Any:
        return self.subset("valid")

    @property
    def test(self) -> Any:
        return self.subset("test")

    def evaluator(self) -> Any:
        from ogb.graphproppred import Evaluator

        return Evaluator(self.source.ogb_name)


# --------------------------------------------------------------------------------------------
# Loading


@contextlib.contextmanager
def _ogb_guards(source: GraphSource, root: Path) -> Iterator[None]:
    """torch.load may read PyG's storage classes; OGB's input() questions raise instead."""
    from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
    from torch_geometric.data.storage import GlobalStorage

    def no_input(prompt: object = "") -> str:
        raise DatasetUnavailableError(
            f"{source.ogb_name}: ogb asked {str(prompt).strip()!r} because "
            f"{root / RELEASE_FILE} is missing or outdated; hamgraph never answers ogb's "
            f"questions: put the release's {RELEASE_FILE} there (or delete {root})"
        )

    with (
        torch.serialization.safe_globals([DataEdgeAttr, DataTensorAttr, GlobalStorage]),
        mock.patch.object(builtins, "input", no_input),
        quiet_loader(),
    ):
        yield


def _download(source: GraphSource):
    """OGB's zip for `source`, unpacked as `<root>/<dir_name>` (used by fetch_raw_files)."""

    def download(root: Path) -> None:
        from ogb.utils.url import download_url, extract_zip

        path = download_url(source.url, str(root))
        extract_zip(path, str(root))
        os.unlink(path)
        unpacked = [p for p in root.iterdir() if p.is_dir()]
        if len(unpacked) == 1 and unpacked[0].name != source.dir_name:
            shutil.move(str(unpacked[0]), str(root / source.dir_name))

    return download


def _ensure_release(source: GraphSource, paths: DataPaths) -> None:
    """Provide RELEASE_v1.txt (from the mirror, else a marker) so ogb never asks a question."""
    target = paths.cache / source.dir_name / RELEASE_FILE
    if target.is_file():
        return
    if paths.mirror is not None and (paths.mirror / source.dir_name / RELEASE_FILE).is_file():
        ensure_raw_files(source.dir_name, [RELEASE_FILE], paths)
        return
    marker = f"{source.ogb_name} raw files provided to hamgraph (release 1 format)\n"
    atomic_write_text(target, marker)


def _read_mapping_size(path: Path) -> int:
    """Rows of an OGB mapping csv.gz (one header line)."""
    with gzip.open(path, "rt") as handle:
        return max(sum(1 for _ in handle) - 1, 0)


def _open_ogb(source: GraphSource, paths: DataPaths) -> tuple[Any, dict[str, Tensor]]:
    from ogb.graphproppred import PygGraphPropPredDataset

    with dataset_lock(paths, source.dir_name):
        root = fetch_raw_files(
            source.dir_name, source.files, paths, download=_download(source), url=source.url
        )
        _ensure_release(source, paths)
        log.debug("loading %s from %s", source.ogb_name, root)
        with _ogb_guards(source, root):
            dataset = PygGraphPropPredDataset(source.ogb_name, root=str(paths.cache))
            split_idx = dataset.get_idx_split()
    split_idx = {
        key: torch.as_tensor(split_idx[key], dtype=torch.long) for key in ("train", "valid", "test")
    }
    return dataset, split_idx


def _node_slices(dataset: Any) -> Tensor:
    """Node offsets of every graph of a collated InMemoryDataset ([num_graphs + 1])."""
    if "x" in dataset.slices:
        return dataset.slices["x"]
    counts = torch.tensor([int(dataset.get(i).num_nodes) for i in range(len(dataset))])
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])


def _attach_rwse(dataset: Any, steps: int) -> None:
    """Compute (or read the cached) RWSE and store it as the node attribute `rwse`."""
    node_slices = _node_slices(dataset)
    pe = cached_rwse(
        Path(dataset.processed_dir) / f"rwse_k{steps}.pt",
        edge_index=dataset._data.edge_index,
        edge_slices=dataset.slices["edge_index"],
        node_slices=node_slices,
        steps=steps,
    )
    dataset._data.rwse = pe
    dataset.slices["rwse"] = node_slices
    dataset._data_list = None  # graphs separated before this would lack `rwse`


def load_graph_dataset(info: DatasetInfo, paths: DataPaths, rwse_steps: int = 0) -> GraphDataset:
    """Load an OGB graph-classification dataset prepared as REFERENCE §3 says.

    Raises DatasetUnavailableError naming the missing files when the raw files are neither in
    the cache nor in the mirror (and cannot be downloaded), UnknownNameError for other datasets.
    Each call builds a fresh dataset object (nothing global), so loading twice is identical.
    """
    source = _graph_source(info.name, info.task)
    if rwse_steps < 0:
        raise ValueError(f"rwse_steps must be >= 0, got {rwse_steps}")
    dataset, split_idx = _open_ogb(source, paths)
    if rwse_steps:
        with dataset_lock(paths, source.dir_name):
            _attach_rwse(dataset, rwse_steps)

    prepared = GRAPH_KINDS[source.kind].prepare(dataset, split_idx)
    return GraphDataset(
        info=info,
        source=source,
        dataset=dataset,
        split_idx=split_idx,
        num_tasks=int(dataset.num_tasks),
        eval_metric=OGB_METRIC[info.metric],
        task=graph_task(
            info.name,
            prepared.num_outputs,
            rwse_steps=rwse_steps,
            seq_len=prepared.seq_len,
            num_node_types=prepared.num_node_types,
            num_node_attributes=prepared.num_node_attributes,
        ),
        vocab=prepared.vocab,
    )
