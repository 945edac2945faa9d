"""The classic model zoo: shapes, equality with stock PyG convs, HAM targets, names."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.nn import GCNConv
from torch_geometric.utils import add_self_loops, to_undirected

from hamgraph.errors import UnknownNameError
from hamgraph.models import MODEL_DISPLAY, MODEL_TASK, build_node_model, resolve_model
from hamgraph.models.classic import CLASSIC_MODELS, dropout, resolve_norm
from hamgraph.optim import ham_target_names
from hamgraph.specs import NodeParams

N, F_IN, CLASSES = 30, 24, 3


@pytest.fixture(scope="module")
def graph() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    edge_index = to_undirected(torch.randint(0, N, (2, 80), generator=gen))
    edge_index = edge_index[:, edge_index[0] != edge_index[1]]
    edge_index, _ = add_self_loops(edge_index, num_nodes=N)
    x = (torch.rand(N, F_IN, generator=gen) < 0.05).float()  # sparse bag of words
    return x, edge_index


def _params(**kw) -> NodeParams:
    base = dict(lr=1e-3, hidden=8, layers=2, dropout=0.5, weight_decay=0.0, epochs=1)
    return NodeParams(**{**base, **kw})


def _reference_forward(model, name, x, edge_index, residual):
    """The same weights through stock PyG convs on the plain edge index (no precomputation)."""
    h = x if model.pre_linear is None else model.pre_linear(x)
    for i, conv in enumerate(model.convs):
        if name == "gcn":  # stock GCNConv normalizes on the fly (self loops already there)
            ref = GCNConv(conv.in_channels, conv.out_channels)
            ref.lin.weight.data.copy_(conv.lin.weight)
            ref.bias.data.copy_(conv.bias)
            conv = ref
        out = conv(h, edge_index)
        if residual:
            out = out + model.res_linears[i](h)
        h = torch.relu(model.norms[i](out))
    return model.head(h)


@pytest.mark.parametrize("name", ["gcn", "gat", "sage"])
@pytest.mark.parametrize("pre_linear", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_forward_matches_stock_pyg(graph, name, pre_linear, residual, norm):
    x, edge_index = graph
    torch.manual_seed(0)
    params = _params(norm=norm, residual=residual, pre_linear=pre_linear, layers=3)
    model = build_node_model(name, params, F_IN, CLASSES).eval()
    assert len(model.convs) == 3
    first_in = model.convs[0].in_channels
    assert first_in == (8 if pre_linear else F_IN)
    if residual:
        assert model.res_linears[0].in_features == first_in
    prepared = model.prepare_graph(edge_index, N)
    features = model.prepare_features(x)
    out = model(features, prepared)
    assert out.shape == (N, CLASSES)
    torch.testing.assert_close(out, _reference_forward(model, name, x, edge_index, residual))
    # training mode runs and backpropagates through the prepared inputs
    model.train()
    model(features, prepared).sum().backward()
    assert all(p.grad is not None for p in model.convs.parameters())


def test_graph_and_feature_layouts(graph):
    x, edge_index = graph
    gcn = build_node_model("gcn", _params(), F_IN, CLASSES)
    sage = build_node_model("sage", _params(), F_IN, CLASSES)
    sage_pre = build_node_model("sage", _params(pre_linear=True), F_IN, CLASSES)
    gat = build_node_model("gat", _params(), F_IN, CLASSES)
    assert gcn.prepare_graph(edge_index, N).layout == torch.sparse_csr
    assert sage.prepare_graph(edge_index, N).layout == torch.sparse_csr
    assert gat.prepare_graph(edge_index, N) is edge_index
    assert gcn.prepare_features(x).layout == torch.sparse_csr
    assert gat.prepare_features(x).layout == torch.sparse_csr
    assert sage.prepare_features(x).layout == torch.strided  # SAGE aggregates x first
    assert sage_pre.prepare_features(x).layout == torch.sparse_csr
    dense = torch.randn(N, F_IN)
    assert gcn.prepare_features(dense) is dense
    # GCN's adjacency is D^-1/2 (A + I) D^-1/2: symmetric, rows of a regular graph sum to 1
    adjacency = gcn.prepare_graph(edge_index, N).to_dense()
    torch.testing.assert_close(adjacency, adjacency.T)


def test_capabilities_are_class_attributes():
    assert {cls.name for cls in CLASSIC_MODELS.values()} == {"gcn", "gat", "sage"}


@pytest.mark.parametrize("name", ["gcn", "gat", "sage"])
def test_ham_targets_are_conv_parameters_only(name):
    params = _params(norm="batch", residual=True, pre_linear=True, layers=3)
    model = build_node_model(name, params, F_IN, CLASSES)
    targets = set(ham_target_names(model))
    conv_names = {n for n, _ in model.named_parameters() if n.startswith("convs.")}
    assert targets == conv_names and targets
    for prefix in ("norms.", "pre_linear.", "res_linears.", "head."):
        assert any(n.startswith(prefix) for n, _ in model.named_parameters())
        assert not any(n.startswith(prefix) for n in targets)
    if name == "gat":  # attention vectors are conv parameters, hence targets; no conv bias
        assert any(n.endswith(".att") for n in targets)
        assert not any(n.endswith(".bias") and n.count(".") == 2 for n in targets)


def test_resolve_model_names_and_errors():
    assert resolve_model("GCN", "node") == "gcn"
    assert resolve_model(" sage ", "node") == "sage"
    assert resolve_model("gcnplus", "graph") == "gcnplus"
    with pytest.raises(UnknownNameError, match="valid names: gcn, gat, sage"):
        resolve_model("gin", "node")
    with pytest.raises(UnknownNameError, match="valid names: gcnplus"):
        resolve_model("gcn", "graph")
    with pytest.raises(UnknownNameError, match="'gcnplus'"):
        resolve_model("gcnplus", "node")
    assert set(MODEL_TASK) == set(MODEL_DISPLAY)


def test_bad_hyperparameters_and_norm():
    with pytest.raises(UnknownNameError, match="valid names: none, layer, batch"):
        resolve_norm("group", 4)
    with pytest.raises(ValueError, match="layers"):
        build_node_model("gcn", _params(layers=0), F_IN, CLASSES)


def test_dropout():
    x = torch.ones(200, 100)
    assert dropout(x, 0.5, training=False) is x
    torch.manual_seed(0)
    out = dropout(x, 0.25, training=True)
    kept = out != 0
    assert 0.7 < kept.float().mean() < 0.8
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.75))


def test_dropout_masks_come_from_the_runs_generator(graph):
    """A run's masks depend only on its generator: same seed, same masks, whatever the global
    RNG did in between; the global generator is not consumed; another seed differs."""
    x = torch.ones(50, 40)

    def masks(seed):
        gen = torch.Generator().manual_seed(seed)
        return [dropout(x, 0.5, True, gen) for _ in range(3)]

    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = masks(1)
    assert torch.equal(torch.get_rng_state(), state)  # the global generator is not consumed
    torch.rand(7)  # moves the global generator
    again = masks(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # successive sites get fresh masks
    assert not torch.equal(first[0], masks(2)[0])
    # the model passes its generator to every site: same generator seed -> same training output
    edge_x, edge_index = graph
    model = build_node_model("sage", _params(pre_linear=True), F_IN, CLASSES).train()
    prepared = model.prepare_graph(edge_index, N)
    outs = [model(edge_x, prepared, torch.Generator().manual_seed(3)) for _ in range(2)]
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    other = model(edge_x, prepared, torch.Generator().manual_seed(4))
    assert not torch.equal(outs[0], other)


def test_gcn_symmetric_propagation_gradient(graph):
    _, edge_index = graph
    gcn = build_node_model("gcn", _params(), F_IN, CLASSES)
    adjacency = gcn.prepare_graph(edge_index, N)
    h = torch.randn(N, 5, requires_grad=True)
    weight = torch.randn(N, 5)
    (gcn.convs[0].message_and_aggregate(adjacency, h) * weight).sum().backward()
    expected = adjacency.to_dense().T @ weight  # d/dh sum(W * (A h)) = A^T W
    torch.testing.assert_close(h.grad, expected)


def test_gcn_rejects_a_directed_graph():
    directed = torch.tensor([[0, 1, 2, 0, 1, 2], [1, 2, 0, 0, 1, 2]])  # a cycle + self loops
    with pytest.raises(ValueError, match="undirected"):
        CLASSIC_MODELS["gcn"].prepare_graph(directed, 3)
