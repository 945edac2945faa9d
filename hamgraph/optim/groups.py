"""Which parameters HAM acts on: those of the message-passing layers (REFERENCE §1).

HAM applies to every parameter registered under a `torch_geometric.nn.MessagePassing`
submodule: the conv weights and biases, and the attention parameters of attention convs (they
live inside the conv). Everything else (norms, encoders / embeddings, prediction heads, residual
projections outside the conv) gets the base step only. A model whose layer keeps, say, a
feed-forward block *inside* its MessagePassing subclass would have HAM on that block too, so
such blocks belong outside the conv module.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch_geometric.nn import MessagePassing

__all__ = ["ham_param_groups", "ham_target_names", "ham_target_params"]


Named = list[tuple[str, nn.Parameter]]


def _split(model: nn.Module) -> tuple[Named, Named]:
    """(HAM targets, the rest) as (name, parameter) in `named_parameters` order, no duplicates."""
    targets: set[int] = set()
    for module in model.modules():
        if isinstance(module, MessagePassing):
            targets.update(id(p) for p in module.parameters())
    ham, rest = [], []
    for name, param in model.named_parameters():
        (ham if id(param) in targets else rest).append((name, param))
    return ham, rest


def ham_param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Param groups for `HAM`: {"params", "names", "ham": True} for the message-passing
    parameters and {"params", "names", "ham": False} for the others; empty groups are left out.
    """
    groups = []
    for ham, named in zip((True, False), _split(model), strict=True):
        if named:
            groups.append(
                {"params": [p for _, p in named], "names": [n for n, _ in named], "ham": ham}
            )
    return groups


def ham_target_names(model: nn.Module) -> list[str]:
    """Names (as in `model.named_parameters()`) of the parameters HAM acts on."""
    return [name for name, _ in _split(model)[0]]


def ham_target_params(model: nn.Module) -> list[nn.Parameter]:
    """The parameters HAM acts on, in `model.named_parameters()` order."""
    return [param for _, param in _split(model)[0]]
