"""Input encoders of GCN+ (REFERENCE §3): node / edge features -> width-d embeddings.

Each dataset kind has a node encoder and an edge encoder; `RWSEEncoder` adds the optional
random-walk positional encoding (BatchNorm -> Linear(steps -> pe_dim), concatenated to a node
embedding of width d - pe_dim). None of these are MessagePassing modules, so HAM never
targets them.
"""

from __future__ import annotations

import torch
from ogb.graphproppred.mol_encoder import AtomEncoder, BondEncoder
from torch import Tensor, nn
from torch_geometric.data import Batch

__all__ = [
    "ASTEdgeEncoder",
    "ASTNodeEncoder",
    "AtomEncoder",
    "BondEncoder",
    "NodeEncoder",
    "PpaEdgeEncoder",
    "PpaNodeEncoder",
    "RWSEEncoder",
]

AST_MAX_DEPTH = 20  # deeper AST nodes share the depth-20 embedding (OGB's code2 example)
PPA_EDGE_FEATURES = 7  # ogbg-ppa edge features: 7 association scores


class PpaNodeEncoder(nn.Module):
    """ogbg-ppa has no node features: every node starts from one learned vector."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(1, dim)

    def forward(self, batch: Batch) -> Tensor:
        return self.embedding(batch.x.view(-1))


class PpaEdgeEncoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(PPA_EDGE_FEATURES, dim)

    def forward(self, edge_attr: Tensor) -> Tensor:
        return self.lin(edge_attr)


class ASTNodeEncoder(nn.Module):
    """code2 AST node: type embedding + attribute embedding + (clipped) depth embedding."""

    def __init__(
        self, dim: int, num_types: int, num_attributes: int, max_depth: int = AST_MAX_DEPTH
    ) -> None:
        super().__init__()
        self.max_depth = max_depth
        self.type_embedding = nn.Embedding(num_types, dim)
        self.attribute_embedding = nn.Embedding(num_attributes, dim)
        self.depth_embedding = nn.Embedding(max_depth + 1, dim)

    def forward(self, batch: Batch) -> Tensor:
        x = batch.x
        depth = batch.node_depth.view(-1).clamp(max=self.max_depth)
        return (
            self.type_embedding(x[:, 0])
            + self.attribute_embedding(x[:, 1])
            + self.depth_embedding(depth)
        )


class ASTEdgeEncoder(nn.Module):
    """code2 edge: AST / next-token type embedding + original / inverse direction embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.type_embedding = nn.Embedding(2, dim)
        self.direction_embedding = nn.Embedding(2, dim)

    def forward(self, edge_attr: Tensor) -> Tensor:
        return self.type_embedding(edge_attr[:, 0]) + self.direction_embedding(edge_attr[:, 1])


class _AtomNodeEncoder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.atom = AtomEncoder(dim)

    def forward(self, batch: Batch) -> Tensor:
        return self.atom(batch.x)


class RWSEEncoder(nn.Module):
    """BatchNorm -> Linear(steps -> pe_dim) over the RWSE of each node."""

    def __init__(self, steps: int, pe_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(steps)
        self.lin = nn.Linear(steps, pe_dim)

    def forward(self, rwse: Tensor) -> Tensor:
        return self.lin(self.norm(rwse))


class NodeEncoder(nn.Module):
    """A feature encoder of width d - pe_dim, concatenated with the RWSE encoding (if any)."""

    def __init__(self, features: nn.Module, rwse: RWSEEncoder | None = None) -> None:
        super().__init__()
        self.features = features
        self.rwse = rwse

    def forward(self, batch: Batch) -> Tensor:
        h = self.features(batch)
        if self.rwse is None:
            return h
        return torch.cat([h, self.rwse(batch.rwse)], dim=-1)


def atom_node_encoder(dim: int) -> nn.Module:
    return _AtomNodeEncoder(dim)
