"""Homophily measures of a labelled graph.

`edge_homophily`: the fraction of edges that join two nodes of the same class.
`adjusted_homophily` (Platonov et al. 2023, "Characterizing graph datasets for node
classification"): edge homophily corrected for the number of classes and their degrees,

    h_adj = (h_edge - sum_k p_k^2) / (1 - sum_k p_k^2),  p_k = D_k / (2|E|),

where D_k is the sum of the degrees of the nodes of class k. It is 0 for a random graph with
the same degrees, 1 for a perfectly homophilic one and can be negative.

Both take an `edge_index` that stores each undirected edge once or twice (both directions);
the values are the same either way. Self loops should be removed first.
"""

from __future__ import annotations

import torch
from torch import Tensor


def edge_homophily(edge_index: Tensor, y: Tensor) -> float:
    """Fraction of edges whose two end nodes have the same label (nan for a graph with no edges)."""
    if edge_index.size(1) == 0:
        return float("nan")
    y = y.view(-1)
    same = y[edge_index[0]] == y[edge_index[1]]
    return float(same.double().mean())


def adjusted_homophily(edge_index: Tensor, y: Tensor, num_classes: int | None = None) -> float:
    """Adjusted homophily of Platonov et al. (2023); nan when undefined (no edges, one class)."""
    if edge_index.size(1) == 0:
        return float("nan")
    y = y.view(-1).long()
    classes = int(num_classes) if num_classes is not None else int(y.max()) + 1
    # every edge endpoint adds 1 to the degree sum of its node's class
    ends = torch.cat([y[edge_index[0]], y[edge_index[1]]])
    degree_sums = torch.bincount(ends, minlength=classes).double()
    p = degree_sums / degree_sums.sum()
    expected = float((p * p).sum())
    if expected >= 1.0:
        return float("nan")
    return (edge_homophily(edge_index, y) - expected) / (1.0 - expected)
