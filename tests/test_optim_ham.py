"""HAM as an optimizer: the formula on top of Adam / AdamW / SGD, groups, schedulers, state."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from hamgraph.optim import HAM

BASES = {
    "adam": (torch.optim.Adam, dict(lr=0.05, weight_decay=5e-4)),
    "adamw": (torch.optim.AdamW, dict(lr=0.05, weight_decay=1e-2)),
    "sgd": (torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=5e-4)),
}


def _grad_sequence(shapes, steps, seed=0):
    """Fixed gradients with exact zeros, large enough that some exponents pass the clamp."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        grads = [3 * torch.randn(s, generator=gen) for s in shapes]
        for g in grads:
            g.view(-1)[torch.rand(g.numel(), generator=gen) < 0.3] = 0.0
        out.append(grads)
    return out


def _params(shapes, seed=1):
    gen = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    with torch.no_grad():
        params[0].view(-1)[:3] = 0.0
    return params


def _hyperbolic_reference(theta, g, *, lr, alpha, beta, clamp, mask_beta):
    t, g = theta.double(), g.double()
    m = (g != 0).double() if mask_beta else torch.ones_like(g)
    e = torch.clamp(-lr * (alpha * torch.sign(t) * g + beta * m), -clamp, clamp)
    return (t * torch.exp(e)).to(theta.dtype), e


@pytest.mark.parametrize("base_name", sorted(BASES))
@pytest.mark.parametrize("alpha", [200.0, -10.0, 0.0])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_step_matches_per_tensor_reference(base_name, alpha, beta):
    """HAM(base) == base step, then the REFERENCE §1 formula, for several steps."""
    base_cls, kwargs = BASES[base_name]
    shapes = [(5, 4), (4,), (3, 3)]
    grads_seq = _grad_sequence(shapes, steps=4)
    ham_params, ref_params = _params(shapes), _params(shapes)
    ham = HAM(ham_params, base=base_cls, alpha=alpha, beta=beta, clamp=5.0, **kwargs)
    ref_base = base_cls(ref_params, **kwargs)
    clamped = False
    for grads in grads_seq:
        for p, q, g in zip(ham_params, ref_params, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ham.step()
        ref_base.step()
        with torch.no_grad():
            for q, g in zip(ref_params, grads, strict=True):
                new, e = _hyperbolic_reference(
                    q, g, lr=kwargs["lr"], alpha=alpha, beta=beta, clamp=5.0, mask_beta=True
                )
                clamped |= bool((e.abs() >= 5.0).any())
                q.copy_(new)
        for p, g in zip(ham_params, grads, strict=True):
            assert torch.equal(p.grad, g)  # the base step did not touch p.grad
        for p, q in zip(ham_params, ref_params, strict=True):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert clamped == (alpha == 200.0)  # large alpha exercises the clamp


def test_no_state_beyond_the_base():
    shapes = [(5, 4), (4,)]
    ham_params, base_params = _params(shapes), _params(shapes)
    ham = HAM(ham_params, base=torch.optim.Adam, alpha=200.0, beta=0.1, lr=0.01)
    plain = torch.optim.Adam(base_params, lr=0.01)
    for grads in _grad_sequence(shapes, steps=2):
        for p, q, g in zip(ham_params, base_params, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        ham.step()
        plain.step()
    assert ham.state is ham.base.state and ham.param_groups is ham.base.param_groups
    ham_sd, plain_sd = ham.state_dict(), plain.state_dict()
    assert ham_sd["state"].keys() == plain_sd["state"].keys()
    for k, v in ham_sd["state"].items():
        assert v.keys() == plain_sd["state"][k].keys()
    (group,) = ham_sd["param_groups"]
    extra = set(group) - set(plain_sd["param_groups"][0])
    assert extra == {"alpha", "beta", "clamp", "mask_beta", "ham", "sign_source"}
    assert not any(isinstance(group[k], torch.Tensor) for k in extra)


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))


def _train(model, opt, sched, data, steps):
    x, y = data
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()


@pytest.mark.parametrize("sign_source", ["current", "previous"])
def test_state_dict_round_trip_continues_bit_identically(sign_source):
    gen = torch.Generator().manual_seed(0)
    data = (torch.randn(32, 6, generator=gen), torch.randint(0, 3, (32,), generator=gen))

    def make(model):
        groups = [
            {"params": model[0].parameters(), "alpha": -10.0},
            {"params": model[2].parameters(), "ham": False},
        ]
        opt = HAM(
            groups, base=torch.optim.AdamW, alpha=200.0, beta=0.1, lr=0.01,
            weight_decay=1e-2, sign_source=sign_source,
        )  # fmt: skip
        return opt, torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)

    model = _mlp()
    opt, sched = make(model)
    _train(model, opt, sched, data, steps=5)
    buffer = io.BytesIO()
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer
    )
    _train(model, opt, sched, data, steps=5)

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = _mlp()
    resumed.load_state_dict(saved["model"])
    opt2, sched2 = make(resumed)
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    assert opt2.param_groups is opt2.base.param_groups and opt2.state is opt2.base.state
    assert opt2.param_groups[0]["alpha"] == -10.0 and opt2.param_groups[1]["ham"] is False
    _train(resumed, opt2, sched2, data, steps=5)
    for a, b in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt.state_dict()["param_groups"] == opt2.state_dict()["param_groups"]


def test_scheduler_lr_sets_the_hyperbolic_step():
    """With SGD the whole step is a function of the current lr; LambdaLR must reach HAM's step."""
    shapes = [(6,)]
    grads_seq = _grad_sequence(shapes, steps=3, seed=4)
    params = _params(shapes, seed=5)
    start = params[0].detach().clone()
    opt = HAM(params, base=torch.optim.SGD, alpha=10.0, beta=0.1, lr=0.1, mask_beta=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.5**epoch)
    expected, fixed_lr = start.clone(), start.clone()
    for step, (g,) in enumerate(grads_seq):
        lr = 0.1 * 0.5**step
        params[0].grad = g.clone()
        opt.step()
        sched.step()
        expected, _ = _hyperbolic_reference(
            expected - lr * g, g, lr=lr, alpha=10.0, beta=0.1, clamp=5.0, mask_beta=False
        )
        fixed_lr, _ = _hyperbolic_reference(
            fixed_lr - lr * g, g, lr=0.1, alpha=10.0, beta=0.1, clamp=5.0, mask_beta=False
        )
    torch.testing.assert_close(params[0].detach(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(params[0].detach(), fixed_lr, rtol=1e-3)


def test_ham_false_group_gets_only_the_base_step():
    shapes = [(4, 3), (5,)]
    grads_seq = _grad_sequence(shapes, steps=3)
    params, plain_params = _params(shapes), _params(shapes)
    opt = HAM(
        [{"params": [params[0]]}, {"params": [params[1]], "ham": False}],
        base=torch.optim.Adam,
        alpha=200.0,
        beta=0.1,
        lr=0.05,
    )
    plain = torch.optim.Adam(plain_params, lr=0.05)
    for grads in grads_seq:
        for p, q, g in zip(params, plain_params, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        plain.step()
    assert torch.equal(params[1], plain_params[1])
    assert not torch.allclose(params[0], plain_params[0])


def test_group_overrides_alpha_beta():
    shapes = [(4,), (4,)]
    (grads,) = _grad_sequence(shapes, steps=1)
    params = _params(shapes)
    start = [p.detach().clone() for p in params]
    opt = HAM(
        [{"params": [params[0]], "alpha": -10.0, "beta": 0.0}, {"params": [params[1]]}],
        base=torch.optim.SGD,
        alpha=200.0,
        beta=0.1,
        lr=0.01,
    )
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()
    for p, p0, g, (alpha, beta) in zip(
        params, start, grads, [(-10.0, 0.0), (200.0, 0.1)], strict=True
    ):
        expected, _ = _hyperbolic_reference(
            p0 - 0.01 * g, g, lr=0.01, alpha=alpha, beta=beta, clamp=5.0, mask_beta=True
        )
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6)


def test_grad_none_skipped_and_zeros_stay_zero():
    used = nn.Parameter(torch.tensor([0.0, 1.0, -2.0, 0.0]))
    unused = nn.Parameter(torch.tensor([1.0, -1.0]))
    opt = HAM([used, unused], base=torch.optim.Adam, alpha=200.0, beta=0.1, mask_beta=False, lr=0.1)
    for _ in range(3):
        used.grad = torch.tensor([0.0, 0.5, 0.5, 0.0])  # zero gradient where the weight is 0
        opt.step()
    assert used[0] == 0 and used[3] == 0
    assert used[1] != 1.0 and used[2] != -2.0
    assert torch.equal(unused.detach(), torch.tensor([1.0, -1.0]))
    assert unused not in opt.state


def test_add_param_group_reaches_base_and_ham():
    first, second = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = HAM([first], base=torch.optim.SGD, alpha=10.0, beta=0.0, lr=0.1)
    opt.add_param_group({"params": [second], "alpha": -10.0})
    assert opt.base.param_groups[1] is opt.param_groups[1]
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["sign_source"] == "current"
    g = torch.tensor([1.0, -1.0, 0.5])
    first.grad, second.grad = g.clone(), g.clone()
    opt.step()
    for p, alpha in [(first, 10.0), (second, -10.0)]:
        expected, _ = _hyperbolic_reference(
            torch.ones(3) - 0.1 * g, g, lr=0.1, alpha=alpha, beta=0.0, clamp=5.0, mask_beta=True
        )
        torch.testing.assert_close(p.detach(), expected)


def test_closure_and_deepcopy():
    model = _mlp()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    opt = HAM(model.parameters(), base=torch.optim.Adam, alpha=10.0, beta=0.01, lr=0.01)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and torch.isfinite(loss)
    clone = copy.deepcopy(opt)
    assert clone.param_groups is clone.base.param_groups and clone.state is clone.base.state


class _NoLr(torch.optim.Optimizer):
    def __init__(self, params):
        super().__init__(params, {})

    def step(self, closure=None):
        return None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(alpha=float("nan")), "alpha must be a finite number, got nan"),
        (dict(beta=float("inf")), "beta must be a finite number, got inf"),
        (dict(clamp=0.0), "clamp must be a finite number > 0, got 0.0"),
        (dict(clamp=-1), "clamp must be a finite number > 0, got -1"),
        (dict(sign_source="before"), "sign_source must be one of .* got 'before'"),
        (dict(mask_beta="yes"), "mask_beta must be True or False, got 'yes'"),
        (dict(base=nn.Linear), "torch.optim.Optimizer subclass, got <class"),
        (dict(base="adam"), "torch.optim.Optimizer subclass, got 'adam'"),
        (dict(base=_NoLr), "param group 0 has no 'lr'"),
        (dict(fused="yes"), "fused must be True, False or None, got 'yes'"),
        (dict(momentun=0.9), "cannot build the base optimizer Adam with .*momentun"),
    ],
)
def test_bad_arguments_are_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HAM([nn.Parameter(torch.ones(2))], **kwargs)


def test_bad_group_override_names_the_group():
    with pytest.raises(ValueError, match=r"param group 1: alpha must be a finite number, got nan"):
        HAM(
            [{"params": [nn.Parameter(torch.ones(2))]},
             {"params": [nn.Parameter(torch.ones(2))], "alpha": float("nan")}],
            lr=0.1,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"floating-point parameters, got dtype torch\.int64"):
        HAM([torch.ones(2, dtype=torch.long)], lr=0.1)


def _sparse_regression(alpha, *, steps=2000, lr=0.002, seed=0):
    """Under-determined least squares (40 x 100) with a 5-sparse truth, from w = 0."""
    gen = torch.Generator().manual_seed(seed)
    n, d = 40, 100
    x = torch.randn(n, d, generator=gen) / n**0.5
    truth = torch.zeros(d)
    support = torch.randperm(d, generator=gen)[:5]
    truth[support] = torch.randn(5, generator=gen).sign() * (1 + torch.rand(5, generator=gen))
    y = x @ truth
    w = nn.Parameter(torch.zeros(d))
    if alpha is None:
        opt = torch.optim.SGD([w], lr=lr)
    else:
        opt = HAM([w], base=torch.optim.SGD, alpha=alpha, beta=0.0, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (x @ w - y).square().sum()).backward()
        opt.step()
    with torch.no_grad():
        residual = (x @ w - y).norm() / y.norm()
        return residual.item(), w.abs().sum().item(), (w - truth).norm().item()


def test_sparse_linear_regression_ham_finds_the_sparse_solution():
    """The paper's toy: HAM with large alpha has an L1-like implicit bias, GD an L2-like one."""
    gd_res, gd_l1, gd_err = _sparse_regression(None)
    ham_res, ham_l1, ham_err = _sparse_regression(200.0)
    assert ham_res < 1e-3  # HAM interpolates the data
    assert gd_res < 0.1
    assert ham_l1 < 0.7 * gd_l1
    assert ham_err < 0.4 * gd_err


@pytest.mark.parametrize("sign_source", ["current", "previous"])
def test_sign_source(sign_source):
    """ "previous" (HAM signed) uses sign(theta_k), "current" (HYP*) sign(theta_half)."""
    theta = nn.Parameter(torch.tensor([0.05, -0.05, 1.0]))
    g = torch.tensor([1.0, -1.0, 0.5])
    opt = HAM([theta], base=torch.optim.SGD, alpha=10.0, beta=0.0, lr=0.1, sign_source=sign_source)
    theta.grad = g.clone()
    opt.step()
    half = torch.tensor([0.05, -0.05, 1.0]) - 0.1 * g  # the base step flips the first two signs
    sign = torch.sign(half) if sign_source == "current" else torch.tensor([1.0, -1.0, 1.0])
    expected = half * torch.exp(torch.clamp(-0.1 * 10.0 * sign * g, -5.0, 5.0))
    torch.testing.assert_close(theta.detach(), expected)
    assert len(opt.state) == 0  # plain SGD keeps no state, and neither does HAM
