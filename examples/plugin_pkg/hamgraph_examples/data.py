"""A generated node-classification graph (no download): cliques of one class each, joined
by random edges, with noisy one-hot class features."""

from __future__ import annotations

import torch
from torch_geometric.data import Data


def noisy_cliques(
    cliques: int = 12, size: int = 8, classes: int = 3, noise: float = 1.0,
    cross_edges: int = 40, seed: int = 0, masks: bool = False,
) -> Data:
    """`cliques` cliques of `size` nodes; clique c has class c % classes. With `masks`, one
    random train/val/test mask set ships with the graph (else the YAML states a split)."""
    generator = torch.Generator().manual_seed(seed)
    n = cliques * size
    y = torch.arange(cliques).repeat_interleave(size) % classes
    edges = []
    for c in range(cliques):
        nodes = torch.arange(c * size, (c + 1) * size)
        a, b = torch.meshgrid(nodes, nodes, indexing="ij")
        keep = a != b
        edges.append(torch.stack([a[keep], b[keep]]))
    edges.append(torch.randint(0, n, (2, cross_edges), generator=generator))
    x = torch.nn.functional.one_hot(y, classes).float()
    x = x + noise * torch.randn(n, classes, generator=generator)
    data = Data(x=x, y=y, edge_index=torch.cat(edges, dim=1))
    if masks:
        order = torch.randperm(n, generator=generator)
        parts = (order[: n // 2], order[n // 2 : 3 * n // 4], order[3 * n // 4 :])
        for name, part in zip(("train_mask", "val_mask", "test_mask"), parts, strict=True):
            mask = torch.zeros(n, dtype=torch.bool)
            mask[part] = True
            data[name] = mask
    return data
