"""GCN+ (layer vs hand computation, parameter count, HAM targets, heads) and RWSE."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch_geometric.data import Batch, Data

from hamgraph.data.ogbg import GRAPH_SOURCES, Code2Vocab, GraphDataset
from hamgraph.data.registry import resolve_dataset
from hamgraph.models import rwse as rwse_module
from hamgraph.models.gcnplus import GCNPlusConv, build_graph_model
from hamgraph.models.rwse import cached_rwse, rwse_all, rwse_dense, rwse_sparse
from hamgraph.optim import ham_target_names
from hamgraph.presets.graph import GRAPH_PRESETS, graph_params
from hamgraph.train.graph import warmup_cosine


def fake_dataset(name: str, num_outputs: int, rwse_steps: int = 0, **extra) -> GraphDataset:
    """A GraphDataset without data: enough to build models."""
    info = resolve_dataset(name)
    return GraphDataset(
        info=info,
        source=GRAPH_SOURCES[name],
        dataset=None,
        split_idx={},
        num_tasks=1,
        num_outputs=num_outputs,
        eval_metric="",
        rwse_steps=rwse_steps,
        **extra,
    )


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------------------------
# GCN+


def test_conv_matches_hand_computation():
    conv = GCNPlusConv(2)
    with torch.no_grad():
        conv.lin.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, -1.0]]))  # W h = (h0, h0 - h1)
        conv.bias.copy_(torch.tensor([0.5, -0.5]))
    x = torch.tensor([[1.0, 2.0], [3.0, 1.0], [-1.0, 0.0]])
    edge_index = torch.tensor([[1, 2, 0], [0, 0, 1]])  # 1 -> 0, 2 -> 0, 0 -> 1; node 2: none
    e = torch.tensor([[0.0, 1.0], [2.0, 0.0], [-5.0, 0.0]])
    out = conv(x, edge_index, e)
    # node 0: ReLU(W x1 + e0) + ReLU(W x2 + e1) + b = ReLU(3, 3) + ReLU(1, -1) + b
    # node 1: ReLU(W x0 + e2) + b = ReLU(-4, -1) + b;  node 2: only b
    expected = torch.tensor([[3 + 1 + 0.5, 3 + 0 - 0.5], [0.5, -0.5], [0.5, -0.5]])
    assert torch.allclose(out, expected)
    assert sorted(n for n, _ in conv.named_parameters()) == ["bias", "lin.weight"]


def test_molhiv_preset_parameter_count_matches_reference():
    params = graph_params("ogbg-molhiv")
    model = build_graph_model(params, fake_dataset("ogbg-molhiv", 1, rwse_steps=20))
    assert _count(model) == 1_407_641  # the reference GCN+ molhiv model


def test_ham_targets_only_conv_weights_and_biases():
    params = replace(graph_params("ogbg-molhiv"), hidden=32, pe_dim=8, layers=3)
    model = build_graph_model(params, fake_dataset("ogbg-molhiv", 1, rwse_steps=20))
    names = ham_target_names(model)
    assert names == [f"layers.{i}.conv.{p}" for i in range(3) for p in ("bias", "lin.weight")]


def _mol_batch(steps: int = 0) -> Batch:
    graphs = []
    for n in (3, 5):
        ei = torch.tensor(
            [
                [i for i in range(n - 1)] + [i + 1 for i in range(n - 1)],
                [i + 1 for i in range(n - 1)] + [i for i in range(n - 1)],
            ]
        )
        g = Data(
            x=torch.zeros(n, 9, dtype=torch.long),
            edge_index=ei,
            edge_attr=torch.zeros(ei.shape[1], 3, dtype=torch.long),
            num_nodes=n,
        )
        if steps:
            g.rwse = rwse_dense(ei, n, steps)
        graphs.append(g)
    return Batch.from_data_list(graphs)


@pytest.mark.parametrize("residual", [False, True])
def test_model_forward_shapes(residual):
    params = replace(graph_params("ogbg-molhiv"), hidden=16, pe_dim=4, layers=2, residual=residual)
    model = build_graph_model(params, fake_dataset("ogbg-molhiv", 1, rwse_steps=20))
    assert model(_mol_batch(20)).shape == (2, 1)
    pcba = replace(graph_params("ogbg-molpcba"), hidden=24, layers=2)
    model = build_graph_model(pcba, fake_dataset("ogbg-molpcba", 128, rwse_steps=16))
    assert model(_mol_batch(16)).shape == (2, 128)


def test_ppa_and_code2_heads():
    ppa = build_graph_model(
        replace(graph_params("ogbg-ppa"), hidden=16), fake_dataset("ogbg-ppa", 37)
    )
    g = Data(
        x=torch.zeros(4, dtype=torch.long),
        edge_index=torch.tensor([[0, 1], [1, 2]]),
        edge_attr=torch.rand(2, 7),
        num_nodes=4,
    )
    assert ppa(Batch.from_data_list([g, g])).shape == (2, 37)
    vocab = Code2Vocab(("a", "b", "__UNK__", "__EOS__"))
    code2 = build_graph_model(
        replace(graph_params("ogbg-code2"), hidden=16),
        fake_dataset(
            "ogbg-code2", vocab.size, vocab=vocab, num_node_types=3, num_node_attributes=5
        ),
    )
    g = Data(
        x=torch.tensor([[0, 1], [2, 4], [1, 0]]),
        node_depth=torch.tensor([[0], [1], [40]]),
        edge_index=torch.tensor([[0, 0], [1, 2]]),
        edge_attr=torch.tensor([[0, 0], [1, 1]]),
        num_nodes=3,
    )
    assert code2(Batch.from_data_list([g, g, g])).shape == (3, 5, vocab.size)


def test_presets_match_reference_table():
    assert set(GRAPH_PRESETS) == {"ogbg-molhiv", "ogbg-molpcba", "ogbg-ppa", "ogbg-code2"}
    hiv, pcba = graph_params("ogbg-molhiv"), graph_params("ogbg-molpcba")
    assert (hiv.hidden, hiv.layers, hiv.batch_size, hiv.rwse_steps, hiv.pe_dim) == (
        256,
        4,
        32,
        20,
        16,
    )
    assert (pcba.hidden, pcba.layers, pcba.batch_size, pcba.lr) == (512, 10, 512, 5e-4)
    assert graph_params("ogbg-code2").epochs == 30 and graph_params("ogbg-ppa").residual


def test_warmup_cosine_schedule():
    f = warmup_cosine(2, 6)
    assert [round(f(e), 6) for e in range(6)] == [
        1e-6,
        0.5,
        1.0,
        round(0.5 * (1 + math.cos(math.pi / 4)), 6),
        0.5,
        round(0.5 * (1 + math.cos(3 * math.pi / 4)), 6),
    ]


# --------------------------------------------------------------------------------------------
# RWSE


def _random_graph(gen: torch.Generator, n: int, m: int) -> torch.Tensor:
    src = torch.randint(0, n, (m,), generator=gen)
    dst = torch.randint(0, n, (m,), generator=gen)
    return torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], dim=1)


def test_rwse_dense_hand_values():
    # a triangle: return after 1 step impossible, after 2 steps 1/2, after 3 steps 1/4
    ei = torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]])
    pe = rwse_dense(ei, 3, 3)
    assert torch.allclose(pe, torch.tensor([[0.0, 0.5, 0.25]] * 3))


def test_rwse_batched_and_sparse_match_dense(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    sizes = [1, 4, 7, 3, 12, 30, 5]  # includes an isolated node (n = 1)
    graphs = [
        _random_graph(gen, n, max(n, 1)) if n > 1 else torch.zeros(2, 0, dtype=torch.long)
        for n in sizes
    ]
    edge_index = torch.cat(graphs, dim=1)
    node_slices = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()])
    edge_slices = torch.tensor([0, *torch.tensor([g.shape[1] for g in graphs]).cumsum(0).tolist()])
    expected = torch.cat([rwse_dense(g, n, 6) for g, n in zip(graphs, sizes, strict=True)])
    got = rwse_all(edge_index, edge_slices, node_slices, 6)
    assert torch.allclose(got, expected, atol=1e-6)
    # graphs above the dense cap take the sparse path (small blocks)
    monkeypatch.setattr(rwse_module, "DENSE_MAX_NODES", 6)
    monkeypatch.setattr(rwse_module, "SPARSE_BLOCK", 5)
    assert torch.allclose(rwse_all(edge_index, edge_slices, node_slices, 6), expected, atol=1e-6)
    assert torch.allclose(rwse_sparse(graphs[5], 30, 6, block=7), expected[-35:-5], atol=1e-6)


def test_rwse_is_cached_on_disk(tmp_path, monkeypatch):
    gen = torch.Generator().manual_seed(1)
    edge_index = torch.cat([_random_graph(gen, 5, 6), _random_graph(gen, 4, 4)], dim=1)
    kwargs = {
        "edge_index": edge_index,
        "edge_slices": torch.tensor([0, 12, 20]),
        "node_slices": torch.tensor([0, 5, 9]),
        "steps": 4,
    }
    calls = []
    real = rwse_module.rwse_all
    monkeypatch.setattr(rwse_module, "rwse_all", lambda *a: calls.append(1) or real(*a))
    path = tmp_path / "processed" / "rwse_k4.pt"
    first = cached_rwse(path, **kwargs)
    mtime = path.stat().st_mtime_ns
    second = cached_rwse(path, **kwargs)
    assert len(calls) == 1 and path.stat().st_mtime_ns == mtime
    assert torch.equal(first, second)
    other = cached_rwse(tmp_path / "processed" / "rwse_k3.pt", **{**kwargs, "steps": 3})
    assert len(calls) == 2 and torch.allclose(other, first[:, :3])
    # a stale file (different graphs) is recomputed
    cached_rwse(path, **{**kwargs, "node_slices": torch.tensor([0, 6, 10])})
    assert len(calls) == 3
    assert not list(path.parent.glob("*.tmp"))
