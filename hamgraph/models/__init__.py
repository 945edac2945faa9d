"""The model zoo: user-facing model names, the task each one is for, and the node-model builder.

`gcnplus` (graph classification, REFERENCE §3) lives in `hamgraph.models.gcnplus` and is only
imported by the graph trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from hamgraph.errors import UnknownNameError
from hamgraph.model_names import MODEL_DISPLAY
from hamgraph.models.classic import CLASSIC_MODELS, ClassicGNN
from hamgraph.specs import GraphParams, NodeParams, PluginRef

MODEL_TASK: dict[str, Literal["node", "graph"]] = {
    "gcn": "node",
    "gat": "node",
    "sage": "node",
    "gcnplus": "graph",
}


def resolve_model(name: str, task: str) -> str:
    """A user-facing model name -> its registry name, checked against the dataset's task.

    Raises UnknownNameError listing the models valid for `task`.
    """
    key = str(name).strip().lower()
    valid = [model for model, model_task in MODEL_TASK.items() if model_task == task]
    if key not in valid:
        what = "unknown model" if key not in MODEL_TASK else f"model for {MODEL_TASK[key]} tasks"
        raise UnknownNameError(
            f"{what} {name!r} cannot be used on a {task} dataset; valid names: {', '.join(valid)}"
        )
    return key


@dataclass(frozen=True)
class ModelChoice:
    """A resolved model: its readable name and, for a user's model, its PluginRef."""

    name: str
    plugin: PluginRef | None = None

    @property
    def display(self) -> str:
        return self.plugin.display if self.plugin is not None else MODEL_DISPLAY[self.name]


def resolve_model_choice(
    value: Any, task: str, params: NodeParams | GraphParams | None = None
) -> ModelChoice:
    """A YAML model choice -> ModelChoice: a built-in name, then an installed entry point
    (group `hamgraph.models`), then `{_target_: path, ...options}` (see `hamgraph.plugins`).

    A user's model is checked here: options against its constructor, and its output shape on a
    3-node probe graph (built with `params`' model fields when given). Raises UserInputError.
    """
    from hamgraph.plugins import parse_choice

    name, ref, _obj = parse_choice("model", value, MODEL_TASK)
    if ref is None:
        return ModelChoice(resolve_model(name, task))
    from hamgraph.models.plugin import check_graph_model, check_node_model

    if task == "graph":
        check_graph_model(ref, params if isinstance(params, GraphParams) else None)
    else:
        check_node_model(ref, params if isinstance(params, NodeParams) else None)
    return ModelChoice(name, ref)


def build_node_model(
    model_name: str,
    params: NodeParams,
    in_dim: int,
    num_classes: int,
    plugin: PluginRef | None = None,
) -> nn.Module:
    """The ClassicGNN subclass for `model_name` with the hyperparameters of `params`, or the
    user's model `plugin` (`hamgraph.models.plugin`: its contract)."""
    if plugin is not None:
        from hamgraph.models.plugin import build_plugin_node_model

        return build_plugin_node_model(plugin, params, in_dim, num_classes)
    cls = CLASSIC_MODELS[resolve_model(model_name, "node")]
    return cls(
        in_dim,
        num_classes,
        hidden=params.hidden,
        layers=params.layers,
        dropout=params.dropout,
        norm=params.norm,
        residual=params.residual,
        pre_linear=params.pre_linear,
    )


__all__ = [
    "MODEL_DISPLAY",
    "MODEL_TASK",
    "ClassicGNN",
    "ModelChoice",
    "build_node_model",
    "resolve_model",
    "resolve_model_choice",
]
