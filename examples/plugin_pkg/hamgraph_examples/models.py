"""A small PyG node model: hamgraph builds it as TinyGNN(in_channels, out_channels, **options)
and calls it as model(x, edge_index) -> logits [N, out_channels]."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv, global_mean_pool


class TinyGNN(nn.Module):
    """GCN layers with a skip connection. `hidden`, `layers` and `dropout` are NodeParams
    fields, so hamgraph fills them from the preset / `overrides:` unless the options set them."""

    def __init__(
        self, in_channels: int, out_channels: int, hidden: int = 32, layers: int = 2,
        dropout: float = 0.5, skip: bool = True,
    ) -> None:
        super().__init__()
        widths = [in_channels] + [hidden] * (layers - 1) + [out_channels]
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in itertools.pairwise(widths))
        self.skip = nn.Linear(in_channels, out_channels) if skip else None
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = x
        for i, conv in enumerate(self.convs):
            h = F.dropout(h, self.dropout, self.training)
            h = conv(h, edge_index)
            if i < len(self.convs) - 1:
                h = torch.relu(h)
        return h if self.skip is None else h + self.skip(x)


class TinyGraphNet(nn.Module):
    """A graph-classification model: called as model(x, edge_index, batch) -> [graphs, out]."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int = 32) -> None:
        super().__init__()
        self.conv = GCNConv(in_channels, hidden)
        self.head = nn.Linear(hidden, out_channels)

    def forward(self, x: Tensor, edge_index: Tensor, batch: Tensor) -> Tensor:
        return self.head(global_mean_pool(torch.relu(self.conv(x, edge_index)), batch))
