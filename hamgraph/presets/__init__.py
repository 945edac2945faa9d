"""Protocol presets: the default hyperparameters of every (dataset, model), and the paper's
best HAM / nHAM settings. Every default of a run lives here (visible in YAML via overrides).

    default_params(info, model)      -> NodeParams (REFERENCE §2) | GraphParams (REFERENCE §3)
    paper_best(dataset, model, kind) -> (alpha, beta) of REFERENCE §1

Graph presets live in `hamgraph.presets.graph` (imported on first use). A dataset variant
(e.g. `cora-public`) has the presets and paper-best settings of its base dataset: they are
looked up under the base's name, never copied.
"""

from __future__ import annotations

from hamgraph.data.registry import DATASETS, DatasetInfo
from hamgraph.errors import UnknownNameError
from hamgraph.models import resolve_model
from hamgraph.presets.node import (
    CSBM_PRESET,
    NODE_PRESETS,
    PLUGIN_GRAPH_PRESET,
    PLUGIN_PRESET,
)
from hamgraph.presets.paper_best import PAPER_BEST
from hamgraph.specs import GraphParams, NodeParams

KINDS = ("ham", "nham")


def default_params(
    info: DatasetInfo, model: str, plugin: bool = False
) -> NodeParams | GraphParams:
    """The protocol hyperparameters of `model` on the dataset `info`.

    A user's dataset (`info.plugin`) gets `PLUGIN_PRESET`; a user's model (`plugin`) on a
    built-in node dataset the row of gcn (then `overrides:`).
    Raises UnknownNameError for a model that does not fit the dataset's task, or a dataset
    without a preset (the message lists the datasets that have one).
    """
    if info.plugin is not None and info.task == "graph" and not plugin:
        raise UnknownNameError(
            f"the user's graph dataset {info.name!r} needs a user's graph model (gcnplus reads "
            "OGB's encoded features)"
        )
    if info.plugin is not None:
        return PLUGIN_PRESET if info.task == "node" else PLUGIN_GRAPH_PRESET
    if plugin and info.task == "graph":
        raise UnknownNameError(
            f"a user's graph model needs a user's graph dataset; {info.name!r} is built in "
            "(its graphs carry OGB's encoded features)"
        )
    model = "gcn" if plugin else resolve_model(model, info.task)
    if info.task == "graph":
        from hamgraph.presets.graph import graph_params

        return graph_params(info.name)
    if info.csbm is not None:
        return CSBM_PRESET
    try:
        return NODE_PRESETS[(info.base_name, model)]
    except KeyError:
        names = sorted({dataset for dataset, _ in NODE_PRESETS})
        raise UnknownNameError(
            f"no preset for dataset {info.name!r} with model {model!r}; datasets with presets: "
            f"{', '.join(names)}, csbm-*"
        ) from None


def paper_best(dataset: str, model: str, kind: str) -> tuple[float, float]:
    """(alpha, beta) the HAM paper found best; kind "ham" (alpha > 0) or "nham" (alpha < 0).

    Raises UnknownNameError when the paper has no entry (the message lists those it has).
    """
    if kind not in KINDS:
        raise UnknownNameError(f"unknown kind {kind!r}; valid names: {', '.join(KINDS)}")
    name = str(dataset).strip().lower()
    name = DATASETS[name].base_name if name in DATASETS else name  # variants: the base's
    key = (name, str(model).strip().lower(), kind)
    if key not in PAPER_BEST:
        have = sorted({f"{d}/{m}" for d, m, k in PAPER_BEST if k == kind})
        raise UnknownNameError(
            f"no paper-best {kind} setting for dataset {dataset!r} with model {model!r}; "
            f"entries: {', '.join(have)}"
        )
    return PAPER_BEST[key]


__all__ = [
    "CSBM_PRESET", "NODE_PRESETS", "PAPER_BEST", "PLUGIN_PRESET", "default_params", "paper_best",
]
