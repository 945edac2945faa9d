"""Grid configs: what is accepted, how it expands, and one-line errors (exit 2, nothing written)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from hamgraph.cli import main
from hamgraph.config import load_config
from hamgraph.data.registry import resolve_dataset
from hamgraph.errors import ConfigError, UserInputError
from hamgraph.grid import _resolved_yaml, apply_overrides, expand, specs_for
from hamgraph.presets import default_params
from hamgraph.specs import HamSettings

REPO = Path(__file__).resolve().parents[1]

ISSUE_YAML = """\
name: cora-demo
runs: 2          # optional override of the protocol's run count
epochs: 50       # optional override
grid:
  dataset: [cora]
  model: [gcn, sage]
  optimizer:
    - adam
    - {ham: {alpha: 200, beta: 0.1}}
    - {ham: {alpha: -10, beta: 0.01}}
"""

GOOD_GRID = "grid: {dataset: [cora], model: [gcn], optimizer: [adam]}\n"


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- accepted configs and their expansion -----------------------------------------------------


def test_issue_yaml_is_accepted_and_expands_in_order(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ISSUE_YAML))
    assert config.run_name == "cora-demo"
    specs = expand(config)
    assert len(specs) == 1 * 2 * 3 * 2
    labels = [(s.dataset, s.model, s.optimizer.kind, s.run, s.seed) for s in specs]
    assert labels == [
        (d, m, o, r, r)
        for d in ["cora"]
        for m in ["gcn", "sage"]
        for o in ["adam", "ham", "nham"]
        for r in [0, 1]
    ]
    assert all(s.params.epochs == 50 for s in specs)
    assert specs[0].ham is None
    assert specs[2].ham == HamSettings(alpha=200.0, beta=0.1)
    assert specs[4].ham == HamSettings(alpha=-10.0, beta=0.01)
    preset = default_params(resolve_dataset("cora"), "sage")
    assert specs[6].params == dataclasses.replace(preset, epochs=50)
    assert len({s.key() for s in specs}) == len(specs)


def test_protocol_runs_seed_offset_overrides_and_ham_options(tmp_path: Path) -> None:
    text = """\
seed: 100
overrides: {hidden: 64, lr: 1e-3, dropout: 0, residual: yes}
grid:
  dataset: [Cora, csbm-h0.2-n300]
  model: [GAT]
  optimizer:
    - {ham: {alpha: 10, beta: 0, clamp: 3, mask_beta: false, sign_source: previous}}
"""
    config = load_config(write(tmp_path, text, "opts.yaml"))
    assert config.run_name == "opts"  # default name: the file name
    specs = expand(config)
    cora = [s for s in specs if s.dataset == "cora"]
    csbm = [s for s in specs if s.dataset == "csbm-h0.2-n300"]
    assert len(cora) == resolve_dataset("cora").runs == 5  # the protocol's run count
    assert len(csbm) == resolve_dataset("csbm-h0.2").runs
    assert [s.seed for s in cora] == [100, 101, 102, 103, 104]
    assert [s.run for s in cora] == [0, 1, 2, 3, 4]
    assert all(s.model == "gat" for s in specs)
    params = cora[0].params
    assert (params.hidden, params.lr, params.dropout, params.residual) == (64, 1e-3, 0.0, True)
    assert isinstance(params.dropout, float)
    preset = default_params(resolve_dataset("cora"), "gat")
    assert params.layers == preset.layers and params.epochs == preset.epochs
    assert cora[0].ham == HamSettings(10.0, 0.0, clamp=3.0, mask_beta=False,
                                      sign_source="previous")


def test_paper_best_is_resolved_per_dataset_and_model(tmp_path: Path) -> None:
    text = """\
runs: 1
grid:
  dataset: [cora, citeseer]
  model: [gcn, sage]
  optimizer: [{ham: paper-best}, {nham: paper-best}, {ham: {preset: paper-best, clamp: 2}}]
"""
    specs = expand(load_config(write(tmp_path, text)))
    got = {(s.dataset, s.model, s.ham.alpha, s.ham.beta, s.ham.clamp) for s in specs}
    assert got == {  # REFERENCE §1 tables
        ("cora", "gcn", 200, 0.1, 5), ("cora", "gcn", -10, 0.01, 5), ("cora", "gcn", 200, 0.1, 2),
        ("cora", "sage", 200, 0.1, 5), ("cora", "sage", -200, 0.01, 5),
        ("cora", "sage", 200, 0.1, 2),
        ("citeseer", "gcn", 1, 0.01, 5), ("citeseer", "gcn", -1, 0.01, 5),
        ("citeseer", "gcn", 1, 0.01, 2),
        ("citeseer", "sage", 200, 0.01, 5), ("citeseer", "sage", -100, 0, 5),
        ("citeseer", "sage", 200, 0.01, 2),
    }
    assert [s.optimizer.kind for s in specs[:3]] == ["ham", "nham", "ham"]


def test_entries_resolving_to_the_same_run_are_trained_once(tmp_path: Path) -> None:
    text = """\
runs: 1
grid:
  dataset: [cora]
  model: [gcn]
  optimizer: [{ham: paper-best}, {ham: {alpha: 200, beta: 0.1}}]
"""
    assert len(expand(load_config(write(tmp_path, text)))) == 1


def test_resolved_copy_reloads_to_the_same_specs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ISSUE_YAML.replace("[cora]", "[CORA]")))
    specs = expand(config)
    copy = write(tmp_path, _resolved_yaml(config, specs), "copy.yaml")
    assert "# " in copy.read_text().splitlines()[0]
    assert [s.key() for s in expand(load_config(copy))] == [s.key() for s in specs]


def test_specs_for_and_apply_overrides() -> None:
    specs = specs_for("csbm-h0.8", "gcn", None, overrides={"epochs": 7}, runs=3, seed=5)
    assert [(s.run, s.seed, s.params.epochs) for s in specs] == [(0, 5, 7), (1, 6, 7), (2, 7, 7)]
    preset = default_params(resolve_dataset("cora"), "gcn")
    assert apply_overrides(preset, {}) is preset
    with pytest.raises(UserInputError, match=r"unknown hyperparameter 'hiden'.*valid: lr, hidden"):
        apply_overrides(preset, {"hiden": 3})
    with pytest.raises(UserInputError, match="norm: input should be 'none', 'layer' or 'batch'"):
        apply_overrides(preset, {"norm": "group"})
    with pytest.raises(UserInputError, match=r"dropout: must be in \[0, 1\), got 1.5"):
        apply_overrides(preset, {"dropout": 1.5})


@pytest.mark.parametrize(
    "name", sorted(p.stem for p in (REPO / "configs").glob("*.yaml"))
)
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(REPO / "configs" / f"{name}.yaml")
    specs = expand(config)
    assert config.run_name == name and specs
    if name == "paper-best":
        assert len({s.dataset for s in specs}) == 13 and len({s.model for s in specs}) == 3
        assert {s.optimizer.kind for s in specs} == {"adam", "ham", "nham"}
    if name in ("quickstart", "verdict-csbm"):  # CPU grids that need no downloaded data
        assert all(s.dataset.startswith("csbm") for s in specs)


# --- bad input: exit 2, one line naming the file and the key, nothing written -----------------

BAD = {
    "unreadable-yaml": (
        "name: x\ngrid: {dataset: [cora, model: [gcn]\n",
        "invalid YAML at line",
    ),
    "duplicate-key": ("name: x\nname: y\n" + GOOD_GRID, "duplicate key 'name'"),
    "unknown-top-level-key": (
        "nmae: x\n" + GOOD_GRID,
        "(top level): unknown key 'nmae'; valid: name, runs, epochs, seed, overrides, track, "
        "metric, grid",
    ),
    "unknown-grid-key": (
        "grid: {dataset: [cora], models: [gcn], optimizer: [adam]}\n",
        "grid: unknown key 'models'",
    ),
    "unknown-dataset": (
        "grid: {dataset: [cora, coraa], model: [gcn], optimizer: [adam]}\n",
        "grid.dataset[1]: unknown dataset 'coraa'; valid names: cora, citeseer, pubmed",
    ),
    "unknown-model": (
        "grid: {dataset: [cora], model: [gcn, gcm], optimizer: [adam]}\n",
        "grid.model[1]: unknown model 'gcm'",
    ),
    "node-model-on-graph-data": (
        "grid: {dataset: [ogbg-molhiv], model: [gcn], optimizer: [adam]}\n",
        "grid.model[0]: model for node tasks 'gcn' cannot be used on a graph dataset",
    ),
    "unknown-optimizer": (
        "grid: {dataset: [cora], model: [gcn], optimizer: [adam, sgdd]}\n",
        "grid.optimizer[1].base: unknown base optimizer 'sgdd'; use one of ['adam', 'adamw', "
        "'sgd'] or a dotted path like torch.optim.RAdam",
    ),
    "base-not-an-optimizer": (
        "grid: {dataset: [cora], model: [gcn], optimizer: [{base: torch.nn.Linear}]}\n",
        "grid.optimizer[0].base: base optimizer 'torch.nn.Linear' is not a "
        "torch.optim.Optimizer subclass",
    ),
    "base-does-not-import": (
        "grid: {dataset: [cora], model: [gcn], optimizer: [{ham: {alpha: 1, beta: 0, "
        "base: torch.optim.Nope}}]}\n",
        "grid.optimizer[0].ham.base: base optimizer 'torch.optim.Nope' does not import",
    ),
    "bad-base-option": (
        "grid: {dataset: [cora], model: [gcn], optimizer: [{sgd: {momentun: 0.9}}]}\n",
        "grid.optimizer[0].base: unknown option 'momentun' of SGD",
    ),
    "ham-on-a-base-with-its-own-alpha": (
        "grid: {dataset: [cora], model: [gcn], optimizer: [{ham: {alpha: 1, beta: 0, "
        "base: torch.optim.RMSprop}}]}\n",
        "grid.optimizer[0].ham.base: HAM cannot run on RMSprop: its own 'alpha' would clash "
        "with HAM's",
    ),
    "wrong-type": ("runs: two\n" + GOOD_GRID, "runs: input should be a valid integer, got 'two'"),
    "wrong-type-nested": (
        "grid: {dataset: [cora], model: [gcn], optimizer: [{ham: {alpha: big, beta: 0}}]}\n",
        "grid.optimizer[0].ham.alpha: input should be a valid number, got 'big'",
    ),
    "nham-positive-alpha": (
        "grid: {dataset: [cora], model: [gcn], optimizer: [{nham: {alpha: 10, beta: 0}}]}\n",
        "grid.optimizer[0]: nham needs alpha < 0, got 10.0",
    ),
    "empty-grid": ("grid: {}\n", "grid: missing required key 'dataset'"),
    "empty-axis": (
        "grid: {dataset: [cora], model: [], optimizer: [adam]}\n",
        "grid.model: must not be empty",
    ),
    "empty-file": ("", "the file is empty"),
    "unknown-override": (
        "overrides: {hiden: 64}\n" + GOOD_GRID,
        "overrides.hiden: unknown hyperparameter 'hiden' for NodeParams; valid: lr, hidden",
    ),
    "bad-override-value": (
        "overrides: {hidden: -1}\n" + GOOD_GRID,
        "overrides.hidden: must be > 0, got -1",
    ),
    "no-paper-best": (
        "grid: {dataset: [csbm-h0.2], model: [gcn], optimizer: [{ham: paper-best}]}\n",
        "grid.optimizer[0]: no paper-best ham setting for dataset 'csbm-h0.2'",
    ),
}


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_config_exits_2_with_one_line_and_writes_nothing(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD[case]
    monkeypatch.chdir(tmp_path)
    Path("configs").mkdir()
    path = write(tmp_path / "configs", text)
    code, err = _run_cli(["run", "configs/x.yaml"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hamgraph: error: configs/x.yaml: "), err
    assert expected in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"]  # no results/ dir
    assert path.read_text() == text
    with pytest.raises(ConfigError):
        expand(load_config(path))


def test_missing_file_and_bad_device_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, err = _run_cli(["run", "nope.yaml", "--out", "out"], capsys)
    assert code == 2 and err.strip() == "hamgraph: error: nope.yaml: no such file"
    write(tmp_path, "runs: 1\n" + GOOD_GRID)
    code, err = _run_cli(["run", "x.yaml", "--out", "out", "--device", "tpu:7"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--device 'tpu:7'" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "results").exists()


def test_bad_tracker_writes_nothing_and_moves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A misspelt --track is refused before the result dir is created or, with --fresh, moved."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "runs: 1\n" + GOOD_GRID)
    code, err = _run_cli(["run", "x.yaml", "--out", "out", "--track", "tensorbord"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'tensorbord'" in err
    assert not (tmp_path / "out").exists()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "runs.csv").write_text("kept\n")
    code, err = _run_cli(
        ["run", "x.yaml", "--out", "old", "--fresh", "--track", "tensorbord"], capsys
    )
    assert code == 2 and (tmp_path / "old" / "runs.csv").read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old", "x.yaml"]


def test_yaml_floats_in_exponent_notation(tmp_path: Path) -> None:
    text = "overrides: {weight_decay: 5e-4, lr: 1E-2}\n" + GOOD_GRID
    config = load_config(write(tmp_path, text))
    assert config.overrides == {"weight_decay": 5e-4, "lr": 1e-2}
    assert yaml.safe_load("a: 1e-3")["a"] == "1e-3"  # why the loader needs its own resolver
