"""Build the optimizer of a run from its `OptimizerSpec`: a base optimizer, HAM on top or not."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.optimizer import _get_foreach_kernels_supported_devices

from hamgraph.errors import UnknownNameError, UserInputError
from hamgraph.optim.groups import ham_param_groups
from hamgraph.optim.ham import HAM, HAM_GROUP_KEYS
from hamgraph.specs import OptimizerSpec

__all__ = [
    "BASE_OPTIMIZERS",
    "build_optimizer",
    "check_base_options",
    "check_ham_base",
    "resolve_base",
]

# Short names. Adam: coupled weight decay (node protocol, REFERENCE §2); AdamW: decoupled
# (graph protocol, §3). Any other torch.optim.Optimizer subclass is named by its dotted path.
BASE_OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}
# Set from the protocol's params, never as a base option.
_PROTOCOL_OPTIONS = ("lr", "weight_decay")


def resolve_base(name: str) -> type[Optimizer]:
    """A short name ("adam", "adamw", "sgd") or a dotted path ("torch.optim.RAdam") -> the class.

    Raises UnknownNameError (a UserInputError) when the name is neither a short name nor an
    importable `torch.optim.Optimizer` subclass; the message lists the short names.
    """
    if not isinstance(name, str) or not name:
        raise UnknownNameError(f"base optimizer must be a name, got {name!r}")
    if name.lower() in BASE_OPTIMIZERS:
        return BASE_OPTIMIZERS[name.lower()]
    choices = f"use one of {sorted(BASE_OPTIMIZERS)} or a dotted path like torch.optim.RAdam"
    module_name, _, attr = name.rpartition(".")
    if not module_name:
        raise UnknownNameError(f"unknown base optimizer {name!r}; {choices}")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise UnknownNameError(
            f"base optimizer {name!r} does not import ({exc}); {choices}"
        ) from None
    if not (inspect.isclass(found) and issubclass(found, Optimizer)):
        raise UnknownNameError(f"base optimizer {name!r} is not a torch.optim.Optimizer subclass")
    return found


def check_base_options(name: str, options: dict[str, Any]) -> None:
    """Raise UserInputError if an option is not an argument of the base optimizer's __init__
    or is one the protocol sets (lr, weight_decay)."""
    cls = resolve_base(name)
    signature = inspect.signature(cls.__init__)
    accepted = [p for p in signature.parameters if p not in ("self", "params")]
    for option in options:
        if option in _PROTOCOL_OPTIONS:
            raise UserInputError(
                f"{option!r} is a protocol hyperparameter, set it in overrides, not as an "
                f"option of {name}"
            )
        if option not in accepted:
            raise UserInputError(
                f"unknown option {option!r} of {cls.__name__}; valid: {', '.join(accepted)}"
            )


def check_ham_base(name: str) -> None:
    """Raise UserInputError when HAM cannot run on this base optimizer: its param groups
    already use one of HAM's keys for a setting of its own (RMSprop's `alpha`)."""
    cls = resolve_base(name)
    clash = sorted(set(inspect.signature(cls.__init__).parameters) & set(HAM_GROUP_KEYS))
    if clash:
        raise UserInputError(
            f"HAM cannot run on {cls.__name__}: its own {', '.join(map(repr, clash))} "
            f"would clash with HAM's; choose another base (adam, adamw, sgd, ...)"
        )


def build_optimizer(
    model: nn.Module,
    optimizer: OptimizerSpec,
    *,
    lr: float,
    weight_decay: float,
    fused: bool | None = None,
) -> Optimizer:
    """The optimizer for `model`.

    Without HAM: the base optimizer over all parameters (the baseline). With HAM: the
    hyperbolic step on the message-passing parameters (`ham_param_groups`), the base step on
    all parameters. The base uses its foreach implementation where torch has foreach kernels
    for the device (CUDA & co.) and the class takes `foreach`; on CPU torch's default applies.

    `fused` selects HAM's hyperbolic-step kernel (see `HAM`): None = compiled on CUDA, foreach
    on CPU.
    """
    base_cls = resolve_base(optimizer.base)
    params = list(model.parameters())
    kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay, **optimizer.options}
    takes_foreach = "foreach" in inspect.signature(base_cls.__init__).parameters
    devices = _get_foreach_kernels_supported_devices()
    if takes_foreach and params and all(p.device.type in devices for p in params):
        kwargs.setdefault("foreach", True)
    ham = optimizer.ham
    if ham is None:
        return base_cls(params, **kwargs)
    groups = ham_param_groups(model)
    if not any(group["ham"] for group in groups):
        raise ValueError(
            f"HAM {ham} was requested but {type(model).__name__} has no parameters inside a "
            "torch_geometric MessagePassing module, so the hyperbolic step would do nothing"
        )
    return HAM(
        groups,
        base=base_cls,
        alpha=ham.alpha,
        beta=ham.beta,
        clamp=ham.clamp,
        mask_beta=ham.mask_beta,
        sign_source=ham.sign_source,
        fused=fused,
        base_options=kwargs,  # one dict: a base option may be named like HAM's own `fused`
    )
