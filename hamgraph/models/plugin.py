"""Node models named by the user (`hamgraph.plugins`): the contract, the probe, the builder.

The contract: `cls(in_channels, out_channels, **options)` builds the model and
`model(x, edge_index)` returns logits [N, out_channels]. `x` is [N, F] float, `edge_index`
[2, E] long, undirected and coalesced, with one self loop per node (the graph the built-in
models see; PyG layers that add self loops use `add_remaining_self_loops` and add none). A
field of `NodeParams` that the constructor accepts by name (hidden, layers, dropout, norm,
residual, pre_linear) is passed to it from the run's params unless the options give it, so
presets, `overrides:` and sweeps reach plug-in models. HAM acts on the parameters of the
model's `MessagePassing` layers (`hamgraph.optim.ham_param_groups`), as for built-ins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from hamgraph.plugins import PluginError, accepted_names, call_kwargs, check_call, load
from hamgraph.specs import GraphParams, NodeParams, PluginRef

# The NodeParams / GraphParams fields that describe a model (the others are training settings).
MODEL_FIELDS = ("hidden", "layers", "dropout", "norm", "residual", "pre_linear")
GRAPH_MODEL_FIELDS = ("hidden", "layers", "dropout", "residual", "ffn")


class PluginNodeModel(nn.Module):
    """A user's node model behind the interface of the node trainers (`ClassicGNN`'s)."""

    graph_format = "edge_index"

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    @classmethod
    def prepare_graph(cls, edge_index: Tensor, num_nodes: int) -> Tensor:
        return edge_index

    def prepare_features(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor, graph: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # `generator` is for the built-in models' dropout; a plug-in draws its dropout masks
        # from the global generator (seeded per run, so CPU runs are still deterministic).
        return self.inner(x, graph)


def model_kwargs(ref: PluginRef, params: NodeParams | GraphParams | None) -> dict[str, Any]:
    """The keyword arguments of the constructor: the options, plus the params fields it takes."""
    cls = load(ref)
    kwargs = call_kwargs(ref)
    if params is not None:
        takes = accepted_names(cls)
        values = dataclasses.asdict(params)
        fields = MODEL_FIELDS if isinstance(params, NodeParams) else GRAPH_MODEL_FIELDS
        for name in fields:
            if name in takes and name not in kwargs:
                kwargs[name] = values[name]
    return kwargs


def build_plugin_node_model(
    ref: PluginRef, params: NodeParams | None, in_dim: int, num_classes: int
) -> PluginNodeModel:
    cls = load(ref)
    inner = cls(in_dim, num_classes, **model_kwargs(ref, params))
    if not isinstance(inner, nn.Module):
        raise PluginError(f"model {ref.target!r} built a {type(inner).__name__}, not a "
                          "torch.nn.Module")
    return PluginNodeModel(inner)


def check_node_model(ref: PluginRef, params: NodeParams | None) -> None:
    """Build the model and run it on a 3-node probe graph (random features, in 4, out 3).

    Raises PluginError: unknown options, not a module, it raises, or logits not [3, 3].
    """
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    edge_index = torch.tensor([[0, 1, 1, 2, 0, 1, 2], [1, 0, 2, 1, 0, 1, 2]])
    _probe(ref, lambda: build_plugin_node_model(ref, params, 4, 3), (x, edge_index), (3, 3),
           "a 3-node probe graph", "[num_nodes, out_channels]")


def _probe(ref: PluginRef, build: Callable[[], nn.Module], inputs: tuple[Tensor, ...],
           expected: tuple[int, ...], probe: str, layout: str) -> None:
    """Build a user's model and call it on `inputs` in eval mode (torch's global RNG left as
    it was); PluginError when it cannot be built, raises, or returns another shape."""
    check_call(load(ref), 2, call_kwargs(ref), f"model {ref.target!r}")
    rng_state = torch.get_rng_state()
    try:
        model = build()
        model.eval()
        with torch.no_grad():
            out = model(*inputs)
    except PluginError:
        raise
    except Exception as exc:
        raise PluginError(
            f"model {ref.target!r} fails on {probe} (in_channels=4, out_channels=3): "
            f"{type(exc).__name__}: {exc}"
        ) from None
    finally:
        torch.set_rng_state(rng_state)
    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    if shape != expected:
        raise PluginError(
            f"model {ref.target!r} returns {shape} on {probe} with out_channels=3; expected "
            f"{expected} = {layout}"
        )


# --- graph classification --------------------------------------------------------------------


def build_plugin_graph_model(
    ref: PluginRef, params: GraphParams | None, in_dim: int, out_dim: int
) -> nn.Module:
    """A user's graph model: `cls(in_channels, out_channels, **options)`, called as
    `model(x, edge_index, batch)` (plus `edge_attr=` when the graphs have it) -> [graphs, out]."""
    cls = load(ref)
    model = cls(in_dim, out_dim, **model_kwargs(ref, params))
    if not isinstance(model, nn.Module):
        raise PluginError(f"model {ref.target!r} built a {type(model).__name__}, not a "
                          "torch.nn.Module")
    return model


def check_graph_model(ref: PluginRef, params: GraphParams | None) -> None:
    """Build the model and run it on a batch of one 3-node graph (in 4, out 3): [1, 3]."""
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    edge_index = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    batch = torch.zeros(3, dtype=torch.long)
    _probe(ref, lambda: build_plugin_graph_model(ref, params, 4, 3), (x, edge_index, batch),
           (1, 3), "a batch of one 3-node probe graph", "[num_graphs, out_channels]")
