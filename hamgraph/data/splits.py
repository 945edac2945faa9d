"""Train / validation / test splits of node-classification datasets (REFERENCE §2).

Generated splits draw from their own `torch.Generator` seeded with the given seed (never the
global RNG), so the same seed always gives the same split, whatever ran before.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hamgraph.data.registry import SPLIT_SEED


@dataclass(frozen=True)
class NodeSplit:
    """Sorted long index tensors of the train, validation and test nodes (pairwise disjoint)."""

    train: Tensor
    val: Tensor
    test: Tensor

    def check(self, num_nodes: int) -> None:
        """Raise ValueError unless the three sets are in range and pairwise disjoint."""
        seen = torch.zeros(num_nodes, dtype=torch.long)
        for part in (self.train, self.val, self.test):
            if part.numel() and (int(part.min()) < 0 or int(part.max()) >= num_nodes):
                raise ValueError(f"split index out of range [0, {num_nodes})")
            seen.index_add_(0, part, torch.ones_like(part))
        if int(seen.max()) > 1:
            raise ValueError(f"split sets overlap on {int((seen > 1).sum())} nodes")


def _sorted(index: Tensor) -> Tensor:
    return index.sort().values.to(torch.long)


def per_class_split(
    y: Tensor,
    num_classes: int,
    per_class: int = 20,
    num_val: int = 500,
    num_test: int = 1000,
    seed: int = SPLIT_SEED,
) -> NodeSplit:
    """`per_class` random training nodes of every class, then `num_val` validation and
    `num_test` test nodes drawn at random from the rest (the Planetoid "random" protocol).

    Draws in the order of the reference code (tunedGNN `class_rand_splits`): per class a
    permutation of its nodes (first `per_class` train, the others kept in that order), then one
    permutation of all kept nodes. With the reference seed this is the exact published split.
    """
    generator = torch.Generator().manual_seed(seed)
    train_parts, rest_parts = [], []
    for c in range(num_classes):
        members = (y == c).nonzero().view(-1)
        members = members[torch.randperm(members.numel(), generator=generator)]
        train_parts.append(members[:per_class])
        rest_parts.append(members[per_class:])
    train, rest = torch.cat(train_parts), torch.cat(rest_parts)
    if rest.numel() < num_val + num_test:
        raise ValueError(
            f"per-class split needs {num_val} + {num_test} nodes outside the training set, "
            f"the graph has {rest.numel()}"
        )
    rest = rest[torch.randperm(rest.numel(), generator=generator)]
    return NodeSplit(
        _sorted(train), _sorted(rest[:num_val]), _sorted(rest[num_val : num_val + num_test])
    )


def random_split(
    num_nodes: int,
    train: float = 0.6,
    val: float = 0.2,
    seed: int = SPLIT_SEED,
) -> NodeSplit:
    """A random split: floor(train*N) train, floor(val*N) validation, the rest test."""
    if not (0 < train and 0 <= val and train + val < 1):
        raise ValueError(f"bad split fractions train={train}, val={val}")
    generator = torch.Generator().manual_seed(seed)
    perm = torch.randperm(num_nodes, generator=generator)
    n_train, n_val = int(train * num_nodes), int(val * num_nodes)
    return NodeSplit(
        _sorted(perm[:n_train]),
        _sorted(perm[n_train : n_train + n_val]),
        _sorted(perm[n_train + n_val :]),
    )


def _columns(mask: Tensor, count: int) -> list[Tensor]:
    """A [N] or [N, S] boolean mask -> `count` index tensors (a [N] mask is shared by all)."""
    mask = mask.to(torch.bool)
    if mask.dim() == 1:
        return [mask.nonzero().view(-1)] * count
    if mask.size(1) != count:
        raise ValueError(f"mask has {mask.size(1)} columns, expected {count}")
    return [mask[:, i].nonzero().view(-1) for i in range(count)]


def mask_splits(train_mask: Tensor, val_mask: Tensor, test_mask: Tensor) -> list[NodeSplit]:
    """Shipped masks ([N, S] or [N], one column per split) -> S NodeSplits."""
    count = max(m.size(1) if m.dim() == 2 else 1 for m in (train_mask, val_mask, test_mask))
    trains, vals, tests = (_columns(m, count) for m in (train_mask, val_mask, test_mask))
    return [
        NodeSplit(_sorted(a), _sorted(b), _sorted(c))
        for a, b, c in zip(trains, vals, tests, strict=True)
    ]


def planetoid_public_split(train_mask: Tensor, val_mask: Tensor, test_mask: Tensor) -> NodeSplit:
    """The fixed public split of Planetoid (Kipf & Welling 2017) from PyG's `split="public"`
    masks: the first 20 nodes of every class in the file order for training (nodes 0..139 on
    Cora), the next 500 for validation, the 1000 nodes of `test.index` for testing.
    """
    if any(mask.dim() != 1 for mask in (train_mask, val_mask, test_mask)):
        raise ValueError("the Planetoid public split is one [N] mask per set")
    return mask_splits(train_mask, val_mask, test_mask)[0]


def wikics_splits(
    train_mask: Tensor, val_mask: Tensor, stopping_mask: Tensor, test_mask: Tensor
) -> list[NodeSplit]:
    """PyG's 20 WikiCS splits; validation = val_mask OR stopping_mask (REFERENCE §2)."""
    return mask_splits(train_mask, val_mask.bool() | stopping_mask.bool(), test_mask)


def index_split(split_idx: dict[str, Tensor]) -> NodeSplit:
    """OGB's official split dict {"train", "valid", "test"} -> one NodeSplit."""
    return NodeSplit(
        _sorted(split_idx["train"].view(-1)),
        _sorted(split_idx["valid"].view(-1)),
        _sorted(split_idx["test"].view(-1)),
    )
