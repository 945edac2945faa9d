"""GCN+ (layer vs hand computation, parameter count, HAM targets, heads), built from GraphTasks."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from torch_geometric.data import Batch, Data

from hamgraph.data.ogbg import GRAPH_KINDS, GRAPH_SOURCES, graph_task
from hamgraph.data.rwse import rwse_dense
from hamgraph.models.gcnplus import (
    EDGE_ENCODERS,
    HEADS,
    NODE_ENCODERS,
    GCNPlusConv,
    MLPHead,
    PpaHead,
    SequenceHead,
    build_graph_model,
)
from hamgraph.optim import ham_target_names
from hamgraph.presets.graph import GRAPH_PRESETS, graph_params
from hamgraph.specs import GraphTask
from hamgraph.train.graph import TARGETS, warmup_cosine


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
    model = build_graph_model(params, graph_task("ogbg-molhiv", 1, rwse_steps=20))
    assert _count(model) == 1_407_641  # the reference GCN+ molhiv model


def test_ham_targets_only_conv_weights_and_biases():
    params = replace(graph_params("ogbg-molhiv"), hidden=32, pe_dim=8, layers=3)
    model = build_graph_model(params, graph_task("ogbg-molhiv", 1, rwse_steps=20))
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
    model = build_graph_model(params, graph_task("ogbg-molhiv", 1, rwse_steps=20))
    assert model(_mol_batch(20)).shape == (2, 1)
    pcba = replace(graph_params("ogbg-molpcba"), hidden=24, layers=2)
    model = build_graph_model(pcba, graph_task("ogbg-molpcba", 128, rwse_steps=16))
    assert model(_mol_batch(16)).shape == (2, 128)


def test_ppa_and_code2_heads():
    ppa = build_graph_model(
        replace(graph_params("ogbg-ppa"), hidden=16), graph_task("ogbg-ppa", 37)
    )
    g = Data(
        x=torch.zeros(4, dtype=torch.long),
        edge_index=torch.tensor([[0, 1], [1, 2]]),
        edge_attr=torch.rand(2, 7),
        num_nodes=4,
    )
    assert ppa(Batch.from_data_list([g, g])).shape == (2, 37)
    code2 = build_graph_model(
        replace(graph_params("ogbg-code2"), hidden=16),
        graph_task("ogbg-code2", 6, seq_len=5, num_node_types=3, num_node_attributes=5),
    )
    g = Data(
        x=torch.tensor([[0, 1], [2, 4], [1, 0]]),
        node_depth=torch.tensor([[0], [1], [40]]),
        edge_index=torch.tensor([[0, 0], [1, 2]]),
        edge_attr=torch.tensor([[0, 0], [1, 1]]),
        num_nodes=3,
    )
    assert code2(Batch.from_data_list([g, g, g])).shape == (3, 5, 6)


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
# The task table: every dataset's head, encoders and target come from its rows, not its name


def test_every_table_row_names_something_built():
    for source in GRAPH_SOURCES.values():
        row = GRAPH_KINDS[source.kind]
        assert row.kind == source.kind
        assert row.node_encoder in NODE_ENCODERS and row.edge_encoder in EDGE_ENCODERS
        assert row.head in HEADS and row.target in TARGETS
    assert set(GRAPH_KINDS) == {"mol", "ppa", "code2"}


def test_tasks_of_the_four_datasets():
    hiv, pcba = graph_task("ogbg-molhiv", 1), graph_task("ogbg-molpcba", 128)
    assert (hiv.node_encoder, hiv.edge_encoder, hiv.head, hiv.target) == (
        "atom",
        "bond",
        "mlp",
        "binary",
    )
    assert (hiv.head_layers, pcba.head_layers, pcba.head) == (3, 1, "mlp")
    ppa, code2 = graph_task("ogbg-ppa", 37), graph_task("ogbg-code2", 5002, seq_len=5)
    assert (ppa.node_encoder, ppa.head, ppa.target) == ("ppa", "ppa", "multiclass")
    assert (code2.node_encoder, code2.edge_encoder, code2.head) == ("ast", "ast", "sequence")
    assert (code2.target, code2.seq_len) == ("sequence", 5)


def test_head_follows_the_task_not_the_dataset():
    params = replace(graph_params("ogbg-molhiv"), hidden=16, pe_dim=0, rwse_steps=0, layers=1)
    hiv = build_graph_model(params, graph_task("ogbg-molhiv", 1))
    assert isinstance(hiv.head, MLPHead)
    assert [tuple(lin.weight.shape) for lin in hiv.head.lins] == [(8, 16), (4, 8), (1, 4)]
    pcba = build_graph_model(params, graph_task("ogbg-molpcba", 128))
    assert [tuple(lin.weight.shape) for lin in pcba.head.lins] == [(128, 16)]
    # the same task value, whatever dataset it came from, gives the same model
    task = GraphTask("atom", "bond", "ppa", "multiclass", num_outputs=7)
    model = build_graph_model(params, task)
    assert isinstance(model.head, PpaHead) and model.head.lin2.out_features == 7
    seq = build_graph_model(params, replace(task, head="sequence", seq_len=3))
    assert isinstance(seq.head, SequenceHead) and len(seq.head.heads) == 3
    with pytest.raises(ValueError, match="head_layers >= 1, got 0"):
        build_graph_model(params, replace(task, head="mlp", head_layers=0))


def test_rwse_steps_of_model_and_task_must_agree():
    params = graph_params("ogbg-molhiv")  # RWSE 20
    with pytest.raises(ValueError, match="rwse_steps=16"):
        build_graph_model(params, graph_task("ogbg-molhiv", 1, rwse_steps=16))


def test_losses_of_the_targets():
    batch = Batch.from_data_list(
        [Data(y=torch.tensor([[1.0, float("nan")]])), Data(y=torch.tensor([[0.0, 1.0]]))]
    )
    out = torch.tensor([[2.0, 5.0], [-1.0, 0.5]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 1.0])
    )
    assert torch.allclose(TARGETS["binary"].loss(out, batch), expected)  # NaN left out
    batch = Batch.from_data_list([Data(y=torch.tensor([[2]])), Data(y=torch.tensor([[0]]))])
    out = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
    assert torch.allclose(
        TARGETS["multiclass"].loss(out, batch),
        torch.nn.functional.cross_entropy(out, torch.tensor([2, 0])),
    )
