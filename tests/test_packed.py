"""Packed training: a run trained in a pack is the run trained alone (same numbers, same record).

The equivalence tests train in float64 on the CPU and compare every epoch of every run of a
pack (models, norms, residual, pre-linear, Adam / HAM / nHAM / HAM signed, different splits)
with its single run.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys

import pytest
import torch

from hamgraph import runner
from hamgraph.data import node as node_data
from hamgraph.data.registry import resolve_dataset
from hamgraph.data.splits import random_split
from hamgraph.errors import ConfigError, UserInputError
from hamgraph.specs import HamSettings, NodeParams, OptimizerSpec, RunSpec
from hamgraph.train import node as node_trainer
from hamgraph.train import packed as packed_trainer
from hamgraph.train.metrics import accuracy, accuracy_rows, rocauc, rocauc_rows
from hamgraph.train.node import train_node_run
from hamgraph.train.packed import pack_footprint, pack_signature, train_node_pack

CPU = torch.device("cpu")
F64 = torch.float64
CSBM = "csbm-h0.8-n200"
SMALL = NodeParams(lr=1e-2, hidden=16, layers=2, dropout=0.5, weight_decay=5e-4, epochs=50)
OPTIMIZERS = [
    None,
    HamSettings(alpha=100.0, beta=0.1),
    HamSettings(alpha=-10.0, beta=0.0),
    HamSettings(alpha=50.0, beta=0.01, sign_source="previous"),
]


def _spec(dataset=CSBM, model="gcn", params=SMALL, ham=None, run=0, seed=0) -> RunSpec:
    return RunSpec(dataset, model, params, OptimizerSpec("adam", ham=ham), run=run, seed=seed)


def _pack_specs(model="gcn", params=SMALL, dataset=CSBM) -> list[RunSpec]:
    """Adam, HAM, nHAM, HAM signed on runs 0..3 (different splits where the data has them)."""
    return [
        _spec(dataset, model, params, ham, run=i, seed=7 + i) for i, ham in enumerate(OPTIMIZERS)
    ]


@pytest.fixture
def three_splits(monkeypatch):
    """CSBM with 3 different random splits, so run i of a pack trains on split i."""
    real = node_data.load_node_dataset

    def load(info, paths):
        data = real(info, paths)
        splits = [random_split(data.num_nodes, 0.6, 0.2, seed=s) for s in (1, 2, 3)]
        return dataclasses.replace(data, splits=splits)

    monkeypatch.setattr(node_trainer, "load_node_dataset", load)
    return load


def _assert_same_run(single, packed, *, exact_eval=True, rel=1e-6):
    """Same spec / record; per-epoch loss to `rel`; metrics, diagnostics, best epoch exactly
    (`exact_eval=False`: metrics within a few nodes, see the BatchNorm test)."""
    assert packed.spec == single.spec and packed.spec.key() == single.spec.key()
    assert (packed.status, packed.reason, packed.metric) == (
        single.status, single.reason, single.metric)
    assert packed.epochs == single.epochs == len(packed.history) == len(single.history)
    for a, b in zip(single.history, packed.history, strict=True):
        assert a.epoch == b.epoch and a.lr == b.lr
        assert b.loss == pytest.approx(a.loss, rel=rel, abs=0)
        if not exact_eval:
            assert (b.train, b.val, b.test) == pytest.approx((a.train, a.val, a.test), abs=0.1)
            continue
        assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
        assert a.sign_flips == b.sign_flips
        assert b.mean_abs_weight == pytest.approx(a.mean_abs_weight, rel=rel)
    if exact_eval:
        assert (packed.best_epoch, packed.val, packed.test) == (
            single.best_epoch, single.val, single.test) or (
            math.isnan(single.val) and math.isnan(packed.val))


def _check_pack(paths, specs, info=None, *, exact_eval=True, dtype=F64):
    info = info or resolve_dataset(specs[0].dataset)
    packed = train_node_pack(specs, info, paths, CPU, dtype=dtype)
    assert [r.spec for r in packed] == specs
    for spec, result in zip(specs, packed, strict=True):
        single = train_node_run(spec, info, paths, CPU, dtype=dtype)
        _assert_same_run(single, result, exact_eval=exact_eval)
    return packed


@pytest.mark.parametrize("model", ["gcn", "sage", "gat"])
def test_pack_equals_single_runs(offline_paths, three_splits, model):
    results = _check_pack(offline_paths, _pack_specs(model))
    assert all(r.status == "ok" for r in results)
    # the runs really differ (seeds, splits, optimizers): no model copied another
    losses = {r.history[-1].loss for r in results}
    assert len(losses) == len(results)


@pytest.mark.parametrize(
    ("model", "norm", "residual", "pre_linear"),
    [
        ("gcn", "batch", True, False),
        ("gcn", "layer", False, True),
        ("sage", "layer", True, True),
        ("sage", "batch", True, True),
        ("gat", "batch", True, False),
        ("gat", "layer", True, True),
    ],
)
def test_pack_equals_single_runs_norms_residual_prelinear(
    offline_paths, three_splits, model, norm, residual, pre_linear
):
    params = dataclasses.replace(
        SMALL, norm=norm, residual=residual, pre_linear=pre_linear, layers=3
    )
    # A conv bias right before BatchNorm has a zero gradient in exact arithmetic (only the
    # weight decay pulls it); Adam turns the rounding noise of that gradient into lr-sized
    # steps, so the bias depends on the order of summation. Training losses do not see it
    # (BatchNorm removes it), but the running mean lags behind it, so eval-mode metrics,
    # sign flips and mean |w| may differ by a little: compared loosely with BatchNorm.
    _check_pack(offline_paths, _pack_specs(model, params), exact_eval=norm != "batch")


def test_pack_of_one_is_the_single_run(offline_paths):
    spec = _spec(ham=HamSettings(alpha=100.0, beta=0.1), seed=3)
    info = resolve_dataset(CSBM)
    (packed,) = train_node_pack([spec], info, offline_paths, CPU)  # float32, as the runner
    single = train_node_run(spec, info, offline_paths, CPU)
    _assert_same_run(single, packed, rel=1e-5)


def test_same_run_twice_in_a_pack_is_identical(offline_paths):
    spec = _spec(seed=5)
    first, second = train_node_pack([spec, spec], resolve_dataset(CSBM), offline_paths, CPU)
    assert first.history == second.history


def test_rocauc_pack_equals_single_runs(offline_paths, three_splits):
    info = dataclasses.replace(resolve_dataset(CSBM), metric="rocauc")
    params = dataclasses.replace(SMALL, epochs=20)
    results = _check_pack(offline_paths, _pack_specs("gcn", params), info)
    assert all(r.metric == "rocauc" and 0.5 < r.val <= 1.0 for r in results)


def test_diverged_model_is_frozen_and_final_at_once(offline_paths, monkeypatch):
    real = packed_trainer.pack_loss
    calls = {"n": 0}

    def loss_nan_for_model_1_from_epoch_15(logits, y, train):
        calls["n"] += 1
        loss = real(logits, y, train)
        if calls["n"] >= 15:
            loss = loss * torch.tensor([1.0, math.nan, 1.0], dtype=loss.dtype)
        return loss

    monkeypatch.setattr(packed_trainer, "pack_loss", loss_nan_for_model_1_from_epoch_15)
    params = dataclasses.replace(SMALL, epochs=40)
    specs = [_spec(params=params, seed=s) for s in (1, 2, 3)]
    info = resolve_dataset(CSBM)
    order = []
    epochs_seen = {0: [], 1: [], 2: []}
    results = train_node_pack(
        specs, info, offline_paths, CPU, dtype=F64,
        on_result=lambda r: order.append(r.spec.seed),
        on_epochs=lambda i, rows: epochs_seen[i].extend(h.epoch for h in rows),
    )
    failed = results[1]
    assert failed.status == "failed" and failed.reason == "loss became nan at epoch 15"
    assert failed.epochs == 14 and [h.epoch for h in failed.history] == list(range(1, 15))
    assert math.isnan(failed.val) and math.isnan(failed.test) and failed.best_epoch == 0
    assert order == [2, 1, 3]  # the failed run was stored first, as soon as noticed
    assert epochs_seen == {0: list(range(1, 41)), 1: list(range(1, 15)), 2: list(range(1, 41))}
    # the others are untouched by their neighbour's NaNs: still equal to their single runs
    for m in (0, 2):
        single = train_node_run(specs[m], info, offline_paths, CPU, dtype=F64)
        _assert_same_run(single, results[m])


def test_all_models_diverging_stops_the_pack(offline_paths):
    params = dataclasses.replace(SMALL, lr=1e30, epochs=200, dropout=0.0)
    specs = [_spec(params=params, seed=s) for s in (1, 2)]
    results = train_node_pack(specs, resolve_dataset(CSBM), offline_paths, CPU)
    assert all(r.status == "failed" and r.reason.startswith("loss became ") for r in results)
    assert all(r.epochs < 200 for r in results)


def test_on_epochs_of_the_single_trainer(offline_paths):
    rows = []
    result = train_node_run(
        _spec(params=dataclasses.replace(SMALL, epochs=25)), resolve_dataset(CSBM),
        offline_paths, CPU, on_epochs=rows.append,
    )
    assert [len(r) for r in rows] == [10, 10, 5]
    assert [h for batch in rows for h in batch] == result.history


def test_pack_signature_groups_what_can_share_a_pack():
    base = _spec()
    same = [
        dataclasses.replace(base, seed=9, run=2),
        _spec(ham=HamSettings(alpha=1.0, beta=2.0)),
        _spec(ham=HamSettings(alpha=-1.0, beta=0.0, sign_source="previous")),
    ]
    assert all(pack_signature(s) == pack_signature(base) for s in same)
    other = [
        _spec(model="sage"),
        _spec(dataset="csbm-h0.2-n200"),
        _spec(params=dataclasses.replace(SMALL, lr=0.1)),
        dataclasses.replace(base, optimizer=OptimizerSpec("sgd")),
        dataclasses.replace(base, optimizer=OptimizerSpec("adam", (("amsgrad", True),))),
        _spec(ham=HamSettings(alpha=1.0, beta=0.0, clamp=2.0)),
        _spec(ham=HamSettings(alpha=1.0, beta=0.0, mask_beta=False)),
    ]
    assert len({pack_signature(s) for s in [base, *other]}) == 1 + len(other)


def test_specs_that_cannot_share_a_pack_are_rejected(offline_paths):
    specs = [_spec(), _spec(model="sage")]
    with pytest.raises(ConfigError, match="cannot share a pack"):
        train_node_pack(specs, resolve_dataset(CSBM), offline_paths, CPU)
    assert train_node_pack([], resolve_dataset(CSBM), offline_paths, CPU) == []


def test_only_elementwise_base_optimizers_pack(offline_paths):
    """Adafactor's factored moments (or LBFGS, or a per-tensor trust ratio) would mix the models
    of a stacked weight: such runs train alone, and a pack of them is refused."""
    factored = [
        dataclasses.replace(_spec(seed=s), optimizer=OptimizerSpec("torch.optim.Adafactor"))
        for s in (1, 2)
    ]
    assert pack_signature(factored[0]) is None
    assert [len(p) for p in runner.plan_packs(factored, "auto", lambda _: 8)] == [1, 1]
    with pytest.raises(ConfigError, match="not elementwise"):
        train_node_pack(factored, resolve_dataset(CSBM), offline_paths, CPU)
    radam = [dataclasses.replace(s, optimizer=OptimizerSpec("torch.optim.RAdam")) for s in factored]
    assert [len(p) for p in runner.plan_packs(radam, "auto", lambda _: 8)] == [2]


def test_float32_pack_ham_step_equals_the_single_step_bit_for_bit():
    """Per-model alpha/beta enter as float64, like the single run's Python floats, so
    -lr * alpha is rounded once to float32 in both (lr 0.01 x alpha 30 once differed by an ulp)."""
    from hamgraph.optim import hyperbolic_step_
    from hamgraph.train.packed import _HamStep

    hams = [HamSettings(30.0, 0.1), None, HamSettings(-7.0, 0.013), HamSettings(200.0, 0.0)]
    specs = [_spec(ham=ham, seed=m) for m, ham in enumerate(hams)]
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(len(specs), 64, 33, generator=gen)
    weight.grad = torch.randn(weight.shape, generator=gen)
    singles = [weight[m].clone() for m in range(len(specs))]
    _HamStep(specs, [weight])(0.01, None)
    for m, ham in enumerate(hams):
        if ham is not None:
            hyperbolic_step_([singles[m]], [weight.grad[m]], lr=0.01, alpha=ham.alpha,
                             beta=ham.beta, clamp=ham.clamp)
        assert torch.equal(weight[m].detach(), singles[m]), f"model {m}"


def test_ham_on_rmsprop_cannot_pack(offline_paths):
    rms = [dataclasses.replace(_spec(seed=s), optimizer=OptimizerSpec(
        "torch.optim.RMSprop", ham=HamSettings(10.0, 0.1))) for s in (1, 2)]
    with pytest.raises(UserInputError, match="HAM cannot run on RMSprop"):
        train_node_pack(rms, resolve_dataset(CSBM), offline_paths, CPU)


@pytest.mark.parametrize(
    "base", [OptimizerSpec("sgd", (("momentum", 0.9),)), OptimizerSpec("torch.optim.RAdam")]
)
def test_other_base_optimizer_packs_exactly(offline_paths, base):
    specs = [
        RunSpec(CSBM, "gcn", dataclasses.replace(SMALL, epochs=20), dataclasses.replace(
            base, ham=ham), run=0, seed=s) for s, ham in ((1, None), (2, HamSettings(10.0, 0.1)))
    ]
    _check_pack(offline_paths, specs)


def test_host_syncs_scale_with_sync_interval_not_epochs(offline_paths, monkeypatch):
    counts = {"n": 0}
    for name in ("item", "tolist", "cpu", "__bool__", "__int__", "__float__", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            counts["n"] += caller.startswith("hamgraph.")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    specs = [_spec(seed=s) for s in (1, 2, 3)]

    def run(epochs):
        before = counts["n"]
        train_node_pack([dataclasses.replace(s, params=dataclasses.replace(
            SMALL, epochs=epochs)) for s in specs], resolve_dataset(CSBM), offline_paths, CPU)
        return counts["n"] - before

    run(10)
    short, long = run(10), run(90)
    assert long - short <= 3 * (80 // node_trainer.SYNC_EVERY)


def test_pack_footprint_is_positive_and_grows_with_width(offline_paths):
    info = resolve_dataset(CSBM)
    narrow = pack_footprint(_spec(), info, offline_paths, CPU)
    wide = pack_footprint(
        _spec(params=dataclasses.replace(SMALL, hidden=64)), info, offline_paths, CPU
    )
    assert 0 < narrow < wide


# -- row-batched metrics equal the plain ones --------------------------------------------------


def test_row_metrics_equal_plain_metrics():
    gen = torch.Generator().manual_seed(0)
    sizes = [50, 37, 1, 0]
    longest = max(sizes)
    logits = torch.randn(len(sizes), longest, 4, generator=gen)
    scores = (torch.rand(len(sizes), longest, generator=gen) * 5).round() / 5  # many ties
    labels = torch.randint(0, 2, (len(sizes), longest), generator=gen)
    valid = torch.arange(longest).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)
    acc = accuracy_rows(logits, labels, valid)
    auc = rocauc_rows(scores, labels, valid)
    for m, n in enumerate(sizes):
        want_acc = accuracy(logits[m, :n], labels[m, :n]).double()
        want_auc = rocauc(scores[m, :n], labels[m, :n])
        for got, want in ((acc[m], want_acc), (auc[m], want_auc)):
            assert (math.isnan(got) and math.isnan(want)) or got.item() == want.item()
    assert not math.isnan(auc[0]) and math.isnan(auc[2])  # one entry: one class only


# -- CUDA --------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("model", ["gcn", "sage", "gat"])
def test_cuda_pack_equals_single_runs(offline_paths, three_splits, model):
    device = torch.device("cuda")
    params = dataclasses.replace(SMALL, norm="layer", residual=True, epochs=30)
    specs = _pack_specs(model, params)
    info = resolve_dataset(CSBM)
    packed = train_node_pack(specs, info, offline_paths, device, dtype=F64)
    for spec, result in zip(specs, packed, strict=True):
        single = train_node_run(spec, info, offline_paths, device, dtype=F64)
        # CUDA kernels (scatter, sparse products) sum in a different order: tolerances
        for a, b in zip(single.history, result.history, strict=True):
            assert b.loss == pytest.approx(a.loss, rel=1e-6)
        assert result.best_epoch == single.best_epoch


@pytest.mark.cuda
@cuda
def test_cuda_float32_pack_matches_single_runs_closely(offline_paths):
    device = torch.device("cuda")
    specs = _pack_specs("gcn", dataclasses.replace(SMALL, epochs=30))
    info = resolve_dataset(CSBM)
    packed = train_node_pack(specs, info, offline_paths, device)
    for spec, result in zip(specs, packed, strict=True):
        single = train_node_run(spec, info, offline_paths, device)
        for a, b in zip(single.history, result.history, strict=True):
            assert b.loss == pytest.approx(a.loss, rel=1e-3)


@pytest.mark.cuda
@cuda
def test_cuda_pack_footprint_is_measured(offline_paths):
    info = resolve_dataset(CSBM)
    assert pack_footprint(_spec(), info, offline_paths, torch.device("cuda")) > 0


# -- whole runs (slow) -------------------------------------------------------------------------


@pytest.mark.slow
def test_ten_packed_runs_match_ten_single_runs_on_cora(data_paths):
    """Float32, whole (shortened) runs: the mean test accuracy of 10 packed runs equals that of
    the same 10 single runs within noise."""
    info = resolve_dataset("cora")
    params = NodeParams(lr=1e-2, hidden=64, layers=2, dropout=0.5, weight_decay=5e-4,
                        epochs=100)
    specs = [_spec("cora", "gcn", params, run=i, seed=i) for i in range(10)]
    packed = [r.test for r in train_node_pack(specs, info, data_paths, CPU)]
    single = [train_node_run(s, info, data_paths, CPU).test for s in specs]
    noise = statistics.stdev(single) / math.sqrt(len(single))
    assert abs(statistics.mean(packed) - statistics.mean(single)) <= 3 * noise + 1e-3
    assert statistics.mean(packed) > 0.75
