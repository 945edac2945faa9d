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


def cliques_and_rings(graphs: int = 60, seed: int = 0) -> list[Data]:
    """A graph-classification set: class 0 = a clique, class 1 = a ring (5 to 9 nodes each);
    node features: 1 and the degree / n, with noise."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(graphs):
        n = int(torch.randint(5, 10, (1,), generator=generator))
        label = i % 2
        if label == 0:
            a, b = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
            edge_index = torch.stack([a[a != b], b[a != b]])
        else:
            src = torch.arange(n)
            edge_index = torch.cat([torch.stack([src, (src + 1) % n]),
                                    torch.stack([(src + 1) % n, src])], dim=1)
        degree = torch.bincount(edge_index[0], minlength=n).float().unsqueeze(1)
        x = torch.cat([torch.ones(n, 1), degree / n], dim=1)
        x = x + 0.1 * torch.randn(n, 2, generator=generator)
        out.append(Data(x=x, edge_index=edge_index, y=torch.tensor([label])))
    return out
