"""Split builders: sizes, disjointness, determinism (own generator, not the global RNG)."""

from __future__ import annotations

import pytest
import torch

from hamgraph.data.registry import DATASETS, SPLIT_SEED, describe_split, resolve_dataset
from hamgraph.data.splits import (
    NodeSplit,
    index_split,
    mask_splits,
    per_class_split,
    planetoid_public_split,
    random_split,
    wikics_splits,
)
from hamgraph.presets import default_params, paper_best


def _disjoint(split: NodeSplit, n: int) -> None:
    split.check(n)
    sets = [set(split.train.tolist()), set(split.val.tolist()), set(split.test.tolist())]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])


def test_per_class_split_sizes_and_determinism() -> None:
    y = torch.arange(3000) % 6
    a = per_class_split(y, 6, seed=0)
    torch.manual_seed(123)  # the global RNG must not matter
    b = per_class_split(y, 6, seed=0)
    c = per_class_split(y, 6, seed=1)
    assert (a.train.numel(), a.val.numel(), a.test.numel()) == (120, 500, 1000)
    assert torch.equal(torch.bincount(y[a.train]), torch.full((6,), 20))
    _disjoint(a, 3000)
    assert all(
        torch.equal(p, q)
        for p, q in zip((a.train, a.val, a.test), (b.train, b.val, b.test), strict=True)
    )
    assert not torch.equal(a.train, c.train)


def test_per_class_split_needs_enough_nodes() -> None:
    with pytest.raises(ValueError, match="500"):
        per_class_split(torch.arange(100) % 2, 2)


@pytest.mark.parametrize(
    ("n", "sizes"), [(10, (6, 2, 2)), (101, (60, 20, 21)), (2485, (1491, 497, 497))]
)
def test_random_60_20_20_sizes_and_determinism(n: int, sizes: tuple[int, int, int]) -> None:
    a = random_split(n, seed=0)
    assert (a.train.numel(), a.val.numel(), a.test.numel()) == sizes
    _disjoint(a, n)
    assert sum(sizes) == n
    b = random_split(n, seed=0)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    if n > 10:
        assert not torch.equal(a.train, random_split(n, seed=1).train)


def test_mask_splits_fixed_10() -> None:
    n = 40
    g = torch.Generator().manual_seed(0)
    train, val, test = (torch.zeros(n, 10, dtype=torch.bool) for _ in range(3))
    for i in range(10):
        perm = torch.randperm(n, generator=g)
        train[perm[:20], i], val[perm[20:30], i], test[perm[30:], i] = True, True, True
    splits = mask_splits(train, val, test)
    assert len(splits) == 10
    for i, s in enumerate(splits):
        _disjoint(s, n)
        assert torch.equal(s.train, train[:, i].nonzero().view(-1))
        assert (s.train.numel(), s.val.numel(), s.test.numel()) == (20, 10, 10)


def test_wikics_val_includes_stopping_mask() -> None:
    n = 30
    train = torch.zeros(n, 20, dtype=torch.bool)
    val = torch.zeros(n, 20, dtype=torch.bool)
    stop = torch.zeros(n, 20, dtype=torch.bool)
    test = torch.zeros(n, dtype=torch.bool)
    train[:5], val[5:10], stop[10:15], test[20:] = True, True, True, True
    train[0, 3] = False  # splits differ
    splits = wikics_splits(train, val, stop, test)
    assert len(splits) == 20
    assert splits[0].val.tolist() == list(range(5, 15))
    assert splits[0].test.tolist() == list(range(20, 30))  # one test mask shared by all splits
    assert splits[3].train.tolist() == [1, 2, 3, 4]
    for s in splits:
        _disjoint(s, n)


def test_index_split_and_overlap_check() -> None:
    s = index_split(
        {"train": torch.tensor([3, 1]), "valid": torch.tensor([0]), "test": torch.tensor([[2]])}
    )
    assert s.train.tolist() == [1, 3] and s.test.tolist() == [2]
    with pytest.raises(ValueError, match="overlap"):
        NodeSplit(torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([2])).check(3)
    with pytest.raises(ValueError, match="range"):
        NodeSplit(torch.tensor([0]), torch.tensor([1]), torch.tensor([5])).check(3)


def _reference_class_rand_splits(label: torch.Tensor, per_class: int = 20):
    """tunedGNN's `class_rand_splits` (the reference protocol's code), global RNG."""
    train_idx, non_train_idx = [], []
    idx = torch.arange(label.shape[0])
    for c in label.unique():
        idx_c = idx[label == c]
        rand_idx = idx_c[torch.randperm(idx_c.shape[0])]
        train_idx += rand_idx[:per_class].tolist()
        non_train_idx += rand_idx[per_class:].tolist()
    rest = torch.as_tensor(non_train_idx)
    rest = rest[torch.randperm(rest.shape[0])]
    return torch.as_tensor(train_idx), rest[:500], rest[500:1500]


def test_per_class_split_is_the_reference_split() -> None:
    """With the reference seed the split is the one the published numbers were measured on."""
    y = torch.randint(0, 7, (2708,), generator=torch.Generator().manual_seed(5))
    ours = per_class_split(y, 7, seed=SPLIT_SEED)
    state = torch.get_rng_state()
    try:
        torch.manual_seed(123)
        train, val, test = _reference_class_rand_splits(y)
    finally:
        torch.set_rng_state(state)
    assert SPLIT_SEED == 123
    assert torch.equal(ours.train, train.sort().values)
    assert torch.equal(ours.val, val.sort().values)
    assert torch.equal(ours.test, test.sort().values)


def test_planetoid_public_split_from_masks() -> None:
    n = 30
    train, val, test = (torch.zeros(n, dtype=torch.bool) for _ in range(3))
    train[:6], val[6:16], test[20:] = True, True, True
    s = planetoid_public_split(train, val, test)
    assert s.train.tolist() == list(range(6))
    assert s.val.tolist() == list(range(6, 16))
    assert s.test.tolist() == list(range(20, 30))
    with pytest.raises(ValueError, match="one \\[N\\] mask"):
        planetoid_public_split(train.view(-1, 1), val, test)


@pytest.mark.parametrize("base", ["cora", "citeseer", "pubmed"])
def test_public_variants_share_everything_but_name_and_split(base: str) -> None:
    info, variant = resolve_dataset(base), resolve_dataset(f"{base}-public")
    assert variant.base == base and variant.base_name == base and info.base_name == base
    assert variant.split == "planetoid-public" != info.split
    assert variant.display == f"{info.display} (public)"
    assert (variant.task, variant.metric, variant.runs, variant.family) == (
        info.task, info.metric, info.runs, info.family,
    )
    assert "public" in describe_split(variant) and "random" in describe_split(info)
    # listed right after the Planetoid bases (report order), presets and paper-best looked up
    names = list(DATASETS)
    assert names.index(f"{base}-public") == names.index(base) + 3
    for model in ("gcn", "gat", "sage"):
        assert default_params(variant, model) == default_params(info, model)
        for kind in ("ham", "nham"):
            assert paper_best(f"{base}-public", model, kind) == paper_best(base, model, kind)


def test_every_split_protocol_is_described() -> None:
    for info in DATASETS.values():
        assert describe_split(info) != info.split, info.name
