"""The hyperbolic (HYP*) step of HAM as a functional kernel (REFERENCE §1).

    e     = -lr * (alpha * sign(theta) * g + beta * m)     m = (g != 0) if mask_beta else 1
    e     = clamp(e, -clamp, clamp)
    theta = theta * exp(e)                                  (in place)

`theta` is the weight *after* the base step (HYP*), or, for the "HAM signed" ablation, the
caller passes the signs of the weights before the base step as `signs`.

Three implementations, tested against each other (tests/test_optim_functional.py):

- single-tensor: a plain loop, one tensor at a time (`foreach=False`);
- foreach: `torch._foreach_*` over the tensors of one (device, dtype) bucket (the default);
- fused: the foreach implementation compiled with `torch.compile` (`fused=True`). `lr`,
  `alpha` and `beta` enter as 0-dim tensors, so an LR schedule does not trigger recompiles;
  dynamo recompiles only when the list of tensor shapes / dtypes / `clamp` / `mask_beta`
  changes, i.e. once per HAM param group and (device, dtype). Past dynamo's recompile limit
  (8 by default) further buckets run the same foreach code uncompiled, which is still correct.
  If compiling is unsupported or fails, the kernel logs one warning and uses the foreach
  implementation from then on.

No implementation syncs with the host: no `.item()`, no branches on tensor values (branches
are on Python hyperparameters only, e.g. `beta == 0` skips the shrinkage term). bf16 / fp16
weights compute the exponent and the product in float32 and round once when writing back.

Memory: every implementation allocates transient buffers of the size of the bucket it works on
(the exponent, plus the beta mask when `beta != 0` and `mask_beta`), freed when the call returns.
Nothing persists between steps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["default_fused", "hyperbolic_step_"]

log = logging.getLogger(__name__)

Scalar = float | Tensor

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# The compiled foreach kernel, built on first use; None until then.
_compiled: Callable[..., None] | None = None
# Set after compiling failed once (or is unsupported): the fused path then runs foreach.
_compile_broken = False


def default_fused(params: Sequence[Tensor]) -> bool:
    """`fused=None` resolves to this: compiled on CUDA, foreach everywhere else.

    Why not compiled on CPU as well: the compiled CPU kernel is faster per step (see
    benchmarks/ham_step.py), but compiling takes seconds to tens of seconds per param group and
    process, which outweighs the saving for the short full-batch runs of this project and makes
    every fresh worker process pay it again. Pass `fused=True` to get it anyway.
    """
    return len(params) > 0 and all(p.device.type == "cuda" for p in params)


def hyperbolic_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    *,
    lr: Scalar,
    alpha: Scalar,
    beta: Scalar,
    clamp: float,
    mask_beta: bool = True,
    signs: Sequence[Tensor] | None = None,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Apply the hyperbolic step to `params` in place.

    Args:
        params: weights after the base step (theta_half), updated in place.
        grads: the gradients the base step used, one per weight, same device.
        lr, alpha, beta: floats or 0-dim tensors (on the weights' device to avoid syncs).
        clamp: the exponent is clamped to [-clamp, clamp].
        mask_beta: apply the beta shrinkage only where the gradient is nonzero.
        signs: sign(theta_k) of the weights *before* the base step ("HAM signed" ablation),
            any dtype; None uses sign(params) (HYP*).
        foreach: False selects the single-tensor loop; None / True the foreach kernel.
        fused: True compiles the foreach kernel with torch.compile; None means
            `default_fused(params)`. Takes precedence over `foreach`.
    """
    if len(params) != len(grads) or (signs is not None and len(signs) != len(params)):
        raise ValueError(
            f"params, grads (and signs) must have the same length, got {len(params)}, "
            f"{len(grads)}" + ("" if signs is None else f", {len(signs)}")
        )
    if not params:
        return
    if fused is None:
        fused = default_fused(params)
    if fused:
        _fused_step(params, grads, signs, lr, alpha, beta, clamp, mask_beta)
    elif foreach is False:
        _single_tensor_step(params, grads, signs, lr, alpha, beta, clamp, mask_beta)
    else:
        for bucket in _buckets(params, grads, signs):
            _foreach_bucket(*bucket, _coef(lr, alpha), _coef(lr, beta), clamp, mask_beta)


def _coef(lr: Scalar, factor: Scalar) -> Scalar:
    """-lr * factor, a Python float when both are floats, else a tensor (no sync)."""
    return -(lr * factor)


def _beta_is_zero(beta: Scalar) -> bool:
    """True only for a Python zero: a tensor beta is never inspected (that would sync)."""
    return not isinstance(beta, Tensor) and beta == 0


def _single_tensor_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    signs: Sequence[Tensor] | None,
    lr: Scalar,
    alpha: Scalar,
    beta: Scalar,
    clamp: float,
    mask_beta: bool,
) -> None:
    a, b = _coef(lr, alpha), _coef(lr, beta)
    use_beta = not _beta_is_zero(beta)
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        low = param.dtype in _LOW_PRECISION
        theta = param.float() if low else param
        g = grad.to(theta.dtype)
        sign = torch.sign(theta) if signs is None else signs[i].to(theta.dtype, copy=True)
        e = sign.mul_(g).mul_(a)
        if use_beta:
            if mask_beta:  # same ops as the foreach kernel, so results are identical
                m = torch.sign(g)
                if isinstance(b, Tensor):
                    e.add_(m.abs_().mul_(b))
                else:
                    e.addcmul_(m, m, value=b)
            else:
                e.add_(b)
        e.clamp_(-clamp, clamp).exp_()
        if low:
            param.copy_(theta.mul_(e))
        else:
            param.mul_(e)


def _buckets(
    params: Sequence[Tensor], grads: Sequence[Tensor], signs: Sequence[Tensor] | None
) -> list[tuple[list[Tensor], list[Tensor], list[Tensor] | None]]:
    """Split into buckets of one (device, dtype) of the weights, keeping the order within each."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    out = []
    for idx in groups.values():
        out.append(
            (
                [params[i] for i in idx],
                [grads[i] for i in idx],
                None if signs is None else [signs[i] for i in idx],
            )
        )
    return out


def _foreach_bucket(
    params: list[Tensor],
    grads: list[Tensor],
    signs: list[Tensor] | None,
    a: Scalar,
    b: Scalar,
    clamp: float,
    mask_beta: bool,
    use_beta: bool | None = None,
) -> None:
    """theta *= exp(clamp(a * sign * g + b * m)) for one bucket of same device and dtype.

    `a = -lr * alpha`, `b = -lr * beta` are floats or 0-dim tensors. `use_beta=None` decides
    from `b` (a Python zero skips the term); the compiled path passes True.
    """
    low = params[0].dtype in _LOW_PRECISION
    thetas = [p.float() for p in params] if low else params
    if low or grads[0].dtype != thetas[0].dtype:
        grads = [g.to(thetas[0].dtype) for g in grads]
    if signs is None:
        e = torch._foreach_sign(thetas)
    else:
        e = [s.to(thetas[0].dtype, copy=True) for s in signs]
    torch._foreach_mul_(e, grads)
    torch._foreach_mul_(e, a)
    if use_beta is None:
        use_beta = not _beta_is_zero(b)
    if use_beta:
        if mask_beta:  # m = (g != 0) = sign(g)^2
            m = torch._foreach_sign(grads)
            if isinstance(b, Tensor):
                torch._foreach_abs_(m)
                torch._foreach_mul_(m, b)
                torch._foreach_add_(e, m)
            else:
                torch._foreach_addcmul_(e, m, m, value=b)
            del m
        else:
            torch._foreach_add_(e, b)
    torch._foreach_clamp_min_(e, -clamp)
    torch._foreach_clamp_max_(e, clamp)
    torch._foreach_exp_(e)
    if low:
        torch._foreach_mul_(thetas, e)
        torch._foreach_copy_(params, thetas)
    else:
        torch._foreach_mul_(params, e)


def _compiled_kernel() -> Callable[..., None] | None:
    """The compiled foreach kernel, or None (after logging once) when it cannot be had."""
    global _compiled, _compile_broken
    if _compile_broken:
        return None
    if _compiled is None:
        try:
            import torch._dynamo

            if not torch._dynamo.is_dynamo_supported():
                raise RuntimeError("torch.compile is not supported on this platform")
            _compiled = torch.compile(_foreach_bucket, dynamic=False)
        except Exception as exc:  # any failure means: use the foreach path instead
            _disable_compile(exc)
            return None
    return _compiled


def _disable_compile(exc: BaseException) -> None:
    global _compile_broken
    _compile_broken = True
    log.warning(
        "HAM: the fused (torch.compile) hyperbolic step is unavailable (%s: %s); "
        "using the foreach implementation instead",
        type(exc).__name__,
        exc,
    )


def _scalar(value: Scalar, like: Tensor) -> Tensor:
    """A 0-dim tensor on `like`'s device in its compute dtype (torch.full: no host copy)."""
    dtype = torch.float32 if like.dtype in _LOW_PRECISION else like.dtype
    if isinstance(value, Tensor):
        return value.to(device=like.device, dtype=dtype)
    return torch.full((), value, dtype=dtype, device=like.device)


def _fused_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    signs: Sequence[Tensor] | None,
    lr: Scalar,
    alpha: Scalar,
    beta: Scalar,
    clamp: float,
    mask_beta: bool,
) -> None:
    buckets = _buckets(params, grads, signs)
    kernel = _compiled_kernel()
    while kernel is not None and buckets:
        bucket = buckets[0]
        like = bucket[0][0]
        args: tuple[Any, ...] = (
            *bucket,
            _scalar(_coef(lr, alpha), like),
            _scalar(_coef(lr, beta), like),
            float(clamp),
            bool(mask_beta),
            not _beta_is_zero(beta),
        )
        try:
            kernel(*args)
        except Exception as exc:  # a compile error surfaces at the first call
            _disable_compile(exc)
            break
        buckets.pop(0)
    for bucket in buckets:  # only when compiling failed
        _foreach_bucket(*bucket, _coef(lr, alpha), _coef(lr, beta), clamp, mask_beta)
