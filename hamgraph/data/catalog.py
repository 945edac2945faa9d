"""`hamgraph datasets`: the registry as a table, with local availability and graph statistics.

Availability is decided from the files alone (cache or mirror; nothing is loaded or
downloaded). Statistics of available node datasets need one load; they are kept in a small JSON
file in the cache (`<cache>/dataset-stats.json`, written atomically), so they are computed once.
Graph-level (ogbg-*) datasets show availability only; their statistics columns stay blank.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hamgraph.atomic import atomic_write_text
from hamgraph.data.homophily import adjusted_homophily, edge_homophily
from hamgraph.data.mirror import file_sources
from hamgraph.data.node import NODE_SOURCES, load_node_dataset
from hamgraph.data.paths import DataPaths, data_paths_from_env
from hamgraph.data.registry import DATASETS, DatasetInfo, resolve_dataset
from hamgraph.errors import HamgraphError

log = logging.getLogger(__name__)

STATS_FILE = "dataset-stats.json"
_STATS_VERSION = 1  # bump when the statistics or the graph preparation change
_DEFAULT_EXTRA = ("csbm",)  # synthetic datasets listed next to the registry by default
STAT_COLUMNS = ("nodes", "edges_undirected", "features", "classes", "h_edge", "h_adj")


def _ogbg_available(info: DatasetInfo, paths: DataPaths) -> str:
    dir_name = info.name.replace("-", "_")
    for where, root in (("cache", paths.cache), ("mirror", paths.mirror)):
        if root is not None and any((root / dir_name / "raw").glob("*.csv.gz")):
            return where
    return "no"


def availability(info: DatasetInfo, paths: DataPaths) -> tuple[str, list[str]]:
    """("cache" | "mirror" | "generated" | "no", missing files) — from the files alone."""
    if info.csbm is not None:
        return "generated", []
    if info.task == "graph":
        where = _ogbg_available(info, paths)
        return where, ([] if where != "no" else [f"{info.name.replace('-', '_')}/raw/*.csv.gz"])
    source = NODE_SOURCES[info.name]
    sources = file_sources(source.dir_name, source.files, paths)
    missing = [f"{source.dir_name}/{rel}" for rel, where in sources.items() if where == "missing"]
    if missing:
        return "no", missing
    return ("cache" if all(w == "cache" for w in sources.values()) else "mirror"), []


def _read_stats(path: Path) -> dict[str, dict]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("version") != _STATS_VERSION:
        return {}
    return dict(content.get("datasets", {}))


def _write_stats(path: Path, stats: dict[str, dict]) -> None:
    content = {"version": _STATS_VERSION, "datasets": stats}
    atomic_write_text(path, json.dumps(content, indent=1, sort_keys=True))


def cached_stats(name: str, paths: DataPaths | None = None) -> dict | None:
    """The statistics `hamgraph datasets` cached for `name`, or None. Never loads a dataset."""
    paths = paths or data_paths_from_env()
    return _read_stats(paths.cache / STATS_FILE).get(resolve_dataset(name).name)


def node_stats(info: DatasetInfo, paths: DataPaths) -> dict[str, float | int]:
    """Sizes and homophily of a node dataset after the protocol's preparation (loads it)."""
    data = load_node_dataset(info, paths)
    return {
        "nodes": data.num_nodes,
        "edges_undirected": int(data.edge_index.size(1)) // 2,
        "features": data.num_features,
        "classes": data.num_classes,
        "h_edge": round(edge_homophily(data.edge_index, data.y), 4),
        "h_adj": round(adjusted_homophily(data.edge_index, data.y, data.num_classes), 4),
    }


def dataset_table(names: list[str], paths: DataPaths) -> tuple[pd.DataFrame, list[str]]:
    """The catalog as a DataFrame (one row per dataset) plus notes on what is missing."""
    infos = (
        [resolve_dataset(n) for n in names]
        if names
        else [*DATASETS.values(), *(resolve_dataset(n) for n in _DEFAULT_EXTRA)]
    )
    stats_path = paths.cache / STATS_FILE
    stats = _read_stats(stats_path)
    rows, notes, changed = [], [], False
    avail = {info.name: availability(info, paths) for info in infos}
    todo = [
        info
        for info in infos
        if info.task == "node" and avail[info.name][0] != "no" and info.name not in stats
    ]
    for info in tqdm(todo, desc="dataset statistics", unit="dataset", disable=None):
        log.info("computing statistics of %s (once; cached in %s)", info.name, stats_path)
        try:
            stats[info.name] = node_stats(info, paths)
            changed = True
        except HamgraphError as exc:
            notes.append(f"{info.name}: cannot load: {exc}")
    if changed:
        _write_stats(stats_path, stats)
    for info in infos:
        where, missing = avail[info.name]
        if missing:
            notes.append(f"{info.name}: missing {', '.join(missing)}")
        row = {
            "dataset": info.name,
            "task": info.task,
            "metric": info.metric,
            "split": info.split,
            "runs": info.runs,
            "family": info.family,
            "available": where,
        }
        row.update({col: stats.get(info.name, {}).get(col) for col in STAT_COLUMNS})
        rows.append(row)
    frame = pd.DataFrame(rows)
    for col in ("nodes", "edges_undirected", "features", "classes"):
        frame[col] = frame[col].astype("Int64")
    return frame, notes


def format_datasets(names: list[str]) -> str:
    """The `hamgraph datasets` text: the catalog table and its notes (the CLI prints it).

    Unknown names raise UnknownNameError (listing the valid ones) before anything is computed.
    """
    paths = data_paths_from_env()
    frame, notes = dataset_table(list(names), paths)
    shown = frame.astype(object).where(frame.notna(), "")
    for col in ("h_edge", "h_adj"):
        shown[col] = [f"{v:.3f}" if isinstance(v, float) else v for v in shown[col]]
    lines = [
        shown.to_string(index=False),
        "",
        "edges_undirected: undirected edges after to_undirected + remove_self_loops "
        "(edge_index has twice as many columns); h_edge: edge homophily; h_adj: adjusted "
        "homophily (Platonov et al. 2023). Graph datasets (ogbg-*): availability only.",
        f"cache: {paths.cache}   mirror: {paths.mirror or '(none; set $HAMGRAPH_MIRROR)'}",
        *notes,
    ]
    return "\n".join(lines) + "\n"
