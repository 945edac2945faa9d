"""CSBM generation and homophily measures."""

from __future__ import annotations

import math

import pytest
import torch

from hamgraph.data.csbm import generate_csbm
from hamgraph.data.homophily import adjusted_homophily, edge_homophily
from hamgraph.data.node import load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import CsbmOptions, resolve_dataset
from hamgraph.errors import ConfigError


def test_homophily_on_a_hand_made_graph() -> None:
    # path 0-1-2, labels 0,0,1: one of two edges is intra-class
    y = torch.tensor([0, 0, 1])
    once = torch.tensor([[0, 1], [1, 2]])
    both = torch.tensor([[0, 1, 1, 2], [1, 0, 2, 1]])
    for ei in (once, both):
        assert edge_homophily(ei, y) == pytest.approx(0.5)
        # degrees 1,2,1 -> D_0 = 3, D_1 = 1, 2|E| = 4: sum p^2 = 10/16
        assert adjusted_homophily(ei, y) == pytest.approx((0.5 - 10 / 16) / (1 - 10 / 16))
        assert adjusted_homophily(ei, y) == pytest.approx(-1 / 3)


def test_homophily_second_example() -> None:
    # triangle 0-1-2 (class 0) + edge 2-3 (class 1): h = 3/4
    y = torch.tensor([0, 0, 0, 1])
    ei = torch.tensor([[0, 1, 0, 2], [1, 2, 2, 3]])
    # degrees 2,2,3,1 -> D_0 = 7, D_1 = 1, 2|E| = 8
    expected = 1 - (49 + 1) / 64
    assert edge_homophily(ei, y) == pytest.approx(0.75)
    assert adjusted_homophily(ei, y) == pytest.approx((0.75 - (1 - expected)) / expected)
    # a perfectly homophilic graph has h_adj = 1
    assert adjusted_homophily(torch.tensor([[0, 2], [1, 3]]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert math.isnan(edge_homophily(torch.empty(2, 0, dtype=torch.long), y))


@pytest.mark.parametrize("h", [0.2, 0.8])
def test_csbm_edge_homophily_close_to_requested(h: float) -> None:
    _, y, ei = generate_csbm(CsbmOptions(homophily=h, nodes=2000, classes=3))
    assert abs(edge_homophily(ei, y) - h) < 0.03


def test_csbm_sizes_determinism_and_features() -> None:
    options = CsbmOptions(
        homophily=0.5, nodes=600, classes=3, features=8, avg_degree=6.0, signal=4.0
    )
    x, y, ei = generate_csbm(options, seed=3)
    assert tuple(x.shape) == (600, 8) and x.dtype == torch.float32
    assert torch.equal(torch.bincount(y), torch.full((3,), 200))
    assert not bool((ei[0] == ei[1]).any())
    assert abs(ei.size(1) / 600 - 6.0) < 0.5  # average degree
    pairs = set(map(tuple, ei.t().tolist()))
    assert pairs == {(b, a) for a, b in pairs} and len(pairs) == ei.size(1)
    means = torch.stack([x[y == c].mean(0) for c in range(3)])
    assert torch.cdist(means, means)[0, 1] == pytest.approx(4.0, abs=0.4)
    x2, y2, ei2 = generate_csbm(options, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(ei, ei2)
    x3, _, _ = generate_csbm(options, seed=4)
    assert not torch.equal(x, x3)


def test_csbm_bad_options() -> None:
    with pytest.raises(ConfigError, match="features"):
        generate_csbm(CsbmOptions(classes=4, features=2))


def test_csbm_dataset_split(offline_paths: DataPaths) -> None:
    data = load_node_dataset(resolve_dataset("csbm-h0.2-n500"), offline_paths)
    assert data.num_nodes == 500 and data.num_classes == 2
    s = data.split_for_run(1)
    assert (s.train.numel(), s.val.numel(), s.test.numel()) == (300, 100, 100)
    again = load_node_dataset(
        resolve_dataset("csbm-h0.2-n500"), DataPaths(offline_paths.cache, None)
    )
    assert torch.equal(again.x, data.x)
    assert abs(edge_homophily(data.edge_index, data.y) - 0.2) < 0.05
