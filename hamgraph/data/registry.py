"""The one table of dataset facts: task, metric, split protocol, run count, family.

Loaders live in `hamgraph.data.node` / `hamgraph.data.ogbg`; they look facts up here, so
nothing about a dataset is decided by a string test elsewhere. `resolve_dataset` is the only
way a user-facing dataset name becomes a `DatasetInfo`.

A *variant* (e.g. `cora-public`) is the same graph as its `base` dataset under another split
protocol: it shares the base's files, presets and paper-best settings, and differs from it only
in its name (so a run's identity changes through the dataset name alone) and its `split`.
`describe_split` says in words which split a dataset uses (for report notes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from hamgraph.errors import UnknownNameError
from hamgraph.specs import PluginRef, RunSpec

Task = Literal["node", "graph"]
Metric = Literal["accuracy", "rocauc", "ap", "f1"]  # built-in; a user's metric has its own name
Family = Literal["homophilic", "heterophilic", "graph", "other"]  # other: a user's dataset
SplitProtocol = Literal[
    "per-class-20/500/1000",  # 20 train nodes per class, 500 val, 1000 test; one seeded split
    "random-60/20/20",  # one fixed seeded random split
    "wikics-20",  # PyG's 20 WikiCS splits; val = val_mask | stopping_mask
    "fixed-10",  # the 10 fixed splits shipped with the data (heterophilous, filtered npz)
    "ogb-official",  # the split shipped by OGB
    "planetoid-public",  # Kipf & Welling's fixed public split: 20 per class, 500 val, 1000 test
    "plugin",  # a user's dataset: its shipped masks or the split its YAML states (split_text)
]

SPLIT_DESCRIPTIONS: dict[str, str] = {
    "per-class-20/500/1000": "random split: 20 training nodes per class, 500 validation, "
    "1000 test (seeded, one split for all runs)",
    "random-60/20/20": "random 60/20/20 split (seeded, one split for all runs)",
    "wikics-20": "the 20 shipped WikiCS splits (validation = val + stopping masks)",
    "fixed-10": "the 10 fixed splits shipped with the data",
    "ogb-official": "the official OGB split",
    "planetoid-public": "Planetoid public split (Kipf & Welling): 20 training nodes per class, "
    "500 validation, 1000 test (fixed)",
}

# The seed of every generated split ("one split, seeded, reused by all runs"). 123 is the seed
# of the reference code (tunedGNN), so the cora/citeseer/pubmed split is its published split.
SPLIT_SEED = 123


@dataclass(frozen=True)
class CsbmOptions:
    """A contextual stochastic block model (synthetic; generated, never downloaded)."""

    homophily: float = 0.8  # expected edge homophily in [0, 1]
    nodes: int = 1000
    classes: int = 2
    features: int = 32
    avg_degree: float = 10.0
    signal: float = 1.0  # distance between class means in units of the feature noise


@dataclass(frozen=True)
class DatasetInfo:
    name: str  # the registry name users write in YAML
    display: str  # the name shown in tables
    task: Task
    metric: Metric
    split: SplitProtocol
    runs: int  # the protocol's number of runs; run i uses split i % number_of_splits
    family: Family
    row_normalize: bool = False  # feature preprocessing of the protocol
    csbm: CsbmOptions | None = None  # set only for synthetic CSBM datasets
    base: str | None = None  # set only for variants: the dataset whose files and presets they use
    plugin: PluginRef | None = None  # set only for a user's dataset (hamgraph.data.plugin)
    split_text: str = ""  # a user's dataset: its split in words

    @property
    def base_name(self) -> str:
        """The dataset whose files, presets and paper-best settings this one uses."""
        return self.base if self.base is not None else self.name


def _node(name, display, metric, split, runs, family, row_normalize=False) -> DatasetInfo:
    return DatasetInfo(name, display, "node", metric, split, runs, family, row_normalize)


def _public(base: DatasetInfo) -> DatasetInfo:
    """The Planetoid public-split variant of cora / citeseer / pubmed (same runs, metric)."""
    return replace(
        base,
        name=f"{base.name}-public",
        display=f"{base.display} (public)",
        split="planetoid-public",
        base=base.name,
    )


def _graph(name, display, metric, runs) -> DatasetInfo:
    return DatasetInfo(name, display, "graph", metric, "ogb-official", runs, "graph")


_PLANETOID = [
    _node("cora", "Cora", "accuracy", "per-class-20/500/1000", 5, "homophilic"),
    _node("citeseer", "CiteSeer", "accuracy", "per-class-20/500/1000", 5, "homophilic"),
    _node("pubmed", "PubMed", "accuracy", "per-class-20/500/1000", 5, "homophilic"),
]

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        # homophilic (REFERENCE §2); the public-split variants right after their bases
        *_PLANETOID,
        *(_public(info) for info in _PLANETOID),
        _node("wikics", "WikiCS", "accuracy", "wikics-20", 3, "homophilic"),
        _node("coauthor-cs", "Coauthor-CS", "accuracy", "random-60/20/20", 3, "homophilic", True),
        _node("coauthor-physics", "Coauthor-Physics", "accuracy", "random-60/20/20", 3,
              "homophilic", True),
        _node("amazon-computer", "Amazon-Computer", "accuracy", "random-60/20/20", 3,
              "homophilic", True),
        _node("amazon-photo", "Amazon-Photo", "accuracy", "random-60/20/20", 3, "homophilic", True),
        _node("ogbn-arxiv", "ogbn-arxiv", "accuracy", "ogb-official", 5, "homophilic"),
        # heterophilic
        _node("amazon-ratings", "Amazon-Ratings", "accuracy", "fixed-10", 3, "heterophilic"),
        _node("squirrel", "Squirrel", "accuracy", "fixed-10", 10, "heterophilic"),
        _node("chameleon", "Chameleon", "accuracy", "fixed-10", 10, "heterophilic"),
        _node("minesweeper", "Minesweeper", "rocauc", "fixed-10", 3, "heterophilic"),
        _node("roman-empire", "Roman-Empire", "accuracy", "fixed-10", 3, "heterophilic"),
        _node("tolokers", "Tolokers", "rocauc", "fixed-10", 3, "heterophilic"),
        _node("questions", "Questions", "rocauc", "fixed-10", 3, "heterophilic"),
        # graph classification (REFERENCE §3): runs = seeds 0, 1 (code2: 0)
        _graph("ogbg-molhiv", "ogbg-molhiv", "rocauc", 2),
        _graph("ogbg-molpcba", "ogbg-molpcba", "ap", 2),
        _graph("ogbg-ppa", "ogbg-ppa", "accuracy", 2),
        _graph("ogbg-code2", "ogbg-code2", "f1", 1),
    ]
}

_CSBM_NAME = re.compile(r"^csbm(?:-h(?P<h>[0-9]*\.?[0-9]+))?(?:-n(?P<n>[0-9]+))?$")


def resolve_dataset(name: str) -> DatasetInfo:
    """Registry name (or `csbm`, `csbm-h0.2`, `csbm-h0.2-n5000`) -> DatasetInfo.

    Raises UnknownNameError listing the valid names.
    """
    key = str(name).strip().lower()
    if key in DATASETS:
        return DATASETS[key]
    match = _CSBM_NAME.match(key)
    if match:
        options = CsbmOptions()
        if match["h"] is not None:
            options = replace(options, homophily=float(match["h"]))
        if match["n"] is not None:
            options = replace(options, nodes=int(match["n"]))
        if not 0.0 <= options.homophily <= 1.0 or options.nodes < 10 * options.classes:
            raise UnknownNameError(
                f"dataset {name!r}: CSBM needs 0 <= h <= 1 and n >= {10 * options.classes}"
            )
        return DatasetInfo(
            name=key,
            display=f"CSBM (h={options.homophily:g})",
            task="node",
            metric="accuracy",
            split="random-60/20/20",
            runs=3,
            family="homophilic" if options.homophily >= 0.5 else "heterophilic",
            csbm=options,
        )
    choices = ", ".join([*DATASETS, "csbm", "csbm-h<0..1>[-n<nodes>]"])
    raise UnknownNameError(f"unknown dataset {name!r}; valid names: {choices}")


def describe_split(info: DatasetInfo) -> str:
    """The split protocol of `info` in words, e.g. for a report's notes."""
    if info.split_text:
        return info.split_text
    return SPLIT_DESCRIPTIONS.get(info.split, info.split)


def resolve_dataset_choice(value: Any) -> DatasetInfo:
    """A YAML dataset choice -> DatasetInfo: a built-in name (`resolve_dataset`), then an
    installed entry point (group `hamgraph.datasets`), then `{_target_: path, ...options}`
    (see `hamgraph.plugins`; the contract: `hamgraph.data.plugin`).

    A user's dataset is loaded here once (cached) to learn its task and check its split.
    Raises UserInputError.
    """
    from hamgraph.plugins import parse_choice

    builtins = [*DATASETS, "csbm"]
    if isinstance(value, str) and _CSBM_NAME.match(value.strip().lower()):
        return resolve_dataset(value)
    name, ref, _obj = parse_choice("dataset", value, builtins)
    if ref is None:
        return resolve_dataset(name)
    from hamgraph.data.plugin import plugin_info

    return plugin_info(name, ref)


def spec_dataset(spec: RunSpec) -> DatasetInfo:
    """The DatasetInfo of a run (a user's dataset is imported and loaded, cached)."""
    if spec.dataset_plugin is None:
        return resolve_dataset(spec.dataset)
    from hamgraph.data.plugin import plugin_info

    return plugin_info(spec.dataset, spec.dataset_plugin)
