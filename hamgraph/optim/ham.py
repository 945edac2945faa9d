"""HAM: Hyperbolic Aware Minimization as a `torch.optim.Optimizer` (REFERENCE §1).

Each `step()` runs the base optimizer's step, then the hyperbolic step (HYP*) in place on the
parameters of every group with `ham=True`:

    e     = -lr * (alpha * sign(theta_half) * g + beta * m)     m = (g != 0) if mask_beta else 1
    theta = theta_half * exp(clamp(e, -clamp, clamp))

`lr` is the group's current learning rate (LR schedulers work unchanged) and `g` is `p.grad`,
the raw gradient the base step used (without the base's weight decay). `alpha < 0` is nHAM.

HAM and its base optimizer share one `param_groups` list of the same dicts and one `state`:
a scheduler that sets `group["lr"]` on HAM sets it for the base, `add_param_group` reaches
both, and `state_dict()` is exactly the base optimizer's state plus the HAM hyperparameters
(`alpha`, `beta`, `clamp`, `mask_beta`, `ham`, `sign_source`) in each param group. HAM keeps no
per-parameter state of its own.

Known limits:
- `g` is read from `p.grad` after the base step; a base optimizer that modifies `p.grad` in
  place would change what HAM sees (none of torch's built-in optimizers do).
- The closure, if any, is passed to the base optimizer's `step`; HAM uses the gradients it
  leaves in `p.grad`. Bases that evaluate the closure several times (LBFGS) make little sense
  with HAM.
- `sign_source="previous"` ("HAM signed" ablation) needs sign(theta_k) from before the base
  step: HAM keeps one int8 tensor per parameter of such groups for the duration of `step()`
  (1 byte per weight, freed when the step returns); nothing is stored between steps.
- Dense gradients only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from hamgraph.optim.functional import hyperbolic_step_

__all__ = ["HAM", "HAM_GROUP_KEYS", "SIGN_SOURCES"]

SIGN_SOURCES = ("current", "previous")

# The keys HAM adds to every param group, next to the base optimizer's own. A base optimizer
# whose groups already use one of them (RMSprop's `alpha`, its smoothing constant) cannot
# carry HAM: one dict key cannot hold both settings.
HAM_GROUP_KEYS = ("alpha", "beta", "clamp", "mask_beta", "ham", "sign_source")


class HAM(Optimizer):
    """Any base optimizer followed by the hyperbolic step on the groups with `ham=True`.

    Args:
        params: parameters or param-group dicts. A group may override `alpha`, `beta`,
            `clamp`, `mask_beta`, `sign_source`, or set `ham=False` (base step only), besides
            the base optimizer's own options (`lr`, `weight_decay`, ...).
        base: the base optimizer class, e.g. `torch.optim.Adam`, `torch.optim.AdamW`,
            `torch.optim.SGD`.
        alpha: > 0 HAM, < 0 nHAM, 0 only the beta shrinkage.
        beta: multiplicative shrinkage, like a weight decay proportional to the weight.
        clamp: the exponent is clamped to [-clamp, clamp] (5 in the paper).
        mask_beta: no beta shrinkage where the gradient is exactly zero (dropout).
        sign_source: "current" (HYP*: sign after the base step, no extra memory) or
            "previous" (the "HAM signed" ablation: sign before the base step).
        fused: the hyperbolic-step kernel: True = compiled with torch.compile, False = foreach,
            None = compiled on CUDA and foreach elsewhere (see `functional.default_fused`).
            This is HAM's own flag; it is not passed to the base optimizer.
        base_options: options for `base` given as one dict, e.g. `{"fused": True}` for a fused
            Adam, whose name would otherwise collide with HAM's own argument.
        **base_kwargs: passed to `base` (lr, weight_decay, betas, foreach, ...).

    Raises:
        ValueError: a bad HAM setting, a base that is not an Optimizer (or is HAM), options the
            base does not take, or a base whose param groups already use a key of
            `HAM_GROUP_KEYS` (e.g. RMSprop).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        base: type[Optimizer] = torch.optim.Adam,
        alpha: float = 200.0,
        beta: float = 0.01,
        clamp: float = 5.0,
        mask_beta: bool = True,
        sign_source: str = "current",
        fused: bool | None = None,
        base_options: Mapping[str, Any] | None = None,
        **base_kwargs: Any,
    ) -> None:
        if not (isinstance(base, type) and issubclass(base, Optimizer)):
            raise ValueError(f"HAM base must be a torch.optim.Optimizer subclass, got {base!r}")
        if issubclass(base, HAM):
            raise ValueError(f"HAM base must not be HAM itself, got {base.__name__}")
        if fused not in (None, True, False):
            raise ValueError(f"HAM fused must be True, False or None, got {fused!r}")
        ham_defaults: dict[str, Any] = {
            "alpha": alpha,
            "beta": beta,
            "clamp": clamp,
            "mask_beta": mask_beta,
            "ham": True,
            "sign_source": sign_source,
        }
        _validate_ham_options(ham_defaults, where="HAM()")
        both = sorted(set(base_options or {}) & set(base_kwargs))
        if both:
            raise ValueError(f"base option(s) {both} given both in base_options and as keywords")
        options = {**(base_options or {}), **base_kwargs}
        try:
            self.base = base(params, **options)
        except TypeError as exc:
            raise ValueError(
                f"cannot build the base optimizer {base.__name__} with {options!r}: {exc}"
            ) from exc
        clash = sorted(set(self.base.defaults) & set(HAM_GROUP_KEYS))
        if clash:
            raise ValueError(
                f"HAM cannot wrap {base.__name__}: its param groups already use {clash} for "
                "settings of its own, which HAM's would overwrite"
            )
        self._fused = fused
        self._ham_defaults = ham_defaults
        # Optimizer.__init__ calls add_param_group for each of the base's group dicts, which
        # adds the HAM defaults to those same dicts; then both share one list and one state.
        super().__init__(self.base.param_groups, {**self.base.defaults, **ham_defaults})
        self._link_to_base()

    def _link_to_base(self) -> None:
        self.param_groups = self.base.param_groups
        self.state = self.base.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer and HAM alike (same dict in the shared list)."""
        if not isinstance(param_group, dict):
            raise ValueError(f"a param group must be a dict, got {type(param_group).__name__}")
        for key, value in self._ham_defaults.items():
            param_group.setdefault(key, value)
        index = next((i for i, g in enumerate(self.base.param_groups) if g is param_group), None)
        if index is None:  # a new group: the base fills its defaults and appends it
            _validate_ham_options(param_group, f"HAM param group {len(self.base.param_groups)}")
            self.base.add_param_group(param_group)
            index = len(self.base.param_groups) - 1
        _validate_group(param_group, index)
        if self.param_groups is not self.base.param_groups:  # during __init__ only
            self.param_groups.append(param_group)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """The base step, then the hyperbolic step. Returns the closure's loss, if any."""
        previous = self._previous_signs(all_params=closure is not None)
        loss = self.base.step() if closure is None else self.base.step(closure)
        for group in self.param_groups:
            if not group["ham"]:
                continue
            params, grads, signs = [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("HAM supports dense gradients only, got a sparse gradient")
                params.append(p)
                grads.append(p.grad)
                if group["sign_source"] == "previous":
                    signs.append(previous[id(p)])
            hyperbolic_step_(
                params,
                grads,
                lr=group["lr"],
                alpha=group["alpha"],
                beta=group["beta"],
                clamp=group["clamp"],
                mask_beta=group["mask_beta"],
                signs=signs if group["sign_source"] == "previous" else None,
                fused=self._fused,
            )
        return loss

    def _previous_signs(self, *, all_params: bool) -> dict[int, Tensor]:
        """sign(theta_k) as int8 for "previous" groups (transient, 1 byte per weight)."""
        out: dict[int, Tensor] = {}
        for group in self.param_groups:
            if group["ham"] and group["sign_source"] == "previous":
                for p in group["params"]:
                    if all_params or p.grad is not None:
                        out[id(p)] = torch.sign(p).to(torch.int8)
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict saved by HAM (or by the plain base optimizer: HAM defaults apply)."""
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        self.base.load_state_dict(state_dict)
        self._link_to_base()
        for index, group in enumerate(self.param_groups):
            for key, value in self._ham_defaults.items():
                group.setdefault(key, value)
            _validate_group(group, index)
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def __getstate__(self) -> dict[str, Any]:
        return {
            **super().__getstate__(),
            "base": self.base,
            "_fused": self._fused,
            "_ham_defaults": self._ham_defaults,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._link_to_base()

    def __repr__(self) -> str:
        text = super().__repr__()  # "HAM (" + one block per param group + ")"
        return text.replace(
            "HAM (", f"HAM (base={type(self.base).__name__}, fused={self._fused}", 1
        )


def _validate_ham_options(options: dict[str, Any], where: str) -> None:
    """Raise ValueError naming the bad value for the HAM keys present in `options`."""
    for key in ("alpha", "beta"):
        if key in options and not _is_finite_number(options[key]):
            raise ValueError(f"{where}: {key} must be a finite number, got {options[key]!r}")
    if "clamp" in options:
        clamp = options["clamp"]
        if not _is_finite_number(clamp) or clamp <= 0:
            raise ValueError(f"{where}: clamp must be a finite number > 0, got {clamp!r}")
    for key in ("mask_beta", "ham"):
        if key in options and not isinstance(options[key], bool):
            raise ValueError(f"{where}: {key} must be True or False, got {options[key]!r}")
    if "sign_source" in options and options["sign_source"] not in SIGN_SOURCES:
        raise ValueError(
            f"{where}: sign_source must be one of {list(SIGN_SOURCES)}, "
            f"got {options['sign_source']!r}"
        )


def _validate_group(group: dict[str, Any], index: int) -> None:
    where = f"HAM param group {index}"
    _validate_ham_options(group, where)
    if "lr" not in group:
        raise ValueError(f"{where} has no 'lr' (keys: {sorted(k for k in group if k != 'params')})")
    if group["ham"]:
        params = group["params"]
        for p in [params] if isinstance(params, Tensor) else params:
            if isinstance(p, Tensor) and not p.is_floating_point():
                raise ValueError(
                    f"{where}: HAM needs real floating-point parameters, got dtype {p.dtype}"
                )


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)
