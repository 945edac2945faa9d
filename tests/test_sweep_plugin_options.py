"""Sweeps over the options of a plug-in model / dataset (`model.<option>`, `dataset.<option>`
in `search.space`): validation at load, run keys, best.csv, the report, resume.

A plug-in module written to tmp_path (importable in-process and by subprocesses), a tiny
synthetic graph, 1 run, a few epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import TINY

from hamgraph import sweep as sw
from hamgraph.cli import main
from hamgraph.store import ResultStore

MODULE = '''
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import SAGEConv


class RingNet(nn.Module):
    def __init__(self, in_channels, out_channels, hidden=8, scale=1.0):
        super().__init__()
        self.conv1 = SAGEConv(in_channels, hidden)
        self.conv2 = SAGEConv(hidden, out_channels)
        self.scale = scale

    def forward(self, x, edge_index):
        return self.scale * self.conv2(F.relu(self.conv1(x, edge_index)), edge_index)


class PlainNet(RingNet):
    def __init__(self, in_channels, out_channels, hidden=8):
        super().__init__(in_channels, out_channels, hidden)


def ring(nodes=60, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(nodes) % classes
    src = torch.arange(nodes)
    edge_index = torch.stack([src, (src + classes) % nodes])
    x = torch.nn.functional.one_hot(y, classes).float() + torch.randn(nodes, classes, generator=g)
    return Data(x=x, y=y, edge_index=edge_index)
'''
MODEL = "{_target_: sweeplab.RingNet}"
RING = "{_target_: sweeplab.ring, split: {kind: random, train: 0.6, val: 0.2}}"


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sweeplab.py` outside the repository, importable here and in worker processes."""
    where = tmp_path / "lab"
    where.mkdir()
    (where / "sweeplab.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.setenv("PYTHONPATH", str(where))
    monkeypatch.setenv("HAMGRAPH_DATA", str(tmp_path / "cache"))
    return where


def _sweep(tmp_path: Path, search: str, datasets: str = f"[{TINY}]", models: str = f"[{MODEL}]",
           extra: str = "", name: str = "p") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ndatasets: {datasets}\nmodels: {models}\nepochs: 3\nruns: 1\n"
                    f"{extra}search:\n{search}")
    return path


def _study(path: Path, dataset: str = TINY, model: str = "RingNet") -> list:
    import optuna

    sweep = sw.load_sweep(path)
    study = optuna.load_study(study_name=sw.study_name(sweep, dataset, model),
                              storage=sw.open_storage(sw.storage_url(None, path.parent / "out")))
    return study.get_trials(deepcopy=False)


# --- bad input: one line naming the key, exit 2, nothing written --------------------------------

BAD = {
    "built-in-model": ("search.space.model.hidden", "model 'gcn' is built into hamgraph and "
                       "has no options to search; its settings are params fields",
                       {"models": "[gcn]",
                        "search": "  kind: grid\n  space: {model.hidden: [4]}\n"}),
    "built-in-beside-plugin": ("search.space.model.hidden", "is built into hamgraph",
                               {"models": f"[{MODEL}, gcn]",
                                "search": "  kind: grid\n  space: {model.hidden: [4]}\n"}),
    "unknown-option": ("search.space.model.width", "does not take these options",
                       {"search": "  kind: grid\n  space: {model.width: [4]}\n"}),
    "probe-choice": ("search.space.model.scale", "fails on a 3-node probe graph",
                     {"search": "  kind: grid\n  space: {model.scale: [1.0, big]}\n"}),
    "probe-range-end": ("search.space.model.hidden", "fails on a 3-node probe graph",
                        {"search": "  kind: tpe\n  space: {model.hidden: {range: [-2, 8]}}\n"}),
    "also-in-overrides": ("search.space.model.hidden", "hidden is also set in overrides",
                          {"extra": "overrides: {hidden: 16}\n",
                           "search": "  kind: grid\n  space: {model.hidden: [4]}\n"}),
    "one-model-lacks-it": ("search.space.model.scale", "model 'sweeplab.PlainNet' does not "
                           "take these options",
                           {"models": f"[{MODEL}, {{_target_: sweeplab.PlainNet}}]",
                            "search": "  kind: grid\n  space: {model.scale: [2.0]}\n"}),
    "also-searched-as-field": ("search.space.model.hidden", "hidden is also set in search.space",
                               {"search": "  kind: tpe\n  space: {model.hidden: [4, 8], "
                                          "hidden: [16, 32]}\n"}),
    "also-in-options": ("search.space.model.hidden", "also given in the options of model",
                        {"models": "[{_target_: sweeplab.RingNet, hidden: 8}]",
                         "search": "  kind: grid\n  space: {model.hidden: [4]}\n"}),
    "built-in-dataset": ("search.space.dataset.nodes", f"dataset '{TINY}' is built into",
                         {"search": "  kind: grid\n  space: {dataset.nodes: [40]}\n"}),
    "unknown-dataset-option": ("search.space.dataset.edges", "does not take these options",
                               {"datasets": f"[{RING}]",
                                "search": "  kind: grid\n  space: {dataset.edges: [40]}\n"}),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_plugin_option_exits_2_with_one_line(case: str, tmp_path: Path, lab: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    key, words, parts = BAD[case]
    path = _sweep(tmp_path, parts["search"], **{k: v for k, v in parts.items() if k != "search"},
                  name=case)
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and words in err, err
    assert not out.exists()


# --- running ------------------------------------------------------------------------------------


def test_grid_over_model_hidden_and_lr(tmp_path: Path, lab: Path) -> None:
    path = _sweep(tmp_path, "  kind: grid\n  space:\n    model.hidden: [4, 16]\n"
                            "    lr: [0.01, 0.05]\n")
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    trials = _study(path)
    assert sorted(t.user_attrs["cell"] for t in trials) == [
        "adam,model.hidden=16,lr=0.01", "adam,model.hidden=16,lr=0.05",
        "adam,model.hidden=4,lr=0.01", "adam,model.hidden=4,lr=0.05"]

    # the runs: one per cell, keys that differ exactly by the searched values
    store = ResultStore(out)
    specs = {k: store.load(k).spec for k in store.finished_keys()}
    assert len(specs) == 4
    searched = {(s.model_plugin.kwargs["hidden"], s.params.lr): k for k, s in specs.items()}
    assert set(searched) == {(4, 0.01), (4, 0.05), (16, 0.01), (16, 0.05)}
    assert {s.model for s in specs.values()} == {"RingNet"}
    one, other = specs[searched[(4, 0.01)]], specs[searched[(16, 0.01)]]
    assert one.params == other.params and one.optimizer == other.optimizer
    assert one.model_plugin.target == other.model_plugin.target == "sweeplab.RingNet"
    assert one.key() != other.key()
    frame = store.frame()
    assert {json.loads(t)["model"]["options"]["hidden"] for t in frame["plugin_options"]} == {
        4, 16}

    # best.csv and the report say which hidden won
    (row,) = pd.read_csv(out / "best.csv", keep_default_na=False).to_dict("records")
    won = next(t for t in trials if t.number == int(row["trial"]))
    hidden, lr = (dict(won.user_attrs["settings"])[n] for n in ("model.hidden", "lr"))
    # the searched values first, then the params that differ from the preset (gcn's row on a
    # built-in dataset, as for every user's model)
    assert row["settings"] == f"model.hidden={hidden}, lr={lr:g}, epochs=3"
    assert row["trials"] == 4
    assert json.loads(row["plugin_options"])["model"]["options"] == {"hidden": hidden}

    from hamgraph.report import write_report

    write_report([out], formats=["csv"], out=tmp_path / "report")
    main_csv = pd.read_csv(tmp_path / "report" / "main.csv", keep_default_na=False)
    (shown,) = main_csv.to_dict("records")  # one row: the four cells are one method, searched
    differ = {"epochs": 3, "model.hidden": hidden, **({} if lr == 0.01 else {"lr": lr})}
    assert shown["cells_searched"] == 4
    assert shown["settings"] == ", ".join(f"{k}={v:g}" for k, v in sorted(differ.items()))
    assert shown["val_mean"] == pytest.approx(row["val_mean"])

    # a rerun trains nothing new
    records = {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")}
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").glob("*.json")} == records
    assert len(_study(path)) == 4


def test_tpe_over_model_hidden_and_lr(tmp_path: Path, lab: Path) -> None:
    path = _sweep(tmp_path, "  kind: tpe\n  trials: 3\n  pruner: none\n  space:\n"
                            "    model.hidden: {range: [4, 16]}\n    lr: {log: [1.0e-3, 1.0e-1]}\n")
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    store = ResultStore(out)
    specs = [store.load(k).spec for k in store.finished_keys()]
    trials = [t for t in _study(path) if t.params]  # the reference baseline has none
    assert len(trials) == 2 and len(specs) == 3
    for trial in trials:
        hidden = trial.params["model.hidden"]
        assert isinstance(hidden, int) and 4 <= hidden <= 16
        (spec,) = [s for s in specs if s.params.lr == trial.params["lr"]]
        assert spec.model_plugin.kwargs == {"hidden": hidden}
    reference = [s for s in specs if s.model_plugin.kwargs == {}]
    assert len(reference) == 1  # the plug-in's own defaults
    best = pd.read_csv(out / "best.csv", keep_default_na=False)
    assert len(best) == 1 and best["trials"][0] == 3


def test_grid_over_dataset_option(tmp_path: Path, lab: Path) -> None:
    path = _sweep(tmp_path, "  kind: grid\n  space: {dataset.nodes: [40, 60]}\n",
                  datasets=f"[{RING}]", models="[gcn]")
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, device="cpu", pack="off").finished
    store = ResultStore(out)
    specs = [store.load(k).spec for k in store.finished_keys()]
    assert sorted(s.dataset_plugin.kwargs["nodes"] for s in specs) == [40, 60]
    assert {s.dataset for s in specs} == {"ring"} and len({s.key() for s in specs}) == 2
    (row,) = pd.read_csv(out / "best.csv", keep_default_na=False).to_dict("records")
    assert "dataset.nodes=" in row["settings"]


def test_sweeps_without_plugin_options_keep_their_study_names(tmp_path: Path, lab: Path) -> None:
    """Pinned before `model.<option>` existed: plug-in sweeps that do not search one keep their
    study names."""
    path = _sweep(tmp_path, "  kind: grid\n  space: {lr: [0.01, 0.05]}\n",
                  datasets=f"[{TINY}, {RING}]", name="pin")
    sweep = sw.load_sweep(path)
    assert [sw.study_name(sweep, d, m) for d, m in sweep.targets()] == [
        "pin.csbm-h0.8-n200.RingNet.efe7fee0-881afdb0", "pin.ring.RingNet.efe7fee0-c71664fc"]


def test_documented_plugin_option_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/plugins.md's sweep over `model.skip`, `hidden` and `lr` of the example TinyGNN."""
    from doc_blocks import REPO, marked_blocks

    (block,) = marked_blocks("docs/plugins.md", "test_documented_plugin_option_sweep")
    package = REPO / "examples" / "plugin_pkg"
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setenv("PYTHONPATH", str(package))
    monkeypatch.setenv("HAMGRAPH_DATA", str(tmp_path / "cache"))
    path = tmp_path / "plugin-options.yaml"
    path.write_text(block.text)
    out = tmp_path / "out"
    assert sw.run_sweep(path, out=out, trials=3, device="cpu", pack="off").finished
    store = ResultStore(out)
    specs = [store.load(k).spec for k in store.finished_keys()]
    assert len(specs) == 3 and {s.model for s in specs} == {"TinyGNN"}
    searched = [s for s in specs if "skip" in s.model_plugin.kwargs]
    assert len(searched) == 2  # the reference baseline keeps the plug-in's defaults
    for spec in searched:
        assert isinstance(spec.model_plugin.kwargs["skip"], bool)
        assert spec.params.hidden in (8, 16, 24, 32)


def test_model_option_applies_to_every_plugin_model(tmp_path: Path, lab: Path) -> None:
    """Two plug-in models that both take `hidden`: each study's cells set it on its own model,
    under the model's own readable name."""
    path = _sweep(tmp_path, "  kind: grid\n  space: {model.hidden: [4, 8]}\n",
                  models=f"[{MODEL}, {{_target_: sweeplab.PlainNet}}]")
    sweep = sw.load_sweep(path)
    assert sweep.targets() == [(TINY, "RingNet"), (TINY, "PlainNet")]
    for dataset, model in sweep.targets():
        keys = set()
        for cell in sweep.search.cells():
            (spec,) = sweep.specs(dataset, model, cell)
            assert spec.model == model
            assert spec.model_plugin.target == f"sweeplab.{model}"
            assert spec.model_plugin.kwargs == {"hidden": dict(cell.settings)["model.hidden"]}
            keys.add(spec.key())
        assert [dict(c.settings) for c in sweep.search.cells()] == [{"model.hidden": 4},
                                                                     {"model.hidden": 8}]
        assert len(keys) == 2
