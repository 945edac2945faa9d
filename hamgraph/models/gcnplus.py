"""GCN+ for graph classification (GNN+, ICML 2025; REFERENCE §3).

    node encoder (+ RWSE) ─► L x [GCNPlusConv ─► BN ─► ReLU ─► dropout ─► (+ h_in) ─► FFN]
                         ─► mean pooling ─► head

The encoders and the head are the ones a `GraphTask` (hamgraph.specs) names; the model never
sees a dataset.

The conv `h'_i = sum_{j in N(i)} ReLU(W h_j + e_ij) + b` holds W and b only (a MessagePassing
module), so HAM, which targets the parameters of MessagePassing submodules, touches exactly the
conv weights and biases. Edge embeddings e_ij come from one edge encoder and are reused by
every layer.

Parameter count of the molhiv preset (256 x 4, RWSE 20 -> 16, MLP head): 1,407,641, the
reference model's count. It decomposes as
    per layer: W 256*256 + b 256 + BN 512 + FFN (Lin 256->512, Lin 512->256, 2 x BN) = 330,240
    4 layers 1,320,960 + AtomEncoder(240) 41,760 + RWSE (BN 40 + Lin 20->16 336)
    + BondEncoder(256) 3,328 (shared) + head 256-128-64-1 with biases, no norms 41,217.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torch_geometric.nn import MessagePassing, global_mean_pool

from hamgraph.models.encoders import (
    ASTEdgeEncoder,
    ASTNodeEncoder,
    BondEncoder,
    NodeEncoder,
    PpaEdgeEncoder,
    PpaNodeEncoder,
    RWSEEncoder,
    atom_node_encoder,
)
from hamgraph.specs import EdgeEncoderName, GraphParams, GraphTask, HeadName, NodeEncoderName

__all__ = [
    "EDGE_ENCODERS",
    "HEADS",
    "NODE_ENCODERS",
    "FeedForward",
    "GCNPlus",
    "GCNPlusConv",
    "GCNPlusLayer",
    "build_graph_model",
]


class GCNPlusConv(MessagePassing):
    """`h'_i = sum_{j in N(i)} ReLU(W h_j + e_ij) + b`: no normalization, no self loops."""

    def __init__(self, dim: int) -> None:
        super().__init__(aggr="add")
        self.lin = nn.Linear(dim, dim, bias=False)  # W
        self.bias = nn.Parameter(torch.zeros(dim))  # b

    def reset_parameters(self) -> None:
        super().reset_parameters()
        self.lin.reset_parameters()
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        # W h_j is computed once per node, then gathered per edge (same as per-edge W h_j)
        return self.propagate(edge_index, x=self.lin(x), edge_attr=edge_attr) + self.bias

    def message(self, x_j: Tensor, edge_attr: Tensor) -> Tensor:
        return F.relu(x_j + edge_attr)


class FeedForward(nn.Module):
    """`BN -> h + Dropout(Lin(2d->d)(Dropout(ReLU(Lin(d->2d)(h))))) -> BN`."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.norm_in = nn.BatchNorm1d(dim)
        self.lin1 = nn.Linear(dim, 2 * dim)
        self.lin2 = nn.Linear(2 * dim, dim)
        self.norm_out = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: Tensor) -> Tensor:
        h = self.norm_in(h)
        h = h + self.dropout(self.lin2(self.dropout(F.relu(self.lin1(h)))))
        return self.norm_out(h)


class GCNPlusLayer(nn.Module):
    """conv -> BN -> ReLU -> dropout -> optional residual -> optional FFN block."""

    def __init__(self, dim: int, dropout: float, residual: bool, ffn: bool) -> None:
        super().__init__()
        self.conv = GCNPlusConv(dim)
        self.norm = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout)
        self.residual = residual
        self.ffn = FeedForward(dim, dropout) if ffn else None

    def forward(self, x: Tensor, edge_index: Tensor, edge_emb: Tensor) -> Tensor:
        h = self.dropout(F.relu(self.norm(self.conv(x, edge_index, edge_emb))))
        if self.residual:
            h = x + h
        if self.ffn is not None:
            h = self.ffn(h)
        return h


class MLPHead(nn.Module):
    """Linear layers with ReLU between them (molhiv: 256-128-64-1; molpcba: one Linear)."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, h: Tensor) -> Tensor:
        for i, lin in enumerate(self.lins):
            h = lin(h) if i == 0 else lin(F.relu(h))
        return h


class PpaHead(nn.Module):
    """ppa: Lin -> ReLU -> L2-normalize -> Lin(d -> 37)."""

    def __init__(self, dim: int, classes: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, dim)
        self.lin2 = nn.Linear(dim, classes)

    def forward(self, h: Tensor) -> Tensor:
        return self.lin2(F.normalize(F.relu(self.lin1(h)), p=2.0, dim=-1))


class SequenceHead(nn.Module):
    """code2: one linear head per predicted token -> [B, seq_len, vocab]."""

    def __init__(self, dim: int, vocab: int, seq_len: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, vocab) for _ in range(seq_len))

    def forward(self, h: Tensor) -> Tensor:
        return torch.stack([head(h) for head in self.heads], dim=1)


class GCNPlus(nn.Module):
    """Encoders -> GCN+ layers -> mean pooling -> head. `forward(batch)` returns logits."""

    def __init__(
        self,
        node_encoder: nn.Module,
        edge_encoder: nn.Module,
        head: nn.Module,
        *,
        hidden: int,
        layers: int,
        dropout: float,
        residual: bool,
        ffn: bool,
    ) -> None:
        super().__init__()
        self.node_encoder = node_encoder
        self.edge_encoder = edge_encoder
        self.layers = nn.ModuleList(
            GCNPlusLayer(hidden, dropout, residual, ffn) for _ in range(layers)
        )
        self.head = head

    def forward(self, batch: Batch) -> Tensor:
        h = self.node_encoder(batch)
        edge_emb = self.edge_encoder(batch.edge_attr)  # shared by every layer
        for layer in self.layers:
            h = layer(h, batch.edge_index, edge_emb)
        return self.head(global_mean_pool(h, batch.batch, size=batch.num_graphs))


def _mlp_head(dim: int, task: GraphTask) -> nn.Module:
    """`head_layers` Linear layers whose widths halve: 3 -> d, d/2, d/4 -> num_outputs."""
    if task.head_layers < 1:
        raise ValueError(f"an mlp head needs head_layers >= 1, got {task.head_layers}")
    return MLPHead([dim // 2**i for i in range(task.head_layers)] + [task.num_outputs])


# What each name of a GraphTask builds (REFERENCE §3); plain dicts, filled here and nowhere else.
HEADS: dict[HeadName, Callable[[int, GraphTask], nn.Module]] = {
    "mlp": _mlp_head,
    "ppa": lambda dim, task: PpaHead(dim, task.num_outputs),
    "sequence": lambda dim, task: SequenceHead(dim, task.num_outputs, task.seq_len),
}
NODE_ENCODERS: dict[NodeEncoderName, Callable[[int, GraphTask], nn.Module]] = {
    "atom": lambda dim, task: atom_node_encoder(dim),
    "ppa": lambda dim, task: PpaNodeEncoder(dim),
    "ast": lambda dim, task: ASTNodeEncoder(dim, task.num_node_types, task.num_node_attributes),
}
EDGE_ENCODERS: dict[EdgeEncoderName, Callable[[int], nn.Module]] = {
    "bond": BondEncoder,
    "ppa": PpaEdgeEncoder,
    "ast": ASTEdgeEncoder,
}


def build_graph_model(params: GraphParams, task: GraphTask) -> GCNPlus:
    """GCN+ with the encoders and head that `task` names and the sizes of `params`."""
    if params.rwse_steps and task.rwse_steps != params.rwse_steps:
        raise ValueError(
            f"the model wants RWSE with {params.rwse_steps} steps, but the dataset was loaded "
            f"with rwse_steps={task.rwse_steps}"
        )
    use_pe = params.rwse_steps > 0 and params.pe_dim > 0
    if use_pe and params.pe_dim >= params.hidden:
        raise ValueError(f"pe_dim ({params.pe_dim}) must be < hidden ({params.hidden})")
    node_dim = params.hidden - params.pe_dim if use_pe else params.hidden
    features = NODE_ENCODERS[task.node_encoder](node_dim, task)
    edge_encoder = EDGE_ENCODERS[task.edge_encoder](params.hidden)
    rwse = RWSEEncoder(params.rwse_steps, params.pe_dim) if use_pe else None
    return GCNPlus(
        NodeEncoder(features, rwse),
        edge_encoder,
        HEADS[task.head](params.hidden, task),
        hidden=params.hidden,
        layers=params.layers,
        dropout=params.dropout,
        residual=params.residual,
        ffn=params.ffn,
    )
