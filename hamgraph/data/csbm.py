"""Synthetic graphs from a contextual stochastic block model (CSBM).

Labels: `classes` balanced classes, randomly assigned to the `nodes` nodes.
Edges: round(nodes * avg_degree / 2) undirected edges drawn independently: a uniformly random
source node, then with probability `homophily` a uniformly random *other* node of its class,
otherwise a uniformly random node of a uniformly random other class. So the expected edge
homophily is `homophily` (duplicates drawn twice are merged, which changes it by O(degree/n)),
and for balanced classes this is the block model with p_in / p_out set by `homophily`.
Features: Gaussian, x_i = mu_{y_i} + N(0, I), with class means on orthogonal axes scaled so
that any two class means are exactly `signal` apart.

Everything is drawn from one `torch.Generator` seeded with `seed`: same options and seed, same
graph, on every machine.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch_geometric.utils import coalesce, remove_self_loops, to_undirected

from hamgraph.data.registry import CsbmOptions
from hamgraph.errors import ConfigError

CSBM_SEED = 12345  # the seed of the one graph a CSBM dataset name stands for (not the split)


def generate_csbm(options: CsbmOptions, seed: int = CSBM_SEED) -> tuple[Tensor, Tensor, Tensor]:
    """-> (x [N, F] float32, y [N] long, edge_index [2, E] undirected, coalesced, no self loops)."""
    n, c, f = options.nodes, options.classes, options.features
    if c < 2 or n < 2 * c:
        raise ConfigError(f"CSBM needs classes >= 2 and nodes >= 2 * classes, got {options}")
    if f < c:
        raise ConfigError(f"CSBM needs features >= classes, got {options}")
    if not 0.0 <= options.homophily <= 1.0 or options.avg_degree <= 0:
        raise ConfigError(f"CSBM needs 0 <= homophily <= 1 and avg_degree > 0, got {options}")
    generator = torch.Generator().manual_seed(seed)

    # labels: balanced classes, random node order
    y = (torch.arange(n) % c)[torch.randperm(n, generator=generator)]
    members = torch.argsort(y, stable=True)  # nodes grouped by class
    counts = torch.bincount(y, minlength=c)
    offsets = torch.cumsum(counts, 0) - counts

    # edges: a source, then a target in the same class (prob. h) or in another class
    m = max(1, round(n * options.avg_degree / 2))
    src = torch.randint(n, (m,), generator=generator)
    intra = torch.rand(m, generator=generator) < options.homophily
    shift = torch.randint(1, c, (m,), generator=generator)
    target_class = torch.where(intra, y[src], (y[src] + shift) % c)
    pick = torch.rand(m, generator=generator)
    size = counts[target_class]
    # same class: pick among the size - 1 others by skipping over the source's own slot
    slot = torch.where(intra, (pick * (size - 1)).long(), (pick * size).long())
    own_slot = torch.empty(n, dtype=torch.long)
    own_slot[members] = torch.arange(n) - offsets[y[members]]
    slot = slot + (intra & (slot >= own_slot[src])).long()
    dst = members[offsets[target_class] + slot.clamp(max=size - 1)]

    edge_index = torch.stack([src, dst])
    edge_index, _ = remove_self_loops(edge_index)
    edge_index = coalesce(to_undirected(edge_index, num_nodes=n), num_nodes=n)

    # features: class means `signal` apart, unit Gaussian noise
    means = torch.zeros(c, f)
    means[torch.arange(c), torch.arange(c)] = options.signal / math.sqrt(2.0)
    x = means[y] + torch.randn(n, f, generator=generator)
    return x.float(), y.long(), edge_index
