"""The runner: packs (grouping, sizes, the CPU limit), out-of-memory split and retry."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from hamgraph import runner
from hamgraph.errors import UserInputError
from hamgraph.grid import specs_for
from hamgraph.specs import EpochStats, HamSettings, RunResult
from hamgraph.store import ResultStore

CSBM = "csbm-h0.8-n200"


def _cell_specs(model: str = "gcn", ham: HamSettings | None = None, runs: int = 2):
    return specs_for(CSBM, model, ham, overrides={"epochs": 3, "hidden": 8}, runs=runs)


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5", ""])
def test_bad_pack_values(value):
    with pytest.raises(UserInputError, match=r"--pack must be auto, off or a number >= 1"):
        runner.parse_pack(value)


def test_pack_values():
    assert runner.parse_pack("auto") == "auto" and runner.parse_pack("off") == "off"
    assert runner.parse_pack("25") == 25 and runner.parse_pack(3) == 3


def test_plan_packs_groups_by_signature_in_order():
    gcn = _cell_specs() + _cell_specs(ham=HamSettings(200.0, 0.1)) + _cell_specs(
        ham=HamSettings(-10.0, 0.01))
    sage = _cell_specs("sage")
    graph = specs_for("ogbg-molhiv", "gcnplus", None, overrides={}, runs=2)
    specs = [*gcn[:3], *graph, *gcn[3:], *sage]

    def keys(packs):
        return [[s.key() for s in pack] for pack in packs]

    assert keys(runner.plan_packs(specs, "off", lambda s: 99)) == [[s.key()] for s in specs]
    auto = runner.plan_packs(specs, "auto", lambda s: 4)
    # a group's packs stay together, at the place where the group first appears
    assert keys(auto) == keys([gcn[:4], gcn[4:], graph[:1], graph[1:], sage])
    three = runner.plan_packs(specs, 3, lambda s: 99)
    assert [len(p) for p in three] == [3, 3, 1, 1, 2]
    # nothing lost, nothing twice
    assert sorted(s.key() for p in three for s in p) == sorted(s.key() for s in specs)


def test_cpu_pack_limit_keeps_wide_presets_single(data_paths):
    cora_gcn = specs_for("cora", "gcn", None, overrides={}, runs=1)[0]  # 2708 nodes x 512
    assert runner.cpu_pack_limit(cora_gcn, data_paths) == 1
    assert runner.auto_pack_size(cora_gcn, data_paths, torch.device("cpu")) == 1
    narrow = _cell_specs()[0]  # 200 nodes x 8
    assert runner.cpu_pack_limit(narrow, data_paths) == runner.CPU_PACK_BYTES // (200 * 8 * 4)
    assert 1 < runner.auto_pack_size(narrow, data_paths, torch.device("cpu")) <= 128


def _result(spec) -> RunResult:
    history = [EpochStats(1, 0.5, 0.5, 0.5, 0.5, 0.01, 0, 0.1)]
    return RunResult(spec, "accuracy", "ok", 0.5 + spec.run / 100, 0.4, 1, 1, 0.1,
                     history=history)


def test_out_of_memory_splits_the_pack_and_loses_nothing(monkeypatch, tmp_path: Path,
                                                         offline_paths):
    """A pack that does not fit is halved until it does; runs it had finished are kept."""
    import hamgraph.train
    import hamgraph.train.packed

    calls: list[int] = []

    def fake_pack(specs, info, paths, device, *, on_result=None, on_epochs=None, **_):
        calls.append(len(specs))
        on_result(_result(specs[0]))  # a run that finished before the pack ran out of memory
        if len(specs) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        for spec in specs[1:]:
            on_result(_result(spec))
        return []

    def fake_single(spec, paths, device, checkpoint_dir=None, on_epochs=None):
        calls.append(1)
        return _result(spec)

    monkeypatch.setattr(hamgraph.train.packed, "train_node_pack", fake_pack)
    monkeypatch.setattr(hamgraph.train, "execute", fake_single)
    specs = _cell_specs(runs=7)
    store = ResultStore(tmp_path / "out")
    store.prepare()
    outcomes = runner.execute_specs(specs, store, offline_paths, torch.device("cpu"), pack=7)
    assert [o.kind for o in outcomes] == ["ok"] * 7
    # 7 -> 1 stored, 6 left: 3 + 3; each 3 -> 1 stored, 2 left: 1 + 1 (single runs)
    assert calls == [7, 3, 1, 1, 3, 1, 1]
    frame = store.frame()
    assert sorted(frame["key"]) == sorted(s.key() for s in specs)  # each run exactly once
    assert all(math.isclose(v, 0.5 + r / 100) for v, r in zip(frame["val"], frame["run"],
                                                                 strict=True))


def test_auto_pack_size_is_per_model_and_params(monkeypatch, tmp_path: Path, offline_paths):
    """Two models (or two widths) of one dataset have different footprints: each gets its own
    auto size, not the size of whichever group came first."""
    import hamgraph.train
    import hamgraph.train.packed

    packs: list[tuple[str, int, int]] = []
    sized: list[tuple[str, int]] = []

    def fake_size(spec, paths, device):
        sized.append((spec.model, spec.params.hidden))
        return {"gcn": 2, "sage": 3}[spec.model] + (spec.params.hidden == 16)

    def fake_pack(specs, info, paths, device, *, on_result=None, on_epochs=None, **_):
        packs.append((specs[0].model, specs[0].params.hidden, len(specs)))
        for spec in specs:
            on_result(_result(spec))
        return []

    def fake_single(spec, paths, device, checkpoint_dir=None, on_epochs=None):
        packs.append((spec.model, spec.params.hidden, 1))  # a pack of one trains alone
        return _result(spec)

    monkeypatch.setattr(runner, "auto_pack_size", fake_size)
    monkeypatch.setattr(hamgraph.train.packed, "train_node_pack", fake_pack)
    monkeypatch.setattr(hamgraph.train, "execute", fake_single)
    wide = specs_for(CSBM, "gcn", None, overrides={"epochs": 3, "hidden": 16}, runs=4)
    specs = [*_cell_specs(runs=4), *_cell_specs("sage", runs=4), *wide]
    store = ResultStore(tmp_path / "out")
    store.prepare()
    outcomes = runner.execute_specs(specs, store, offline_paths, torch.device("cpu"))
    assert [o.kind for o in outcomes] == ["ok"] * 12
    assert sorted(sized) == [("gcn", 8), ("gcn", 16), ("sage", 8)]  # once per shape
    assert sorted(packs) == sorted([("gcn", 8, 2), ("gcn", 8, 2), ("sage", 8, 3), ("sage", 8, 1),
                                    ("gcn", 16, 3), ("gcn", 16, 1)])


def test_explicit_cpu_packs_above_the_cpu_limit_warn(monkeypatch, tmp_path: Path, offline_paths,
                                                     caplog):
    import hamgraph.train.packed

    def fake_pack(specs, info, paths, device, *, on_result=None, on_epochs=None, **_):
        for spec in specs:
            on_result(_result(spec))
        return []

    monkeypatch.setattr(hamgraph.train.packed, "train_node_pack", fake_pack)
    wide = specs_for(CSBM, "gcn", None, overrides={"epochs": 3, "hidden": 4096}, runs=4)
    narrow = _cell_specs(runs=4)
    assert runner.cpu_pack_limit(wide[0], offline_paths) == 1  # 200 x 4096 floats > 2 MiB
    store = ResultStore(tmp_path / "out")
    store.prepare()
    with caplog.at_level("WARNING", logger="hamgraph.runner"):
        outcomes = runner.execute_specs([*narrow, *wide], store, offline_paths,
                                        torch.device("cpu"), pack=2)
    assert [o.kind for o in outcomes] == ["ok"] * 8  # still trained as asked, in packs
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{CSBM}/gcn: packs of 2 runs are slower than single runs on a CPU "
                        "(their activations leave the cache above 1); --pack auto packs only "
                        "where it pays"]


def test_out_of_memory_retry_frees_the_failed_pack_first(monkeypatch, tmp_path: Path,
                                                         offline_paths):
    """The halves train after the failed pack's frames (model, activations) are released;
    retrying inside the except block kept them alive through the traceback."""
    import gc
    import weakref

    import hamgraph.train
    import hamgraph.train.packed

    class Activations:  # stands for the failed pack's tensors
        pass

    refs: list[weakref.ref] = []
    alive_at_retry: list[bool] = []

    def fake_pack(specs, info, paths, device, *, on_result=None, on_epochs=None, **_):
        if len(specs) == 4:
            held = Activations()  # a local of the failing frame
            refs.append(weakref.ref(held))
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        gc.collect()
        alive_at_retry.append(refs[0]() is not None)
        for spec in specs:
            on_result(_result(spec))
        return []

    monkeypatch.setattr(hamgraph.train.packed, "train_node_pack", fake_pack)
    store = ResultStore(tmp_path / "out")
    store.prepare()
    outcomes = runner.execute_specs(_cell_specs(runs=4), store, offline_paths,
                                    torch.device("cpu"), pack=4)
    assert [o.kind for o in outcomes] == ["ok"] * 4
    assert alive_at_retry == [False, False]


def test_an_unavailable_dataset_does_not_stop_auto_packing(tmp_path: Path, offline_paths):
    """Sizing the packs of a dataset that cannot be loaded used to raise out of the planner and
    end the command before any run trained; now its runs are reported, the others train."""
    cora = specs_for("cora", "gcn", None, overrides={"epochs": 2}, runs=2)  # no mirror here
    store = ResultStore(tmp_path / "out")
    store.prepare()
    outcomes = runner.execute_specs([*cora, *_cell_specs(runs=2)], store, offline_paths,
                                    torch.device("cpu"), pack="auto", progress=False)
    assert [o.kind for o in outcomes] == ["unavailable", "unavailable", "ok", "ok"]


def test_an_error_that_is_not_memory_is_not_retried(monkeypatch, tmp_path: Path, offline_paths):
    import hamgraph.train.packed

    def broken(specs, *args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(hamgraph.train.packed, "train_node_pack", broken)
    specs = _cell_specs(runs=3)
    store = ResultStore(tmp_path / "out")
    outcomes = runner.execute_specs(specs, store, offline_paths, torch.device("cpu"), pack=3)
    assert [o.kind for o in outcomes] == ["error"] * 3
    assert "ValueError: a bug" in outcomes[0].message
    assert store.finished_keys() == set()  # not stored: the next call retries them


def test_records_say_how_many_runs_shared_their_clock(tmp_path: Path, offline_paths):
    """A packed run's train_seconds is the pack's time / M: its record's provenance keeps the
    pack size (the report compares training times only of runs timed alone)."""
    specs = _cell_specs(runs=3) + _cell_specs(ham=HamSettings(alpha=10.0, beta=0.01), runs=1)
    store = ResultStore(tmp_path / "out")
    store.prepare()
    runner.execute_specs(specs, store, offline_paths, torch.device("cpu"), pack=3,
                         progress=False)
    sizes = [store.load(spec.key()).provenance["pack_size"] for spec in specs]
    assert sizes == ["3", "3", "3", "1"]
