"""The model zoo: user-facing model names, the task each one is for, and the node-model builder.

`gcnplus` (graph classification, REFERENCE §3) lives in `hamgraph.models.gcnplus` and is only
imported by the graph trainer.
"""

from __future__ import annotations

from typing import Literal

from hamgraph.errors import UnknownNameError
from hamgraph.model_names import MODEL_DISPLAY
from hamgraph.models.classic import CLASSIC_MODELS, ClassicGNN
from hamgraph.specs import NodeParams

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


def build_node_model(
    model_name: str, params: NodeParams, in_dim: int, num_classes: int
) -> ClassicGNN:
    """The ClassicGNN subclass for `model_name` with the hyperparameters of `params`."""
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
    "build_node_model",
    "resolve_model",
]
