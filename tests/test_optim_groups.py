"""Which parameters HAM targets, and the optimizer factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_geometric.nn import GATv2Conv, GCNConv

from hamgraph.errors import UnknownNameError, UserInputError
from hamgraph.optim import (
    HAM,
    build_optimizer,
    check_base_options,
    ham_param_groups,
    ham_target_names,
    ham_target_params,
    resolve_base,
)
from hamgraph.specs import HamSettings, OptimizerSpec


class TinyGNN(nn.Module):
    """GCNConv + LayerNorm + residual Linear + Linear head (+ a GATv2 layer for attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(4, 8)
        self.convs = nn.ModuleList([GCNConv(8, 8), GATv2Conv(8, 8, heads=1, bias=False)])
        self.residual = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x, edge_index):
        h = self.encoder(x)
        h = self.norm(self.convs[0](h, edge_index) + self.residual(h)).relu()
        return self.head(self.convs[1](h, edge_index))


HAM_NAMES = {
    "convs.0.bias",
    "convs.0.lin.weight",
    "convs.1.att",
    "convs.1.lin_l.weight",
    "convs.1.lin_r.weight",
}


def test_ham_targets_are_exactly_the_message_passing_parameters():
    model = TinyGNN()
    names = ham_target_names(model)
    assert set(names) == HAM_NAMES and len(names) == len(HAM_NAMES)
    params = dict(model.named_parameters())
    assert [id(p) for p in ham_target_params(model)] == [id(params[n]) for n in names]

    groups = ham_param_groups(model)
    assert [g["ham"] for g in groups] == [True, False]
    assert set(groups[0]["names"]) == HAM_NAMES
    assert set(groups[1]["names"]) == set(params) - HAM_NAMES
    assert {"encoder.weight", "norm.weight", "head.bias", "residual.weight"} <= set(
        groups[1]["names"]
    )
    for group in groups:
        assert [id(p) for p in group["params"]] == [id(params[n]) for n in group["names"]]


def test_model_without_message_passing_has_one_base_group():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    assert ham_target_names(model) == []
    assert [g["ham"] for g in ham_param_groups(model)] == [False]


def _one_step(opt, model):
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]])
    opt.zero_grad()
    model(x, edge_index).square().mean().backward()
    opt.step()


@pytest.mark.parametrize("base", ["adam", "adamw", "AdamW"])
def test_build_optimizer_plain_and_ham(base):
    torch.manual_seed(0)
    model = TinyGNN()
    plain = build_optimizer(model, OptimizerSpec(base, ham=None), lr=0.01, weight_decay=5e-4)
    expected_cls = torch.optim.AdamW if base.lower() == "adamw" else torch.optim.Adam
    assert type(plain) is expected_cls
    assert len(plain.param_groups) == 1
    assert plain.param_groups[0]["params"] == list(model.parameters())
    assert plain.param_groups[0]["weight_decay"] == 5e-4

    settings = HamSettings(alpha=-10.0, beta=0.01, sign_source="previous")
    ham = build_optimizer(model, OptimizerSpec(base, ham=settings), lr=0.01, weight_decay=5e-4)
    assert isinstance(ham, HAM) and type(ham.base) is expected_cls
    on, off = ham.param_groups
    assert on["ham"] and not off["ham"]
    assert (on["alpha"], on["beta"], on["clamp"]) == (-10.0, 0.01, 5.0)
    assert on["mask_beta"] is True and on["sign_source"] == "previous"
    assert on["lr"] == off["lr"] == 0.01 and on["weight_decay"] == 5e-4

    head_before = model.head.weight.detach().clone()
    conv_before = model.convs[0].lin.weight.detach().clone()
    _one_step(ham, model)
    assert not torch.equal(model.head.weight, head_before)
    assert not torch.equal(model.convs[0].lin.weight, conv_before)


def test_ham_only_changes_the_targets():
    """Same start, same data: HAM(Adam) and Adam agree on non-targets, differ on targets."""
    torch.manual_seed(0)
    a = TinyGNN()
    b = TinyGNN()
    b.load_state_dict(a.state_dict())
    plain = build_optimizer(a, OptimizerSpec("adam", ham=None), lr=0.01, weight_decay=0.0)
    ham = build_optimizer(
        b, OptimizerSpec("adam", ham=HamSettings(200.0, 0.1)), lr=0.01, weight_decay=0.0
    )
    _one_step(plain, a)
    _one_step(ham, b)
    targets = set(HAM_NAMES)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if name in targets:
            assert not torch.equal(p, q), name
        else:
            assert torch.equal(p, q), name


def test_build_optimizer_passes_the_kernel_choice():
    settings = HamSettings(alpha=1.0, beta=0.0)
    for fused in (None, True, False):
        opt = build_optimizer(
            TinyGNN(), OptimizerSpec("adam", ham=settings), lr=0.01, weight_decay=0.0, fused=fused
        )
        assert opt._fused is fused


def test_unknown_base_lists_choices():
    with pytest.raises(
        UnknownNameError, match=r"unknown base optimizer 'sgdd'.*\['adam', 'adamw', 'sgd'\]"
    ):
        build_optimizer(TinyGNN(), OptimizerSpec("sgdd", ham=None), lr=0.01, weight_decay=0.0)


def test_ham_on_a_model_without_targets_is_refused():
    model = nn.Sequential(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="no parameters inside a torch_geometric MessagePassing"):
        build_optimizer(
            model, OptimizerSpec("adam", ham=HamSettings(1.0, 0.0)), lr=0.01, weight_decay=0.0
        )


def test_sgd_and_dotted_bases_with_options():
    model = TinyGNN()
    sgd = build_optimizer(
        model, OptimizerSpec("sgd", (("momentum", 0.9),)), lr=0.01, weight_decay=0.0
    )
    assert type(sgd) is torch.optim.SGD and sgd.param_groups[0]["momentum"] == 0.9
    radam = build_optimizer(
        model,
        OptimizerSpec("torch.optim.RAdam", ham=HamSettings(200.0, 0.1)),
        lr=0.01,
        weight_decay=0.0,
    )
    assert isinstance(radam, HAM) and type(radam.base) is torch.optim.RAdam
    _one_step(radam, model)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("torch.optim.Nope", "does not import"),
        ("nowhere.Thing", "does not import"),
        ("torch.nn.Linear", "is not a torch.optim.Optimizer subclass"),
        ("rmsprop", "unknown base optimizer 'rmsprop'"),
    ],
)
def test_bad_bases_are_named(name, message):
    with pytest.raises(UnknownNameError, match=message):
        resolve_base(name)


def test_base_options_are_checked():
    check_base_options("sgd", {"momentum": 0.9, "nesterov": True})
    with pytest.raises(UserInputError, match="unknown option 'momentun' of SGD"):
        check_base_options("sgd", {"momentun": 0.9})
    with pytest.raises(UserInputError, match="'lr' is a protocol hyperparameter"):
        check_base_options("adam", {"lr": 0.1})


def test_a_base_option_named_like_a_ham_argument_reaches_the_base():
    """Adam's `fused` option under HAM: HAM's own `fused` (its kernel) is a different flag."""
    model = TinyGNN()
    spec = OptimizerSpec("adam", (("fused", True),), HamSettings(200.0, 0.1))
    opt = build_optimizer(model, spec, lr=0.01, weight_decay=0.0)
    assert isinstance(opt, HAM) and opt.base.defaults["fused"] is True
    assert opt._fused is None  # HAM's kernel choice untouched
    _one_step(opt, model)


def test_ham_refuses_a_base_whose_groups_use_its_keys():
    """RMSprop's `alpha` (smoothing constant) would be read as HAM's alpha: refused."""
    from hamgraph.optim.factory import check_ham_base

    with pytest.raises(ValueError, match=r"HAM cannot wrap RMSprop: .*\['alpha'\]"):
        HAM(TinyGNN().parameters(), base=torch.optim.RMSprop, lr=0.01)
    with pytest.raises(UserInputError, match="HAM cannot run on RMSprop"):
        check_ham_base("torch.optim.RMSprop")
    check_ham_base("torch.optim.RAdam")  # no clash
    plain = build_optimizer(TinyGNN(), OptimizerSpec("torch.optim.RMSprop"), lr=0.01,
                            weight_decay=0.0)  # without HAM RMSprop is fine
    assert type(plain) is torch.optim.RMSprop
