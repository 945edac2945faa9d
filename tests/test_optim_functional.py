"""The hyperbolic-step kernel: single-tensor, foreach and compiled paths against the formula."""

from __future__ import annotations

import logging

import pytest
import torch

from hamgraph.optim import functional
from hamgraph.optim.functional import default_fused, hyperbolic_step_


def _reference(theta, grad, *, lr, alpha, beta, clamp, mask_beta, sign=None):
    """The formula of REFERENCE §1, literally, in float64."""
    t, g = theta.double(), grad.double()
    s = torch.sign(t) if sign is None else sign.double()
    m = (g != 0).double() if mask_beta else torch.ones_like(g)
    e = -lr * (alpha * s * g + beta * m)
    e = torch.clamp(e, -clamp, clamp)
    return t * torch.exp(e)


def _tensors(dtype=torch.float32, seed=0):
    """Three weights with exact zeros in weights and gradients, gradients big enough to clamp."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (11,), (3, 2, 4)]
    params = [torch.randn(s, generator=gen) for s in shapes]
    grads = [3 * torch.randn(s, generator=gen) for s in shapes]
    for p, g in zip(params, grads, strict=True):
        p.view(-1)[::4] = 0.0  # weights at exactly 0
        g.view(-1)[1::3] = 0.0  # gradients at exactly 0 (dropout)
    return [p.to(dtype) for p in params], [g.to(dtype) for g in grads]


HYPER = [
    dict(lr=0.05, alpha=200.0, beta=0.1, clamp=5.0, mask_beta=True),
    dict(lr=0.05, alpha=-10.0, beta=0.0, clamp=5.0, mask_beta=True),
    dict(lr=0.01, alpha=0.0, beta=0.1, clamp=5.0, mask_beta=False),
    dict(lr=0.02, alpha=200.0, beta=0.1, clamp=1.0, mask_beta=False),
]


@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("foreach", [False, True])
def test_matches_formula(hyper, foreach):
    params, grads = _tensors()
    expected = [_reference(p, g, **hyper) for p, g in zip(params, grads, strict=True)]
    hyperbolic_step_(params, grads, **hyper, foreach=foreach, fused=False)
    for p, exp in zip(params, expected, strict=True):
        torch.testing.assert_close(p.double(), exp, rtol=1e-5, atol=1e-7)


def test_clamp_binds_and_zeros_stay_zero():
    params, grads = _tensors()
    hyper = HYPER[0]
    exponents = [
        (-hyper["lr"] * hyper["alpha"] * torch.sign(p) * g).abs().max()
        for p, g in zip(params, grads, strict=True)
    ]
    assert max(exponents) > 3 * hyper["clamp"]  # the test data really exercises the clamp
    before = [p.clone() for p in params]
    hyperbolic_step_(params, grads, **hyper, fused=False)
    bound = torch.exp(torch.tensor(hyper["clamp"]))
    for p, p0 in zip(params, before, strict=True):
        zero = p0 == 0
        assert zero.any() and torch.all(p[zero] == 0)
        ratio = p[~zero] / p0[~zero]
        assert torch.isfinite(ratio).all()
        assert ratio.max() <= bound * (1 + 1e-6) and ratio.min() >= (1 - 1e-6) / bound
        assert ratio.max() >= bound * (1 - 1e-6)  # some entries hit the clamp


@pytest.mark.parametrize("hyper", HYPER)
def test_single_tensor_and_foreach_are_identical(hyper):
    a_params, grads = _tensors()
    b_params, _ = _tensors()
    hyperbolic_step_(a_params, grads, **hyper, foreach=False, fused=False)
    hyperbolic_step_(b_params, grads, **hyper, foreach=True, fused=False)
    for a, b in zip(a_params, b_params, strict=True):
        assert torch.equal(a, b)


def test_previous_signs_and_tensor_scalars():
    """`signs` replaces sign(theta); 0-dim tensor lr/alpha/beta give the float result."""
    params, grads = _tensors()
    signs = [-torch.sign(p).to(torch.int8) for p in params]  # flipped: must change the result
    hyper = dict(lr=0.01, alpha=10.0, beta=0.1, clamp=5.0, mask_beta=True)
    expected = [
        _reference(p, g, **hyper, sign=s) for p, g, s in zip(params, grads, signs, strict=True)
    ]
    plain = [_reference(p, g, **hyper) for p, g in zip(params, grads, strict=True)]
    tensor_hyper = {
        k: torch.tensor(v) if k in ("lr", "alpha", "beta") else v for k, v in hyper.items()
    }
    for foreach in (False, True):
        got, _ = _tensors()
        sig = [s.clone() for s in signs]
        hyperbolic_step_(got, grads, **tensor_hyper, signs=sig, foreach=foreach, fused=False)
        for p, exp, base, s, s0 in zip(got, expected, plain, sig, signs, strict=True):
            torch.testing.assert_close(p.double(), exp, rtol=1e-5, atol=1e-7)
            assert not torch.allclose(p.double(), base)
            assert torch.equal(s, s0)  # the caller's signs are not modified


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_computes_in_float32(dtype):
    params, grads = _tensors(dtype)
    hyper = HYPER[0]
    expected = [
        _reference(p.float(), g.float(), **hyper).to(dtype)
        for p, g in zip(params, grads, strict=True)
    ]
    for foreach in (False, True):
        got = [p.clone() for p in params]
        hyperbolic_step_(got, grads, **hyper, foreach=foreach, fused=False)
        for p, exp in zip(got, expected, strict=True):
            assert p.dtype == dtype
            torch.testing.assert_close(p.float(), exp.float(), rtol=1e-2, atol=1e-3)


def test_mixed_dtypes_are_bucketed():
    p32, g32 = _tensors(torch.float32)
    p64, g64 = _tensors(torch.float64, seed=1)
    params, grads = [p32[0], p64[0], p32[1], p64[1]], [g32[0], g64[0], g32[1], g64[1]]
    hyper = HYPER[0]
    expected = [_reference(p, g, **hyper) for p, g in zip(params, grads, strict=True)]
    hyperbolic_step_(params, grads, **hyper, fused=False)
    for p, exp in zip(params, expected, strict=True):
        torch.testing.assert_close(p.double(), exp, rtol=1e-5, atol=1e-7)


def test_length_mismatch_is_a_clear_error():
    params, grads = _tensors()
    with pytest.raises(ValueError, match="same length"):
        hyperbolic_step_(params, grads[:2], lr=0.1, alpha=1.0, beta=0.0, clamp=5.0)


def test_default_is_foreach_on_cpu():
    params, _ = _tensors()
    assert default_fused(params) is False


def test_compile_failure_falls_back_once(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(functional, "_compiled", broken)
    monkeypatch.setattr(functional, "_compile_broken", False)
    params, grads = _tensors()
    expected, _ = _tensors()
    hyper = HYPER[0]
    hyperbolic_step_(expected, grads, **hyper, fused=False)
    with caplog.at_level(logging.WARNING, logger="hamgraph.optim.functional"):
        hyperbolic_step_(params, grads, **hyper, fused=True)
        again, _ = _tensors()
        hyperbolic_step_(again, grads, **hyper, fused=True)
    assert sum("unavailable" in r.message for r in caplog.records) == 1
    for p, e, a in zip(params, expected, again, strict=True):
        assert torch.equal(p, e) and torch.equal(a, e)


def test_fused_matches_foreach_without_recompiles():
    """The compiled kernel (one small compile) equals foreach; new lr/alpha/beta don't recompile."""
    from torch._dynamo.utils import counters

    if functional._compile_broken:
        pytest.skip("torch.compile is unavailable here")
    gen = torch.Generator().manual_seed(3)
    shapes = [(6, 4), (4,)]
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    grads[0][0] = 0.0
    compiles = None
    for lr, alpha, beta in [(0.01, 200.0, 0.1), (0.005, 200.0, 0.1), (0.02, -10.0, 0.01)]:
        hyper = dict(lr=lr, alpha=alpha, beta=beta, clamp=5.0, mask_beta=True)
        fused = [p.clone() for p in start]
        hyperbolic_step_(fused, grads, **hyper, fused=True)
        if functional._compile_broken:
            pytest.skip("torch.compile failed here (fell back to foreach)")
        eager = [p.clone() for p in start]
        hyperbolic_step_(eager, grads, **hyper, fused=False)
        for f, e in zip(fused, eager, strict=True):
            torch.testing.assert_close(f, e, rtol=1e-6, atol=1e-7)
        graphs = counters["stats"]["unique_graphs"]
        if compiles is None:
            compiles = graphs
        assert graphs == compiles, "changing lr/alpha/beta recompiled the fused kernel"


# ---------------------------------------------------------------- chunked CPU path, per-model


def _chunk(monkeypatch, size):
    """Step weights of more than 16 elements in chunks of `size` elements."""
    monkeypatch.setattr(functional, "_CHUNK", size)
    monkeypatch.setattr(functional, "_CHUNKED_MIN", 16)


def _big(dtype=torch.float64, seed=5, models=0):
    """Weights larger than a small _CHUNK: a matrix, a vector, a 3-d tensor (stacked when
    models > 0), with exact zeros in weights and gradients."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [(37, 29), (301,), (6, 5, 11)]
    if models:
        shapes = [(models, *s) for s in shapes]
    params = [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [3 * torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]
    for p, g in zip(params, grads, strict=True):
        p.view(-1)[::7] = 0.0
        g.view(-1)[2::5] = 0.0
    return [p.to(dtype) for p in params], [g.to(dtype) for g in grads]


@pytest.mark.parametrize("hyper", HYPER)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_equals_single_tensor_and_formula(monkeypatch, hyper, dtype):
    """Weights above _CHUNK are stepped in chunks: same bits as the whole-tensor loop."""
    _chunk(monkeypatch, 64)
    params, grads = _big(dtype)
    expected = [_reference(p, g, **hyper) for p, g in zip(params, grads, strict=True)]
    single = [p.clone() for p in params]
    hyperbolic_step_(single, grads, **hyper, foreach=False, fused=False)
    hyperbolic_step_(params, grads, **hyper, foreach=True, fused=False)
    for p, s, exp in zip(params, single, expected, strict=True):
        assert torch.equal(p, s)
        torch.testing.assert_close(p.double(), exp, rtol=1e-5, atol=1e-7)


def test_chunked_equals_list_ops(monkeypatch):
    """The chunked path and the `_foreach_*` path (all weights below _CHUNK) agree exactly,
    with shared tensor coefficients and previous signs too."""
    params, grads = _big(torch.float32)
    signs = [torch.sign(torch.randn_like(p)).to(torch.int8) for p in params]
    hyper = dict(lr=torch.tensor(0.03), alpha=150.0, beta=torch.tensor(0.2), clamp=2.0)
    listed = [p.clone() for p in params]
    hyperbolic_step_(listed, grads, **hyper, signs=signs, fused=False)  # default _CHUNK: lists
    _chunk(monkeypatch, 50)
    hyperbolic_step_(params, grads, **hyper, signs=signs, fused=False)
    for p, q in zip(params, listed, strict=True):
        assert torch.equal(p, q)


def test_non_contiguous_weight_is_not_chunked(monkeypatch):
    _chunk(monkeypatch, 16)
    params, grads = _big(torch.float64)
    hyper = HYPER[0]
    t = params[0].t()  # a transposed view: stepped whole, in place through the view
    g = grads[0].t()
    expected = _reference(t, g, **hyper)
    hyperbolic_step_([t], [g], **hyper, fused=False)
    torch.testing.assert_close(t, expected, rtol=1e-12, atol=0)


def _per_model_view(values, p):
    return values.view(-1, *[1] * (p.dim() - 1))


@pytest.mark.parametrize("mask_beta", [True, False])
@pytest.mark.parametrize("chunk", [None, 40, 2])  # 2: fewer than the 4 rows
@pytest.mark.parametrize("foreach", [True, False])
def test_packed_equals_per_model_loop(monkeypatch, mask_beta, chunk, foreach):
    """Stacked weights [M, ...] with per-model lr, alpha, beta, clamp give, bit for bit in
    float64, what stepping each model alone with Python floats gives."""
    if chunk is not None:
        _chunk(monkeypatch, chunk)
    models = 4
    params, grads = _big(torch.float64, models=models)
    lr = torch.tensor([0.05, 0.01, 0.02, 0.05], dtype=torch.float64)
    alpha = torch.tensor([200.0, -10.0, 0.0, 50.0], dtype=torch.float64)
    beta = torch.tensor([0.1, 0.0, 0.3, 0.01], dtype=torch.float64)
    clamp = torch.tensor([5.0, 1.0, 0.5, 5.0], dtype=torch.float64)
    loop = [p.clone() for p in params]
    hyperbolic_step_(
        params,
        grads,
        lr=[_per_model_view(lr, p) for p in params],
        alpha=[_per_model_view(alpha, p) for p in params],
        beta=[_per_model_view(beta, p) for p in params],
        clamp=[_per_model_view(clamp, p) for p in params],
        mask_beta=mask_beta,
        foreach=foreach,
        fused=False,
    )
    for k in range(models):
        one = [p[k].clone() for p in loop]
        hyperbolic_step_(
            one,
            [g[k] for g in grads],
            lr=lr[k].item(),
            alpha=alpha[k].item(),
            beta=beta[k].item(),
            clamp=clamp[k].item(),
            mask_beta=mask_beta,
            foreach=foreach,
            fused=False,
        )
        for p, q in zip(params, one, strict=True):
            assert torch.equal(p[k], q), f"model {k} differs"
    for p, start in zip(params, loop, strict=True):
        assert not torch.equal(p, start)  # the step did something


def test_per_parameter_floats_and_shared_mix():
    """A per-parameter list may hold floats; shared and per-parameter values mix."""
    params, grads = _tensors(torch.float64)
    alphas = [200.0, -10.0, 0.0]
    expected = [
        _reference(p, g, lr=0.05, alpha=a, beta=0.1, clamp=5.0, mask_beta=True)
        for p, g, a in zip(params, grads, alphas, strict=True)
    ]
    hyperbolic_step_(params, grads, lr=0.05, alpha=alphas, beta=0.1, clamp=5.0, fused=False)
    for p, exp in zip(params, expected, strict=True):
        torch.testing.assert_close(p, exp, rtol=1e-12, atol=1e-15)


def test_fused_takes_per_model_coefficients():
    if functional._compile_broken:
        pytest.skip("torch.compile is unavailable here")
    params, grads = _big(torch.float32, models=3)
    alpha = torch.tensor([200.0, -10.0, 50.0])
    coef = [_per_model_view(alpha, p) for p in params]
    fused = [p.clone() for p in params]
    hyperbolic_step_(fused, grads, lr=0.01, alpha=coef, beta=0.1, clamp=5.0, fused=True)
    if functional._compile_broken:
        pytest.skip("torch.compile failed here (fell back to foreach)")
    hyperbolic_step_(params, grads, lr=0.01, alpha=coef, beta=0.1, clamp=5.0, fused=False)
    for f, e in zip(fused, params, strict=True):
        torch.testing.assert_close(f, e, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(alpha=torch.ones(3)), "0-dim"),
        (dict(beta=[0.1, 0.1]), "one entry per parameter"),
        (dict(lr=[torch.ones(2, 1), 0.1, 0.1]), "does not broadcast"),
        (dict(clamp=["5", 5.0, 5.0]), "float or a tensor"),
    ],
)
def test_bad_coefficients_are_clear_errors(kwargs, match):
    params, grads = _tensors()
    hyper = dict(lr=0.1, alpha=1.0, beta=0.1, clamp=5.0) | kwargs
    with pytest.raises(ValueError, match=match):
        hyperbolic_step_(params, grads, **hyper, fused=False)
