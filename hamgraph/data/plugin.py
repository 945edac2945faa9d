"""Datasets named by the user (`hamgraph.plugins`): the contract, the checks, the loading.

The contract: the target is a callable (a function or a class, e.g. any
`torch_geometric.datasets` class) called with the YAML options; when it takes a `root`
parameter and the YAML gives none, hamgraph passes `root=<cache>/plugins/<name>-<hash>` (one
directory per target and options). It returns one of

- a PyG `Data` (one graph: a node task),
- a PyG `Dataset` / `InMemoryDataset` of one graph (a node task; its first graph is used),
- a hamgraph `NodeDataset` (its splits are used as they are),
- a PyG `Dataset` of several graphs, or a list of PyG `Data` (graph classification).

The graph then goes through the built-ins' preparation (`hamgraph.data.node`): undirected,
coalesced, no self loops, float32 features, labels `y` as class indices [N].

Splits (node task), never an unstated one:

- `split:` in the YAML wins: `{kind: random, train: 0.6, val: 0.2}` (the rest is test) or
  `{kind: per-class, train: 20, val: 500, test: 1000}` (shorthand `{per-class: 20}`), seeded
  with `SPLIT_SEED`, one split for all runs;
- else the masks the data ships (`train_mask`, `val_mask`, `test_mask`): 1-D = one split,
  2-D [N, S] or [S, N] = S splits, run i uses split i % S;
- else the dataset is refused when the grid loads.

A stated split is checked when the grid loads (`stated_split`: random 0 < train < 1, 0 < val,
train + val < 1; per-class positive integers), then built once (`plugin_info`), so a split the
graph cannot give (a class with fewer than `train` nodes, too few nodes for val + test, an empty
part) is a PluginError there too, not a failed run.

Graph classification: a `Dataset` of several graphs (or `task: graph`), each graph with `x`,
`edge_index`, a class index `y` (and `edge_attr` if it has one). Split: the mapping's
`split: {kind: random, train: 0.8, val: 0.1}` (seeded), else the dataset's `get_idx_split()`
(OGB style: train / valid / test), else refused.

hamgraph's keys of the mapping (not passed to the callable): `display`, `task` (node or graph;
inferred from the returned type), `metric` (the dataset's metric, default accuracy), `runs`
(default: the number of shipped splits when there are several, else `PLUGIN_RUNS`), `split`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from hamgraph.data import splits as split_builders
from hamgraph.data.paths import DataPaths, data_paths_from_env
from hamgraph.data.registry import SPLIT_SEED, DatasetInfo
from hamgraph.data.splits import NodeSplit
from hamgraph.plugins import PluginError, accepted_names, call_kwargs, check_call, load
from hamgraph.specs import PluginRef

log = logging.getLogger(__name__)

PLUGIN_RUNS = 3  # runs of a user's dataset with one split (and no `runs:` in its mapping)
SPLIT_KINDS = ("random", "per-class")
_MASKS = ("train_mask", "val_mask", "test_mask")


def plugin_root(ref: PluginRef, paths: DataPaths) -> str:
    """`<cache>/plugins/<display>-<hash of target and options>`: one directory per choice."""
    from hamgraph.plugins import safe_name

    text = json.dumps({"target": ref.target, "options": ref.kwargs}, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return str(paths.cache / "plugins" / f"{safe_name(ref.display)}-{digest}")


def _call(ref: PluginRef, paths: DataPaths) -> Any:
    target = load(ref)
    kwargs = call_kwargs(ref)
    if "root" in accepted_names(target) and "root" not in kwargs:
        kwargs["root"] = plugin_root(ref, paths)
    check_call(target, 0, kwargs, f"dataset {ref.target!r}")
    try:
        return target(**kwargs)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"dataset {ref.target!r} raised {type(exc).__name__}: {exc}"
        ) from None


@functools.lru_cache(maxsize=8)
def load_plugin_object(ref: PluginRef, paths: DataPaths) -> Any:
    """What a user's dataset callable returns (called once per process and choice); a list
    of PyG `Data` becomes an in-memory Dataset of those graphs."""
    obj = _call(ref, paths)
    if isinstance(obj, list | tuple):
        from torch_geometric.data import Data

        if not obj or not all(isinstance(g, Data) for g in obj):
            raise PluginError(f"dataset {ref.target!r} returned a list that is not a "
                              "non-empty list of torch_geometric Data")
        return _graph_list(list(obj))
    return obj


def _graph_list(graphs: list[Any]) -> Any:
    from torch_geometric.data import InMemoryDataset

    class GraphList(InMemoryDataset):
        def __init__(self) -> None:
            super().__init__(None)
            self._data, self.slices = self.collate(graphs)

    return GraphList()


def plugin_task(ref: PluginRef, obj: Any) -> str:
    """"node" (a Data, a NodeDataset, a Dataset of one graph) or "graph" (a Dataset of several
    graphs); the mapping's `task:` decides for a Dataset of one graph."""
    from torch_geometric.data import Data, Dataset

    from hamgraph.data.node import NodeDataset

    stated = ref.setting.get("task")
    if stated is not None and stated not in ("node", "graph"):
        raise PluginError(f"task must be node or graph, got {stated!r}")
    if isinstance(obj, NodeDataset | Data):
        if stated == "graph":
            raise PluginError(f"dataset {ref.target!r} returned one graph, but task: graph")
        return "node"
    if isinstance(obj, Dataset):
        if stated is not None:
            return str(stated)
        return "node" if len(obj) == 1 else "graph"
    raise PluginError(
        f"dataset {ref.target!r} returned a {type(obj).__name__}; expected a "
        "torch_geometric Data, a Dataset or a hamgraph NodeDataset"
    )


def load_plugin_graph(ref: PluginRef, paths: DataPaths) -> Any:
    """The one graph of a node task (a PyG Data or a NodeDataset)."""
    obj = load_plugin_object(ref, paths)
    if plugin_task(ref, obj) != "node":
        raise PluginError(f"dataset {ref.target!r} is a graph-classification dataset")
    from torch_geometric.data import Dataset

    from hamgraph.data.node import NodeDataset

    graph = obj[0] if isinstance(obj, Dataset) else obj
    if isinstance(graph, NodeDataset):
        return graph
    for key in ("x", "y", "edge_index"):
        if getattr(graph, key, None) is None:
            raise PluginError(f"dataset {ref.target!r}: its graph has no {key!r}")
    if graph.y.dim() > 1 and graph.y.size(-1) != 1:
        raise PluginError(
            f"dataset {ref.target!r}: y has shape {tuple(graph.y.shape)}; node "
            "classification needs class indices [N]"
        )
    return graph


def _columns(mask: Tensor, num_nodes: int) -> Tensor:
    """A shipped mask as [N] or [N, S] (a [S, N] mask is transposed)."""
    if mask.dim() == 2 and mask.size(0) != num_nodes and mask.size(1) == num_nodes:
        return mask.t()
    return mask


def shipped_masks(graph: Any) -> dict[str, Tensor] | None:
    """The train / val / test masks of a PyG graph, as [N] or [N, S]; None if any is missing."""
    if not all(getattr(graph, key, None) is not None for key in _MASKS):
        return None
    num_nodes = int(graph.num_nodes)
    return {key: _columns(getattr(graph, key), num_nodes) for key in _MASKS}


def stated_split(ref: PluginRef) -> dict[str, Any] | None:
    """The `split:` of the mapping, checked. Raises PluginError naming the problem."""
    split = ref.setting.get("split")
    if split is None:
        return None
    if isinstance(split, dict) and "per-class" in split and "kind" not in split:
        # the shorthand {per-class: 20} (20 training nodes per class)
        split = {**{k: v for k, v in split.items() if k != "per-class"},
                 "kind": "per-class", "train": split["per-class"]}
    if not isinstance(split, dict) or split.get("kind") not in SPLIT_KINDS:
        raise PluginError(
            f"split must be {{kind: random, train: 0.6, val: 0.2}} or {{kind: per-class, "
            f"train: 20, val: 500, test: 1000}}, got {split!r}"
        )
    if split["kind"] == "random":
        allowed, defaults = {"kind", "train", "val"}, {"train": 0.6, "val": 0.2}
    else:
        allowed, defaults = {"kind", "train", "val", "test"}, {"train": 20, "val": 500,
                                                               "test": 1000}
    unknown = set(split) - allowed
    if unknown:
        raise PluginError(f"split: unknown key(s) {sorted(unknown)}; valid: {sorted(allowed)}")
    split = {**defaults, **split}
    if split["kind"] == "random":
        for key in ("train", "val"):
            value = split[key]
            if not _is_number(value) or not 0 < value < 1:
                raise PluginError(f"split.{key} must be a fraction between 0 and 1 (exclusive), "
                                  f"got {value!r}")
        if split["train"] + split["val"] >= 1:
            raise PluginError(f"split.train + split.val must be below 1 (the rest is test), got "
                              f"{split['train']!r} + {split['val']!r}")
    else:
        for key in ("train", "val", "test"):
            value = split[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise PluginError(f"split.{key} must be a positive whole number of nodes, got "
                                  f"{value!r}")
    return split


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_parts(ref: PluginRef, parts: tuple[Tensor, Tensor, Tensor], total: int,
                 what: str) -> None:
    """A stated split must leave every part non-empty (a small graph and a small fraction can
    round a part down to nothing)."""
    for name, part in zip(("training", "validation", "test"), parts, strict=True):
        if part.numel() == 0:
            raise PluginError(f"split {ref.setting.get('split')!r} leaves no {name} {what} of "
                              f"{total}")


def split_count(ref: PluginRef, graph: Any) -> int:
    """How many splits the dataset has (1 for a stated split). PluginError without any."""
    from hamgraph.data.node import NodeDataset

    if stated_split(ref) is not None:
        return 1
    if isinstance(graph, NodeDataset):
        return len(graph.splits)
    masks = shipped_masks(graph)
    if masks is None:
        raise PluginError(
            f"dataset {ref.target!r} ships no train_mask / val_mask / test_mask and its "
            "mapping states no split; add e.g. split: {kind: random, train: 0.6, val: 0.2}"
        )
    return max(m.size(1) if m.dim() == 2 else 1 for m in masks.values())


def plugin_splits(ref: PluginRef, graph: Any, y: Tensor, num_classes: int) -> list[NodeSplit]:
    """The splits of a user's dataset (see the module docstring)."""
    from hamgraph.data.node import NodeDataset

    split = stated_split(ref)
    try:
        if split is not None and split["kind"] == "random":
            built = split_builders.random_split(y.numel(), float(split["train"]),
                                                float(split["val"]), seed=SPLIT_SEED)
        elif split is not None:
            _check_class_sizes(ref, y, num_classes, int(split["train"]))
            built = split_builders.per_class_split(
                y, num_classes, int(split["train"]), int(split["val"]), int(split["test"]),
                seed=SPLIT_SEED)
        elif isinstance(graph, NodeDataset):
            return list(graph.splits)
        else:
            masks = shipped_masks(graph)
            assert masks is not None  # split_count refused the dataset otherwise
            return split_builders.mask_splits(masks["train_mask"], masks["val_mask"],
                                              masks["test_mask"])
    except ValueError as exc:  # the builders' checks (e.g. too few nodes for the split)
        raise PluginError(f"dataset {ref.target!r}: split: {exc}") from None
    _check_parts(ref, (built.train, built.val, built.test), y.numel(), "nodes")
    return [built]


def _check_class_sizes(ref: PluginRef, y: Tensor, num_classes: int, per_class: int) -> None:
    """A per-class split takes `per_class` training nodes of every class: each class that
    occurs must have that many (else the split would quietly take fewer)."""
    counts = y.bincount(minlength=num_classes)
    small = [(c, int(n)) for c, n in enumerate(counts.tolist()) if 0 < n < per_class]
    if small:
        c, n = small[0]
        raise PluginError(f"dataset {ref.target!r}: split.train: {per_class} training nodes per "
                          f"class, but class {c} has only {n} nodes")


def _split_text(ref: PluginRef, count: int) -> str:
    split = stated_split(ref)
    if split is None:
        return f"the {count} split(s) shipped with the data" if count > 1 else (
            "the split shipped with the data")
    if split["kind"] == "random":
        train, val = float(split["train"]), float(split["val"])
        return (f"random split {train:g}/{val:g}/{1 - train - val:g} (seeded, one split for "
                "all runs)")
    return (f"random split: {split['train']} training nodes per class, {split['val']} "
            f"validation, {split['test']} test (seeded, one split for all runs)")


def _metric_name(value: Any) -> str:
    from hamgraph.plugins import display_of, safe_name

    if value is None:
        return "accuracy"
    if isinstance(value, str):
        return value.strip().lower()
    if isinstance(value, dict) and "_target_" in value:
        return safe_name(str(value.get("display") or display_of(None, str(value["_target_"]))))
    raise PluginError(f"metric must be a name or a mapping with _target_, got {value!r}")


@functools.lru_cache(maxsize=32)
def plugin_info(name: str, ref: PluginRef, paths: DataPaths | None = None) -> DatasetInfo:
    """The DatasetInfo of a user's dataset: loads it once (cached) to learn its task and splits.

    Raises PluginError: the target fails, returns something else than a graph or a dataset,
    has no split and none is stated, or states a bad one.
    """
    paths = paths or data_paths_from_env()
    obj = load_plugin_object(ref, paths)
    task = plugin_task(ref, obj)
    if task == "graph":
        count, text = 1, _graph_split_text(ref, obj)
    else:
        graph = load_plugin_graph(ref, paths)
        count = split_count(ref, graph)
        y = graph.y.view(-1).long()
        # built once here so that a split the graph cannot give fails when the grid loads
        plugin_splits(ref, graph, y, int(y.max()) + 1 if y.numel() else 0)
        text = _split_text(ref, count)
    runs = ref.setting.get("runs", count if count > 1 else PLUGIN_RUNS)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise PluginError(f"runs must be an integer >= 1, got {runs!r}")
    return DatasetInfo(
        name=name,
        display=ref.display,
        task=task,  # type: ignore[arg-type]
        metric=_metric_name(ref.setting.get("metric")),  # type: ignore[arg-type]
        split="plugin",
        runs=runs,
        family="other" if task == "node" else "graph",
        plugin=ref,
        split_text=text,
    )


# --- graph classification --------------------------------------------------------------------


@dataclass(frozen=True)
class PluginGraphData:
    """A user's graph-classification dataset, split: the graphs and the index of each part."""

    dataset: Any  # a torch_geometric Dataset; graph i has x [n_i, F], edge_index, y [1] or []
    train: Tensor
    val: Tensor
    test: Tensor
    num_features: int
    num_classes: int
    has_edge_attr: bool


def _graph_split(ref: PluginRef, dataset: Any) -> tuple[Tensor, Tensor, Tensor]:
    split = stated_split(ref)
    if split is not None:
        if split["kind"] != "random":
            raise PluginError("split: a graph-classification dataset takes {kind: random, "
                              f"train: 0.8, val: 0.1}}, got {split!r}")
        try:
            parts = split_builders.random_split(len(dataset), float(split["train"]),
                                                float(split["val"]), seed=SPLIT_SEED)
        except ValueError as exc:
            raise PluginError(f"dataset {ref.target!r}: split: {exc}") from None
        _check_parts(ref, (parts.train, parts.val, parts.test), len(dataset), "graphs")
        return parts.train, parts.val, parts.test
    if hasattr(dataset, "get_idx_split"):
        idx = dataset.get_idx_split()
        return tuple(idx[k].view(-1).long() for k in ("train", "valid", "test"))  # type: ignore
    raise PluginError(
        f"dataset {ref.target!r} has no get_idx_split() and its mapping states no split; add "
        "e.g. split: {kind: random, train: 0.8, val: 0.1}"
    )


def _graph_split_text(ref: PluginRef, dataset: Any) -> str:
    train, val, test = _graph_split(ref, dataset)  # checks the split
    how = "the dataset's get_idx_split()" if stated_split(ref) is None else (
        "a random split (seeded, one split for all runs)")
    return f"{how}: {len(train)} / {len(val)} / {len(test)} graphs"


@functools.lru_cache(maxsize=4)
def load_plugin_graphs(info: DatasetInfo, paths: DataPaths) -> PluginGraphData:
    """The graphs and the split of a user's graph-classification dataset."""
    assert info.plugin is not None
    dataset = load_plugin_object(info.plugin, paths)
    train, val, test = _graph_split(info.plugin, dataset)
    first = dataset[0]
    if getattr(first, "x", None) is None:
        raise PluginError(f"dataset {info.plugin.target!r}: its graphs have no node features x")
    return PluginGraphData(
        dataset=dataset, train=train, val=val, test=test,
        num_features=int(first.x.size(-1)), num_classes=int(dataset.num_classes),
        has_edge_attr=getattr(first, "edge_attr", None) is not None,
    )


def read_plugin_raw(info: DatasetInfo, paths: DataPaths) -> tuple[Tensor, Tensor, Tensor, Any]:
    """(x, y, edge_index, graph) of a user's dataset, before the common preparation."""
    assert info.plugin is not None
    graph = load_plugin_graph(info.plugin, paths)
    x = graph.x
    if x.dim() != 2:
        raise PluginError(f"dataset {info.plugin.target!r}: x must be [N, F], got "
                          f"{tuple(x.shape)}")
    return x, graph.y.view(-1), graph.edge_index, graph
