"""Datasets named by the user (`hamgraph.plugins`): the contract, the checks, the loading.

The contract: the target is a callable (a function or a class, e.g. any
`torch_geometric.datasets` class) called with the YAML options; when it takes a `root`
parameter and the YAML gives none, hamgraph passes `root=<cache>/plugins/<name>-<hash>` (one
directory per target and options). It returns one of

- a PyG `Data` (one graph: a node task),
- a PyG `Dataset` / `InMemoryDataset` of one graph (a node task; its first graph is used),
- a hamgraph `NodeDataset` (its splits are used as they are).

The graph then goes through the built-ins' preparation (`hamgraph.data.node`): undirected,
coalesced, no self loops, float32 features, labels `y` as class indices [N].

Splits (node task), never an unstated one:

- `split:` in the YAML wins: `{kind: random, train: 0.6, val: 0.2}` (the rest is test) or
  `{kind: per-class, train: 20, val: 500, test: 1000}`, seeded with `SPLIT_SEED`, one split
  for all runs;
- else the masks the data ships (`train_mask`, `val_mask`, `test_mask`): 1-D = one split,
  2-D [N, S] or [S, N] = S splits, run i uses split i % S;
- else the dataset is refused when the grid loads.

hamgraph's keys of the mapping (not passed to the callable): `display`, `task` (node; graph
datasets are refused: not supported for user datasets yet), `metric` (the dataset's metric,
default accuracy), `runs` (default: the number of shipped splits when there are several, else
`PLUGIN_RUNS`), `split`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
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


def _graph_of(obj: Any, ref: PluginRef) -> Any:
    """The one graph of a node task (a Data, or the only graph of a Dataset)."""
    from torch_geometric.data import Data, Dataset

    from hamgraph.data.node import NodeDataset

    if isinstance(obj, NodeDataset | Data):
        return obj
    if isinstance(obj, Dataset):
        task = ref.setting.get("task")
        if len(obj) != 1 or task == "graph":
            raise PluginError(
                f"dataset {ref.target!r} has {len(obj)} graphs (a graph-classification "
                "dataset); user datasets are supported for node classification only"
            )
        return obj[0]
    raise PluginError(
        f"dataset {ref.target!r} returned a {type(obj).__name__}; expected a "
        "torch_geometric Data, a Dataset of one graph or a hamgraph NodeDataset"
    )


@functools.lru_cache(maxsize=8)
def load_plugin_graph(ref: PluginRef, paths: DataPaths) -> Any:
    """The graph (a PyG Data or a NodeDataset) a user's dataset returns; cached per process."""
    if ref.setting.get("task", "node") != "node":
        raise PluginError(
            f"dataset {ref.target!r}: task must be node (graph classification is not "
            "supported for user datasets yet)"
        )
    graph = _graph_of(_call(ref, paths), ref)
    from hamgraph.data.node import NodeDataset

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
    return {**defaults, **split}


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
    if split is not None and split["kind"] == "random":
        return [split_builders.random_split(y.numel(), float(split["train"]),
                                            float(split["val"]), seed=SPLIT_SEED)]
    if split is not None:
        return [split_builders.per_class_split(
            y, num_classes, int(split["train"]), int(split["val"]), int(split["test"]),
            seed=SPLIT_SEED)]
    if isinstance(graph, NodeDataset):
        return list(graph.splits)
    masks = shipped_masks(graph)
    assert masks is not None  # split_count refused the dataset otherwise
    return split_builders.mask_splits(masks["train_mask"], masks["val_mask"], masks["test_mask"])


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
    """The DatasetInfo of a user's dataset: loads it once (cached) to learn its splits.

    Raises PluginError: the target fails, returns something else than a graph, has no split
    and none is stated, or states a bad one.
    """
    paths = paths or data_paths_from_env()
    graph = load_plugin_graph(ref, paths)
    count = split_count(ref, graph)
    runs = ref.setting.get("runs", count if count > 1 else PLUGIN_RUNS)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise PluginError(f"runs must be an integer >= 1, got {runs!r}")
    return DatasetInfo(
        name=name,
        display=ref.display,
        task="node",
        metric=_metric_name(ref.setting.get("metric")),  # type: ignore[arg-type]
        split="plugin",
        runs=runs,
        family="other",
        plugin=ref,
        split_text=_split_text(ref, count),
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
