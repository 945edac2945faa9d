"""The hyperbolic (HYP*) step of HAM as a functional kernel (REFERENCE §1).

    e     = -lr * (alpha * sign(theta) * g + beta * m)     m = (g != 0) if mask_beta else 1
    e     = clamp(e, -clamp, clamp)
    theta = theta * exp(e)                                  (in place)

`theta` is the weight *after* the base step (HYP*), or, for the "HAM signed" ablation, the
caller passes the signs of the weights before the base step as `signs`.

Hyperparameters (`lr`, `alpha`, `beta`, `clamp`) are each either *shared* (a Python float or a
0-dim tensor) or *per parameter*: a sequence with one entry per weight, each a float or a tensor
broadcastable to that weight. The packed trainer uses the latter for stacked weights of M
models: a weight of shape [M, ...] gets coefficients of shape [M, 1, ..., 1] (one value per
model). Per-parameter coefficients are combined (`-lr * alpha`) in their own dtype and then cast
to the weight's compute dtype, so a float64 pack gives bit-for-bit the result of stepping each
model alone with Python floats (tests/test_optim_functional.py).

The arithmetic is one fixed sequence of elementwise ops, the same in every implementation, so
they give identical results (tested):

    a = -lr * alpha,  b = -lr * beta
    x = (g != 0) * b + (sign(theta) * a) * g      masked beta (unmasked: (sign(theta) * a) * g + b)
    theta *= exp(clamp(x, -clamp, clamp))

sign(theta) * a is exact (0 or +-a), so folding a shared float `a` into `addcmul`'s `value`
gives the same bits as multiplying sign(theta) by a tensor `a` first. Every op gives the same
bits in its vectorized body and its scalar tail (checked for exp on float32 and float64; exp2
does not, which is why the kernel does not use it although it is faster), so the results do not
depend on how the tensors are chunked or split between threads.

Implementations, tested against each other and against the formula in float64:

- single-tensor: a plain loop, one whole tensor at a time (`foreach=False`);
- foreach (the default off CUDA): on CPU, weights larger than `_CHUNK` elements are processed
  in chunks of about `_CHUNK` elements through two reused scratch buffers, so every op after the
  first reads data that is still in cache and no weight-sized buffer is allocated; smaller weights
  go through `torch._foreach_*` ops over the whole (device, dtype) bucket, which saves Python
  overhead. On CUDA the whole bucket uses the `torch._foreach_*` ops. Eager, nothing compiled.
  On CPU (benchmarks/ham_step.py, 1M-50M weights, 1-2 threads) it costs 0.25-0.45 of a
  foreach-Adam step on the benchmark's 8 square layers and on 25 packed models, and 0.45-0.75
  on 1024 x 1024 matrices of unit-scale weights with dense gradients, where Adam itself is
  fast (the previous foreach kernel: 1.7-2.2). `exp` alone is about a third of an Adam step
  there, so half an Adam step is about the floor for any eager version of this formula; the
  compiled kernel (one pass) is the way below it.
- fused: the `torch._foreach_*` version compiled with `torch.compile` (`fused=True`; the default
  on CUDA). `lr`, `alpha` and `beta` enter as tensors, so an LR schedule does not trigger
  recompiles; dynamo recompiles only when the list of tensor shapes / dtypes / a float `clamp` /
  `mask_beta` changes, i.e. once per HAM param group and (device, dtype). Past dynamo's
  recompile limit (8 by default) further buckets run the same code uncompiled, which is still
  correct. If compiling is unsupported or fails, the kernel logs one warning and uses the foreach
  implementation from then on.

No implementation syncs with the host: no `.item()`, no branches on tensor values (branches
are on Python hyperparameters only: a Python-float `beta == 0` skips the shrinkage term; a
tensor beta is never inspected). bf16 / fp16 weights compute the exponent and the product in
float32 and round once when writing back.

Memory: transient buffers only, freed when the call returns; nothing persists between steps.
The chunked CPU path needs two buffers of `_CHUNK` elements; the `_foreach_*` and single-tensor
paths need one or two buffers of the size of the tensors they work on (the exponent, plus the
beta mask when `beta != 0` and `mask_beta`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Coef", "Scalar", "default_fused", "hyperbolic_step_"]

log = logging.getLogger(__name__)

Scalar = float | Tensor
"""A hyperparameter shared by all weights: a Python float or a 0-dim tensor."""
Coef = float | Tensor | Sequence[float | Tensor]
"""Shared (`Scalar`) or per parameter: one float / broadcastable tensor per weight."""

_LOW_PRECISION = (torch.float16, torch.bfloat16)

# Weights with more elements than this are stepped in chunks of about this many elements on
# CPU. 2**17 float32 elements = 512 KiB per buffer: the chunk's four operands (2 MiB) stay in a
# core's L2 / the L3 between the ops, and a chunk is large enough that Python's overhead (about
# 10 calls per chunk) stays around a tenth. Measured on a 16-core Xeon (2 MiB L2 per core) at
# 1 and 2 threads, 10.5M weights in 1024 x 1024 matrices: the hyperbolic step cost 0.43 / 0.53
# of an Adam step with 2**17, 0.81 / 0.83 with 2**19 and 1.40 / 1.34 with 2**21.
_CHUNK = 1 << 17
# Weights with at least this many elements take the chunked path (one chunk up to _CHUNK):
# two reused buffers and 7 in-place ops beat allocating `_foreach_*` ops once Python's ~10
# calls per weight are small against the work; smaller weights go through `_foreach_*` ops.
_CHUNKED_MIN = 1 << 14

# The compiled foreach kernel, built on first use; None until then.
_compiled: Callable[..., None] | None = None
# Set after compiling failed once (or is unsupported): the fused path then runs foreach.
_compile_broken = False


def default_fused(params: Sequence[Tensor]) -> bool:
    """`fused=None` resolves to this: compiled on CUDA, eager foreach everywhere else.

    Decision for CPU, from measurements (benchmarks/ham_step.py, 16-core Xeon pinned to 2
    cores, torch 2.11, 10.5M weights in 1024 x 1024 matrices, 2 threads): the compiled step did
    the hyperbolic step for 0.41-0.50 of an Adam step, the eager chunked one for 0.43-0.83
    (noisy; 0.25-0.45 on the benchmark's square layout and at 50M). But compiling took 80 s with
    an empty inductor cache and still 47 s with it warm (the on-disk cache saves code generation,
    not dynamo's tracing of the step), and every new process and param group pays it. At
    roughly 10-30 ms saved per step on 10M weights, that needs thousands of steps per process
    to repay, while this project runs short full-batch trainings of small models, many in
    short-lived sweep workers. So the on-disk cache does not make compiling worth being the
    default on CPU, even for large models; pass `fused=True` for long runs of large models.
    On CUDA the compiled step (3-9 s to compile) costs 0.34-0.37 of an Adam step against
    0.74-0.76 for the eager foreach ops (one kernel launch per op and tensor list, H100).
    """
    return len(params) > 0 and all(p.device.type == "cuda" for p in params)


def hyperbolic_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    *,
    lr: Coef,
    alpha: Coef,
    beta: Coef,
    clamp: Coef,
    mask_beta: bool = True,
    signs: Sequence[Tensor] | None = None,
    foreach: bool | None = None,
    fused: bool | None = None,
) -> None:
    """Apply the hyperbolic step to `params` in place.

    Args:
        params: weights after the base step (theta_half), updated in place.
        grads: the gradients the base step used, one per weight, same device.
        lr, alpha, beta, clamp: each either shared by all weights (a float or a 0-dim tensor,
            preferably on the weights' device to avoid copies), or per parameter: a sequence
            with one entry per weight, each a float or a tensor broadcastable to that weight
            without changing its shape, e.g. [M, 1, ..., 1] for a weight [M, ...] that stacks
            M models. The exponent is clamped to [-clamp, clamp] (clamp >= 0). Only a Python
            float `beta == 0` skips the shrinkage term; shared or [M, 1, ..., 1] coefficients
            keep the chunked CPU path, other broadcast shapes step that weight unchunked.
        mask_beta: apply the beta shrinkage only where the gradient is nonzero.
        signs: sign(theta_k) of the weights *before* the base step ("HAM signed" ablation),
            any dtype; None uses sign(params) (HYP*).
        foreach: False selects the single-tensor loop; None / True the foreach kernel.
        fused: True compiles the foreach kernel with torch.compile; None means
            `default_fused(params)`. Takes precedence over `foreach`.

    Raises:
        ValueError: lengths differ, a shared tensor coefficient is not 0-dim, or a per-parameter
            coefficient does not broadcast to its weight.
    """
    n = len(params)
    if n != len(grads) or (signs is not None and len(signs) != n):
        raise ValueError(
            f"params, grads (and signs) must have the same length, got {n}, "
            f"{len(grads)}" + ("" if signs is None else f", {len(signs)}")
        )
    if not params:
        return
    use_beta = not (isinstance(beta, (int, float)) and beta == 0)
    a = _combine(lr, alpha, params, "alpha")
    b = _combine(lr, beta, params, "beta")
    c = _per_param(clamp, params, "clamp")
    if fused is None:
        fused = default_fused(params)
    if fused:
        _fused_step(params, grads, signs, a, b, c, mask_beta, use_beta)
    elif foreach is False:
        _single_tensor_step(params, grads, signs, a, b, c, mask_beta, use_beta)
    else:
        for idx in _buckets(params):
            _foreach_bucket_step(params, grads, signs, idx, a, b, c, mask_beta, use_beta)


# ---------------------------------------------------------------------------- coefficients

# A resolved coefficient: one value shared by all weights (float or 0-dim tensor), or a list
# with one float / tensor per weight.
_Resolved = float | Tensor | list[float | Tensor]


def _per_param(value: Coef, params: Sequence[Tensor], name: str) -> _Resolved:
    """Validate a shared or per-parameter coefficient; shared stays shared."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Tensor):
        if value.dim() != 0:
            raise ValueError(
                f"a shared {name} must be a float or a 0-dim tensor, got shape "
                f"{tuple(value.shape)}; pass a sequence with one tensor per parameter instead"
            )
        return value
    values = list(value)
    if len(values) != len(params):
        raise ValueError(
            f"per-parameter {name} needs one entry per parameter ({len(params)}), got {len(values)}"
        )
    out: list[float | Tensor] = []
    for i, (v, p) in enumerate(zip(values, params, strict=True)):
        if isinstance(v, Tensor):
            try:
                ok = torch.broadcast_shapes(v.shape, p.shape) == p.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(
                    f"per-parameter {name}[{i}] of shape {tuple(v.shape)} does not broadcast "
                    f"to its parameter of shape {tuple(p.shape)}"
                )
            out.append(v)
        elif isinstance(v, (int, float)):
            out.append(float(v))
        else:
            raise ValueError(f"per-parameter {name}[{i}] must be a float or a tensor, got {v!r}")
    return out


def _combine(lr: Coef, factor: Coef, params: Sequence[Tensor], name: str) -> _Resolved:
    """-lr * factor, shared when both are shared (a float when both are floats).

    The same operations in the same order for floats and tensors, so a per-model float64
    coefficient equals the Python-float one bit for bit."""
    lr_r = _per_param(lr, params, "lr")
    f_r = _per_param(factor, params, name)
    if not isinstance(lr_r, list) and not isinstance(f_r, list):
        return -(lr_r * f_r)
    lrs = lr_r if isinstance(lr_r, list) else [lr_r] * len(params)
    fs = f_r if isinstance(f_r, list) else [f_r] * len(params)
    return [-(x * y) for x, y in zip(lrs, fs, strict=True)]


def _as_tensor(value: float | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A tensor in the compute dtype on the weights' device (torch.full: no host copy)."""
    if isinstance(value, Tensor):
        return value.to(device=device, dtype=dtype)
    return torch.full((), value, dtype=dtype, device=device)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _LOW_PRECISION else dtype


class _BucketCoefs:
    """The coefficients of one bucket in the form the ops take them: each of `a`, `b`, `lo`,
    `hi` is shared (a float, or a 0-dim tensor in the compute dtype) or a list of tensors, one
    per weight of the bucket. `tensors=True` turns shared floats into 0-dim tensors too (for
    the compiled kernel, so that new values do not recompile)."""

    def __init__(
        self,
        idx: list[int],
        a: _Resolved,
        b: _Resolved,
        c: _Resolved,
        like: Tensor,
        tensors: bool = False,
    ) -> None:
        dtype, device = _compute_dtype(like.dtype), like.device

        def conv(value: _Resolved, list_only: bool = False) -> Any:
            if isinstance(value, list):
                return [_as_tensor(value[i], dtype, device) for i in idx]
            if isinstance(value, Tensor) or (tensors and not list_only):
                out = _as_tensor(value, dtype, device)
                return [out] * len(idx) if list_only else out
            return float(value)

        self.a = conv(a)
        self.b = conv(b)
        # the `_foreach_clamp_*` ops take a float or a list of tensors, not a 0-dim tensor
        self.hi = conv(c, list_only=True)
        self.lo = [-x for x in self.hi] if isinstance(self.hi, list) else -self.hi

    def at(self, k: int) -> tuple[Any, Any, Any, Any]:
        """(a, b, lo, hi) of the k-th weight of the bucket."""
        a = self.a[k] if isinstance(self.a, list) else self.a
        b = self.b[k] if isinstance(self.b, list) else self.b
        lo = self.lo[k] if isinstance(self.lo, list) else self.lo
        hi = self.hi[k] if isinstance(self.hi, list) else self.hi
        return a, b, lo, hi

    def subset(self, ks: list[int]) -> tuple[Any, Any, Any, Any]:
        """(a, b, lo, hi) for the weights ks of the bucket, in the form the list ops take."""

        def sub(v: Any) -> Any:
            return [v[k] for k in ks] if isinstance(v, list) else v

        return sub(self.a), sub(self.b), sub(self.lo), sub(self.hi)


# ---------------------------------------------------------------------------- the arithmetic


def _tensor_ops(
    theta: Tensor,
    grad: Tensor,
    sign: Tensor | None,
    a: float | Tensor,
    b: float | Tensor,
    lo: float | Tensor,
    hi: float | Tensor,
    mask_beta: bool,
    use_beta: bool,
    e: Tensor,
    m: Tensor | None,
) -> None:
    """theta *= exp(clamp(x)) for one tensor (or chunk of one), using the buffers e, m
    (theta's shape, compute dtype). The same ops, in the same order, as `_list_ops`."""
    if sign is None:
        torch.sign(theta, out=e)
    else:
        e.copy_(sign)
    if use_beta and mask_beta:
        assert m is not None
        torch.ne(grad, 0, out=m)
        m.mul_(b)
        if isinstance(a, Tensor):
            e.mul_(a)
            m.addcmul_(e, grad)
        else:  # (a * sign) * g: the same bits as multiplying sign by a tensor a first
            m.addcmul_(e, grad, value=a)
        e = m
    else:
        e.mul_(a).mul_(grad)
        if use_beta:
            e.add_(b)
    e.clamp_(lo, hi)
    e.exp_()
    theta.mul_(e)


def _list_ops(
    thetas: list[Tensor],
    grads: list[Tensor],
    signs: list[Tensor] | None,
    a: float | Tensor | list[Tensor],
    b: float | Tensor | list[Tensor],
    lo: float | list[Tensor],
    hi: float | list[Tensor],
    mask_beta: bool,
    use_beta: bool,
) -> None:
    """`_tensor_ops` over lists with `torch._foreach_*` (compute dtype; thetas in place)."""
    if signs is None:
        e = torch._foreach_sign(thetas)
    else:
        e = [s.to(thetas[0].dtype, copy=True) for s in signs]
    if use_beta and mask_beta:
        m = torch._foreach_sign(grads)  # |sign(g)| = (g != 0), exactly 0 or 1
        torch._foreach_abs_(m)
        torch._foreach_mul_(m, b)
        if isinstance(a, (float, int)):
            torch._foreach_addcmul_(m, e, grads, value=a)
        else:
            torch._foreach_mul_(e, a)
            torch._foreach_addcmul_(m, e, grads)
        e = m
    else:
        torch._foreach_mul_(e, a)
        torch._foreach_mul_(e, grads)
        if use_beta:
            torch._foreach_add_(e, b)
    torch._foreach_clamp_min_(e, lo)
    torch._foreach_clamp_max_(e, hi)
    torch._foreach_exp_(e)
    torch._foreach_mul_(thetas, e)


# ---------------------------------------------------------------------------- implementations


def _single_tensor_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    signs: Sequence[Tensor] | None,
    a: _Resolved,
    b: _Resolved,
    c: _Resolved,
    mask_beta: bool,
    use_beta: bool,
) -> None:
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        coefs = _BucketCoefs([i], a, b, c, param)
        ca, cb, lo, hi = coefs.at(0)
        low = param.dtype in _LOW_PRECISION
        theta = param.float() if low else param
        g = grad.to(theta.dtype)
        e = torch.empty_like(theta, memory_format=torch.contiguous_format)
        m = torch.empty_like(e) if use_beta and mask_beta else None
        sign = None if signs is None else signs[i]
        _tensor_ops(theta, g, sign, ca, cb, lo, hi, mask_beta, use_beta, e, m)
        if low:
            param.copy_(theta)


def _buckets(params: Sequence[Tensor]) -> list[list[int]]:
    """Indices of the weights of each (device, dtype), keeping the order within each."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    return list(groups.values())


def _rows(coef: Tensor | float, p: Tensor) -> int | None:
    """1 for a shared coefficient, p.shape[0] for one of shape [p.shape[0], 1, ..., 1]
    (per model), None for any other broadcast (which is then not chunked)."""
    if not isinstance(coef, Tensor) or coef.numel() == 1:
        return 1
    if coef.dim() == p.dim() and coef.shape[0] == p.shape[0] and coef.numel() == p.shape[0]:
        return p.shape[0]
    return None


def _chunk_rows(
    param: Tensor, grad: Tensor, sign: Tensor | None, coefs: tuple[Any, ...]
) -> int | None:
    """The number of rows R to chunk `param` as [R, -1] by, or None when it is not chunked."""
    if (
        param.device.type != "cpu"
        or param.dtype not in (torch.float32, torch.float64)
        or param.numel() < _CHUNKED_MIN
        or grad.dtype != param.dtype
        or grad.shape != param.shape
        or not (param.is_contiguous() and grad.is_contiguous())
        or (sign is not None and (sign.shape != param.shape or not sign.is_contiguous()))
    ):
        return None
    rows = {_rows(x, param) for x in coefs}
    if None in rows:
        return None
    rows.discard(1)
    return rows.pop() if rows else 1


def _foreach_bucket_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    signs: Sequence[Tensor] | None,
    idx: list[int],
    a: _Resolved,
    b: _Resolved,
    c: _Resolved,
    mask_beta: bool,
    use_beta: bool,
) -> None:
    """One (device, dtype) bucket: large CPU weights chunked, the rest with `_foreach_*`."""
    coefs = _BucketCoefs(idx, a, b, c, params[idx[0]])
    listed: list[int] = []  # positions k in the bucket done with the list ops
    e_buf: Tensor | None = None
    m_buf: Tensor | None = None
    for k, i in enumerate(idx):
        sign = None if signs is None else signs[i]
        ca, cb, lo, hi = coefs.at(k)
        rows = _chunk_rows(params[i], grads[i], sign, (ca, cb, lo, hi))
        if rows is None:
            listed.append(k)
            continue
        if e_buf is None or e_buf.numel() < rows:
            size = max(_CHUNK, rows)
            e_buf = params[i].new_empty(size)
            m_buf = params[i].new_empty(size) if use_beta and mask_beta else None
        _chunked(params[i], grads[i], sign, rows, ca, cb, lo, hi, mask_beta, use_beta, e_buf, m_buf)
    if listed:
        ps = [params[idx[k]] for k in listed]
        gs = [grads[idx[k]] for k in listed]
        ss = None if signs is None else [signs[idx[k]] for k in listed]
        _list_bucket(ps, gs, ss, *coefs.subset(listed), mask_beta, use_beta)


def _per_row(x: Any, rows: int) -> Any:
    """A coefficient as [rows, 1] for the [rows, -1] view of its weight (shared ones as is)."""
    if isinstance(x, Tensor) and x.numel() > 1:
        return x.reshape(rows, 1)
    if isinstance(x, Tensor) and x.dim() > 0:
        return x.reshape(())
    return x


def _chunked(
    param: Tensor,
    grad: Tensor,
    sign: Tensor | None,
    rows: int,
    a: float | Tensor,
    b: float | Tensor,
    lo: float | Tensor,
    hi: float | Tensor,
    mask_beta: bool,
    use_beta: bool,
    e_buf: Tensor,
    m_buf: Tensor | None,
) -> None:
    """`_tensor_ops` on column chunks of the [rows, -1] view of a contiguous weight (1-d
    chunks when rows == 1); `split` makes all chunk views in one call."""
    a, b, lo, hi = (_per_row(x, rows) for x in (a, b, lo, hi))
    width = max(1, e_buf.numel() // rows)
    shape = (-1,) if rows == 1 else (rows, -1)
    dim = len(shape) - 1
    thetas = param.view(shape).split(width, dim)
    grads = grad.view(shape).split(width, dim)
    signs = [None] * len(thetas) if sign is None else sign.view(shape).split(width, dim)
    for theta, g, s in zip(thetas, grads, signs, strict=True):
        n = theta.numel()
        e = e_buf[:n].view(theta.shape)
        m = None if m_buf is None else m_buf[:n].view(theta.shape)
        _tensor_ops(theta, g, s, a, b, lo, hi, mask_beta, use_beta, e, m)


def _list_bucket(
    params: list[Tensor],
    grads: list[Tensor],
    signs: list[Tensor] | None,
    a: float | Tensor | list[Tensor],
    b: float | Tensor | list[Tensor],
    lo: float | list[Tensor],
    hi: float | list[Tensor],
    mask_beta: bool,
    use_beta: bool,
) -> None:
    """`_list_ops` for weights of one device and dtype; bf16 / fp16 computed in float32."""
    low = params[0].dtype in _LOW_PRECISION
    thetas = [p.float() for p in params] if low else params
    if low or grads[0].dtype != thetas[0].dtype:
        grads = [g.to(thetas[0].dtype) for g in grads]
    _list_ops(thetas, grads, signs, a, b, lo, hi, mask_beta, use_beta)
    if low:
        torch._foreach_copy_(params, thetas)


# ---------------------------------------------------------------------------- compiled


def _compiled_kernel() -> Callable[..., None] | None:
    """The compiled list kernel, or None (after logging once) when it cannot be had."""
    global _compiled, _compile_broken
    if _compile_broken:
        return None
    if _compiled is None:
        try:
            import torch._dynamo

            if not torch._dynamo.is_dynamo_supported():
                raise RuntimeError("torch.compile is not supported on this platform")
            _compiled = torch.compile(_list_bucket, dynamic=False)
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


def _fused_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    signs: Sequence[Tensor] | None,
    a: _Resolved,
    b: _Resolved,
    c: _Resolved,
    mask_beta: bool,
    use_beta: bool,
) -> None:
    buckets = _buckets(params)
    kernel = _compiled_kernel()
    while kernel is not None and buckets:
        idx = buckets[0]
        coefs = _BucketCoefs(idx, a, b, c, params[idx[0]], tensors=True)
        args: tuple[Any, ...] = (
            [params[i] for i in idx],
            [grads[i] for i in idx],
            None if signs is None else [signs[i] for i in idx],
            *coefs.subset(list(range(len(idx)))),
            bool(mask_beta),
            use_beta,
        )
        try:
            kernel(*args)
        except Exception as exc:  # a compile error surfaces at the first call
            _disable_compile(exc)
            break
        buckets.pop(0)
    for idx in buckets:  # only when compiling failed
        _foreach_bucket_step(params, grads, signs, idx, a, b, c, mask_beta, use_beta)
