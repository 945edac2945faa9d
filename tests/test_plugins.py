"""A user's model, dataset and metric (hamgraph.plugins): by `_target_` from a module outside
the repository, and as an installed plug-in package with entry points (examples/plugin_pkg),
through `hamgraph run`, `hamgraph sweep` and `hamgraph report` as subprocesses."""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hamgraph.cli import main
from hamgraph.specs import NodeParams, OptimizerSpec, PluginRef, RunSpec, freeze_options

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
HAMGRAPH = [sys.executable, "-m", "hamgraph"]

USER_MODULE = '''
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import SAGEConv


class RingNet(nn.Module):
    def __init__(self, in_channels, out_channels, hidden=8, layers=2, scale=1.0):
        super().__init__()
        self.conv1 = SAGEConv(in_channels, hidden)
        self.conv2 = SAGEConv(hidden, out_channels)
        self.scale = scale

    def forward(self, x, edge_index):
        return self.scale * self.conv2(F.relu(self.conv1(x, edge_index)), edge_index)


class WrongShape(RingNet):
    def forward(self, x, edge_index):
        return super().forward(x, edge_index).sum(dim=0)


def ring(nodes=60, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(nodes) % classes
    src = torch.arange(nodes)
    edge_index = torch.stack([src, (src + classes) % nodes])
    x = torch.nn.functional.one_hot(y, classes).float() + torch.randn(nodes, classes, generator=g)
    return Data(x=x, y=y, edge_index=edge_index)


def ring_with_masks(nodes=60, classes=3, splits=2):
    data = ring(nodes, classes)
    masks = torch.zeros(3, splits, nodes, dtype=torch.bool)  # [S, N] per set
    for s in range(splits):
        order = torch.randperm(nodes, generator=torch.Generator().manual_seed(s))
        masks[0, s, order[:30]] = True
        masks[1, s, order[30:45]] = True
        masks[2, s, order[45:]] = True
    data.train_mask, data.val_mask, data.test_mask = masks[0], masks[1], masks[2]
    return data


def error_rate(scores, target):
    return float((scores.argmax(dim=-1) != target).double().mean())


error_rate.higher_is_better = False
NOT_CALLABLE = 3


def ring_in(root, nodes=40):
    import pathlib

    pathlib.Path(root).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(root) / "made-here").write_text("x")
    return ring(nodes)
'''


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    env.setdefault("HAMGRAPH_DATA", str(paths[0] / "cache"))
    return env


def _hamgraph(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*HAMGRAPH, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`userlab.py` in a directory outside the repository, importable in-process too."""
    where = tmp_path / "outside"
    where.mkdir()
    (where / "userlab.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(where))
    monkeypatch.setenv("HAMGRAPH_DATA", str(tmp_path / "cache"))
    return where


# --- identity ------------------------------------------------------------------------------


def _spec(**plugins) -> RunSpec:
    params = NodeParams(lr=0.01, hidden=8, layers=2, dropout=0.5, weight_decay=0.0, epochs=3)
    return RunSpec("ring", "RingNet", params, OptimizerSpec("adam"), run=0, seed=0, **plugins)


def test_plugin_identity_joins_the_key_only_when_set() -> None:
    ref = PluginRef("userlab.RingNet", freeze_options({"hidden": 8}), display="RingNet",
                    source_hash="aaaa")
    plain = _spec()
    with_plugin = _spec(model_plugin=ref)
    assert plain.key() != with_plugin.key()
    assert "model_plugin" not in plain.to_dict()
    other_options = _spec(model_plugin=PluginRef("userlab.RingNet", freeze_options({"hidden": 9})))
    assert other_options.key() != with_plugin.key()  # two option sets never merge
    # the source hash and the labels are provenance, not identity
    moved = PluginRef("userlab.RingNet", freeze_options({"hidden": 8}), display="Other",
                      source_hash="bbbb")
    assert _spec(model_plugin=moved).key() == with_plugin.key()
    nested = PluginRef("userlab.ring", freeze_options({"sizes": [1, 2], "opt": {"a": 1},
                                                       "pairs": [["a", 1], ["b", 2]]}),
                       freeze_options({"split": {"kind": "random", "train": 0.5, "val": 0.2}}))
    spec = _spec(dataset_plugin=nested, model_plugin=ref, metric="error_rate",
                 metric_plugin=PluginRef("userlab.error_rate",
                                         settings=freeze_options({"higher_is_better": False})))
    again = RunSpec.from_dict(spec.to_dict())
    assert again == spec and again.key() == spec.key()
    assert again.dataset_plugin.kwargs == {"sizes": [1, 2], "opt": {"a": 1},
                                           "pairs": [["a", 1], ["b", 2]]}
    from hamgraph.plugins import call_kwargs, to_yaml, with_options

    home = PluginRef("userlab.ring", freeze_options({"root": "~/data", "n": 3}))
    assert call_kwargs(home) == {"root": str(Path.home() / "data"), "n": 3}  # at call time
    assert home.identity()["options"]["root"] == "~/data"  # the key keeps the text

    wider = with_options(ref, hidden=16)
    assert wider.kwargs == {"hidden": 16} and wider.target == ref.target
    assert _spec(model_plugin=wider).key() != with_plugin.key()
    assert to_yaml(nested) == {"_target_": "userlab.ring", "sizes": [1, 2], "opt": {"a": 1},
                               "pairs": [["a", 1], ["b", 2]],
                               "split": {"kind": "random", "train": 0.5, "val": 0.2}}


# --- datasets: splits, root, PyG classes ---------------------------------------------------


def test_dataset_plugins_splits_root_and_pyg_classes(user_module: Path, tmp_path: Path) -> None:
    import torch

    from hamgraph.data.node import load_node_dataset
    from hamgraph.data.paths import data_paths_from_env
    from hamgraph.data.registry import resolve_dataset_choice

    paths = data_paths_from_env()
    # [S, N] masks: S splits, runs default to S, run i uses split i % S
    info = resolve_dataset_choice({"_target_": "userlab.ring_with_masks", "splits": 3})
    assert (info.runs, info.task, info.family, info.metric) == (3, "node", "other", "accuracy")
    data = load_node_dataset(info, paths)
    import userlab

    raw = userlab.ring_with_masks(splits=3)
    for i in range(4):
        split = data.split_for_run(i)
        assert torch.equal(split.train, raw.train_mask[i % 3].nonzero().view(-1))
        assert torch.equal(split.test, raw.test_mask[i % 3].nonzero().view(-1))
    # a stated split wins over shipped masks; per-class is seeded (the same twice)
    stated = {"_target_": "userlab.ring_with_masks",
              "split": {"kind": "per-class", "train": 5, "val": 10, "test": 20}}
    info = resolve_dataset_choice(stated)
    assert info.runs == 3 and "5 training nodes per class" in info.split_text
    split = load_node_dataset(info, paths).split_for_run(0)
    assert (len(split.train), len(split.val), len(split.test)) == (15, 10, 20)
    short = resolve_dataset_choice({"_target_": "userlab.ring_with_masks",
                                    "split": {"per-class": 5, "val": 10, "test": 20}})
    assert "5 training nodes per class" in short.split_text
    assert torch.equal(load_node_dataset(short, paths).split_for_run(0).train, split.train)
    # a `root` parameter gets a directory under the data cache, per target and options
    info = resolve_dataset_choice({"_target_": "userlab.ring_in",
                                   "split": {"kind": "random", "train": 0.5, "val": 0.2}})
    made = list((paths.cache / "plugins").glob("ring_in-*/made-here"))
    assert len(made) == 1
    assert load_node_dataset(info, paths).num_nodes == 40
    # any torch_geometric.datasets class: a Dataset of one graph (FakeDataset: no root) and
    # Planetoid (root given: a copy of the mirror's raw files; its 1-D public masks)
    fake = resolve_dataset_choice({
        "_target_": "torch_geometric.datasets.FakeDataset", "num_graphs": 1,
        "avg_num_nodes": 60, "num_channels": 8, "num_classes": 3,
        "split": {"kind": "random", "train": 0.5, "val": 0.25}})
    assert load_node_dataset(fake, paths).num_features == 8 and fake.display == "FakeDataset"
    mirror = os.environ.get("HAMGRAPH_MIRROR")
    if mirror and (Path(mirror) / "Cora" / "raw").is_dir():
        root = tmp_path / "planetoid"
        shutil.copytree(Path(mirror) / "Cora" / "raw", root / "Cora" / "raw")
        cora = resolve_dataset_choice({"_target_": "torch_geometric.datasets.Planetoid",
                                       "root": str(root), "name": "Cora"})
        split = load_node_dataset(cora, paths).split_for_run(0)
        assert cora.runs == 3 and (len(split.train), len(split.val)) == (140, 500)


# --- bad input: one line naming the file and key, exit 2, nothing written --------------------

BAD = {
    "unimportable": ("model", "{_target_: userlab_missing.Net}", "grid.model[1]",
                     "cannot import"),
    "not callable": ("model", "{_target_: userlab.NOT_CALLABLE}", "grid.model[1]",
                     "not a class or a function"),
    "bad option": ("model", "{_target_: userlab.RingNet, width: 3}", "grid.model[1]",
                   "does not take these options"),
    "wrong shape": ("model", "{_target_: userlab.WrongShape}", "grid.model[1]",
                    "3-node probe graph"),
    "no split": ("dataset", "{_target_: userlab.ring}", "grid.dataset[0]", "states no split"),
    "bad split": ("dataset", "{_target_: userlab.ring, split: {kind: half}}", "grid.dataset[0]",
                  "split must be"),
    # the values inside a stated split, checked when the grid loads (issue #18)
    "split fractions over 1": ("dataset", "{_target_: userlab.ring, split: {kind: random, "
                               "train: 0.6, val: 0.6}}", "grid.dataset[0]",
                               "split.train + split.val must be below 1"),
    "split train above 1": ("dataset", "{_target_: userlab.ring, split: {kind: random, "
                            "train: 1.5}}", "grid.dataset[0]", "split.train must be a fraction"),
    "split train negative": ("dataset", "{_target_: userlab.ring, split: {kind: random, "
                             "train: -0.1}}", "grid.dataset[0]", "got -0.1"),
    "split val not a number": ("dataset", "{_target_: userlab.ring, split: {kind: random, "
                               "val: some}}", "grid.dataset[0]", "split.val must be"),
    "per-class zero": ("dataset", "{_target_: userlab.ring, split: {kind: per-class, "
                       "train: 0}}", "grid.dataset[0]", "split.train must be a positive"),
    "per-class over the classes": ("dataset", "{_target_: userlab.ring, nodes: 50, split: "
                                   "{kind: per-class, train: 100}}", "grid.dataset[0]",
                                   "100 training nodes per class, but class 0 has only 17"),
    "per-class over the graph": ("dataset", "{_target_: userlab.ring, split: {per-class: 5}}",
                                 "grid.dataset[0]", "needs 500 + 1000 nodes"),
    "graph split fractions": ("graph dataset", "{_target_: torch_geometric.datasets.FakeDataset,"
                              " split: {kind: random, train: 0.95, val: 0.1}}", "grid.dataset[0]",
                              "split.train + split.val must be below 1"),
    "graph split empty part": ("graph dataset", "{_target_: torch_geometric.datasets."
                               "FakeDataset, split: {kind: random, train: 0.5, val: 0.01}}",
                               "grid.dataset[0]", "leaves no validation graphs of 40"),
    "built-in name": ("model", "{_target_: userlab.RingNet, display: GCN}", "grid.model[1]",
                      "a built-in model name"),
    "unknown metric": ("metric", "macro-f7", "metric", "unknown metric 'macro-f7'"),
    "bad metric option": ("metric", "{_target_: userlab.error_rate, k: 2}", "metric",
                          "does not take these options"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_plugins_fail_before_anything_is_written(
    case: str, user_module: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kind, value, loc, message = BAD[case]
    dataset = "{_target_: userlab.ring, split: {kind: random, train: 0.5, val: 0.25}}"
    models = "gcn, {_target_: userlab.RingNet}"
    metric = ""
    if kind == "model":
        models = f"gcn, {value}"
    elif kind == "dataset":
        dataset = value
    elif kind == "graph dataset":  # 40 graphs of ~10 nodes, with a user's graph model
        monkeypatch.syspath_prepend(str(EXAMPLES / "plugin_pkg"))
        dataset = value.replace("FakeDataset,", "FakeDataset, num_graphs: 40, avg_num_nodes: 10, "
                                "num_channels: 4, num_classes: 2,")
        models = "{_target_: hamgraph_examples.models.TinyGraphNet, hidden: 8}"
    else:
        metric = f"metric: {value}\n"
    config = tmp_path / "bad.yaml"
    config.write_text(f"{metric}epochs: 2\nruns: 1\ngrid:\n  dataset: [{dataset}]\n"
                      f"  model: [{models}]\n  optimizer: [adam]\n")
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"hamgraph: error: {config}: {loc}: "), err
    assert message in err, err
    assert not out.exists()


# --- _target_ from a module outside the repository ------------------------------------------

TARGET_GRID = """\
name: outside
runs: 1
epochs: 6
metric: {_target_: userlab.error_rate, display: error}
grid:
  dataset:
    - {_target_: userlab.ring_with_masks, display: Ring}
  model:
    - sage
    - {_target_: userlab.RingNet, scale: 2.0}
    - {_target_: userlab.RingNet, scale: 0.5, display: RingNet-half}
  optimizer: [adam, {ham: {alpha: 50, beta: 0.01}}]
"""


def test_target_grid_runs_reports_and_marks_stale_on_source_change(
    user_module: Path, tmp_path: Path
) -> None:
    config = tmp_path / "outside.yaml"
    config.write_text(TARGET_GRID)
    env = _env(user_module)
    out = tmp_path / "results"
    done = _hamgraph(["run", str(config), "--out", str(out), "--device", "cpu"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "train one at a time" in done.stderr
    rows = _rows(out / "runs.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    models = {r["model"] for r in rows}
    assert models == {"sage", "RingNet", "RingNet-half"}  # two option sets: two names, two cells
    user = [r for r in rows if r["model_target"]]
    assert {r["model_target"] for r in user} == {"userlab.RingNet"}
    assert {r["dataset_display"] for r in rows} == {"Ring"}
    assert {r["metric"] for r in rows} == {"error"}
    assert {r["higher_is_better"] for r in rows} == {"false"}
    assert all(r["plugin_sources"].startswith("dataset=") for r in rows)
    # the 2-D [S, N] masks ship 2 splits: runs default to the dataset's... here runs: 1
    # lower is better: the best epoch is the one with the LOWEST validation error
    for row in rows:
        history = _rows(out / row["history"])
        vals = [float(h["val"]) for h in history]
        assert int(row["best_epoch"]) == vals.index(min(vals)) + 1
        assert float(row["val"]) == min(vals)

    # the report reads runs.csv only: it runs where the plug-in cannot be imported
    elsewhere = _env(tmp_path / "nothing-here")
    report = _hamgraph(["report", str(out), "--format", "md"], elsewhere, tmp_path)
    assert report.returncode == 0, report.stderr
    text = "".join(p.read_text() for p in (out / "report").glob("*.md"))
    assert "Ring (error)" in text and "| RingNet-half" in text and "| RingNet+HAM" in text
    assert "user model RingNet = userlab.RingNet" in text
    assert "user dataset Ring = userlab.ring_with_masks" in text

    # a changed source marks the runs stale: kept (and counted) unless --rerun-stale
    (user_module / "userlab.py").write_text(USER_MODULE + "\n# edited\n")
    again = _hamgraph(["run", str(config), "--out", str(out), "--device", "cpu"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "6 finished runs came from another hamgraph version or another source" in again.stderr
    assert _rows(out / "runs.csv") == rows
    rerun = _hamgraph(["run", str(config), "--out", str(out), "--device", "cpu",
                       "--rerun-stale"], env, tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    new_rows = _rows(out / "runs.csv")
    assert {r["key"] for r in new_rows} == {r["key"] for r in rows}  # same keys
    assert {r["plugin_sources"] for r in new_rows}.isdisjoint({r["plugin_sources"] for r in rows})


# --- an installed plug-in package (entry points) -------------------------------------------


@pytest.fixture(scope="module")
def installed_pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/plugin_pkg installed offline into a temp dir (entry points via its dist-info)."""
    root = tmp_path_factory.mktemp("pkg")
    source = root / "src"
    shutil.copytree(EXAMPLES / "plugin_pkg", source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source), "-q"],
        check=True, capture_output=True, timeout=300,
    )
    assert list(target.glob("hamgraph_examples-*.dist-info"))
    return target


LIST_COMMANDS = ("hamgraph models", "hamgraph datasets")  # as docs/plugins.md shows them
ENTRY_GRID = """\
name: installed
runs: 2
epochs: 150
metric: macro-f1
overrides: {hidden: 16}
grid:
  dataset: [{_target_: cliques, masks: true}, cliques]
  model: [tinygnn]
  optimizer: [adam, {ham: {alpha: 100, beta: 0.01}}, {ham: {alpha: 200, beta: 0.1}}]
"""


def test_installed_plugins_list_run_resume_sweep_report(
    installed_pkg: Path, tmp_path: Path
) -> None:
    env = _env(installed_pkg)
    env["HAMGRAPH_DATA"] = str(tmp_path / "cache")
    models, datasets = LIST_COMMANDS
    listed = _hamgraph(models.split()[1:], env, tmp_path)
    assert listed.returncode == 0
    assert "tinygnn" in listed.stdout and "hamgraph-examples 0.1.0" in listed.stdout
    listed = _hamgraph(datasets.split()[1:], env, tmp_path)
    assert "cliques" in listed.stdout and "hamgraph_examples.data:noisy_cliques" in listed.stdout

    # entry points are named by name; a dataset by entry point needs a stated split or masks
    config = tmp_path / "installed.yaml"
    config.write_text(ENTRY_GRID)
    out = tmp_path / "results"
    bad = _hamgraph(["run", str(config), "--out", str(out), "--device", "cpu"], env, tmp_path)
    assert bad.returncode == 2 and "grid.dataset[1]" in bad.stderr and not out.exists()
    config.write_text(ENTRY_GRID.replace(", cliques]", "]"))

    # kill -9 mid-grid, then the same command trains only what is missing
    args = [*HAMGRAPH, "run", str(config), "--out", str(out), "--device", "cpu"]
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "records").is_dir() and len(list((out / "records").glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    killed_early = process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = len(list((out / "records").glob("*.json")))
    assert killed_early and 2 <= before < 6
    resumed = _hamgraph(["run", str(config), "--out", str(out), "--device", "cpu"], env,
                        tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {before} of 6 runs already finished" in resumed.stderr
    rows = _rows(out / "runs.csv")
    assert len(rows) == 6
    assert {r["model_target"] for r in rows} == {"hamgraph_examples.models:TinyGNN"}
    assert {r["metric_target"] for r in rows} == {"hamgraph_examples.metrics:macro_f1"}
    assert {r["model_display"] for r in rows} == {"TinyGNN"}
    assert all("tinygnn (hamgraph-examples 0.1.0)" in r["plugin_options"] for r in rows)

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("name: s\nruns: 1\nepochs: 5\nmetric: macro-f1\n"
                     "datasets: [{_target_: cliques, masks: true}]\nmodels: [tinygnn]\n"
                     "search: {kind: grid, alpha: [100], beta: [0.0, 0.1]}\n")
    sweep_out = tmp_path / "sweep-out"
    swept = _hamgraph(["sweep", str(sweep), "--out", str(sweep_out), "--device", "cpu"], env,
                      tmp_path)
    assert swept.returncode == 0, swept.stderr
    assert "tinygnn" in swept.stdout  # the name the file gives
    assert len(_rows(sweep_out / "runs.csv")) == 3

    report = _hamgraph(["report", str(out), str(sweep_out), "--format", "md"], env, tmp_path)
    assert report.returncode == 0, report.stderr
    text = "".join(p.read_text() for p in (out / "report").glob("*.md"))
    assert "| TinyGNN |" in text and "| TinyGNN+HAM |" in text
    assert "noisy_cliques (macro-f1)" in text
    assert "user model TinyGNN = hamgraph_examples.models:TinyGNN" in text


def test_a_name_two_sources_define_is_an_error_naming_both(
    installed_pkg: Path, tmp_path: Path
) -> None:
    """A second distribution that also defines `tinygnn`, and one that defines `gcn`."""
    site = tmp_path / "site"
    shutil.copytree(installed_pkg, site)
    for name, entry in (("other_a", "tinygnn"), ("other_b", "gcn")):
        dist = site / f"{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (dist / "entry_points.txt").write_text(
            f"[hamgraph.models]\n{entry} = {name}_mod:Net\n"
        )
    env = _env(site)
    env["HAMGRAPH_DATA"] = str(tmp_path / "cache")
    for model, both in (("tinygnn", ("hamgraph-examples 0.1.0", "other_a 1.0")),
                        ("gcn", ("built into hamgraph", "other_b 1.0"))):
        config = tmp_path / "two.yaml"
        config.write_text(f"runs: 1\nepochs: 2\ngrid:\n  dataset: [csbm-h0.8-n100]\n"
                          f"  model: [{model}]\n  optimizer: [adam]\n")
        done = _hamgraph(["run", str(config), "--out", str(tmp_path / "o")], env, tmp_path)
        assert done.returncode == 2, done.stderr
        assert "grid.model[0]" in done.stderr and "defined twice" in done.stderr
        assert all(text in done.stderr for text in both), done.stderr
    # an entry point whose module does not import: named with its distribution
    (site / "other_c-1.0.dist-info").mkdir()
    (site / "other_c-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: other_c\nVersion: 1.0\n")
    (site / "other_c-1.0.dist-info" / "entry_points.txt").write_text(
        "[hamgraph.models]\nbroken = other_c_missing:Net\n")
    config.write_text("runs: 1\nepochs: 2\ngrid:\n  dataset: [csbm-h0.8-n100]\n"
                      "  model: [broken]\n  optimizer: [adam]\n")
    done = _hamgraph(["run", str(config), "--out", str(tmp_path / "o")], env, tmp_path)
    assert done.returncode == 2
    assert "entry point 'broken' of other_c 1.0 cannot be imported" in done.stderr


# --- the examples directory ----------------------------------------------------------------


# the commands of docs/plugins.md, run from a copy of examples/ (results/ lands in tmp_path)
EXAMPLE_COMMANDS = (
    "PYTHONPATH=examples/plugin_pkg hamgraph run examples/grid.yaml",
    "PYTHONPATH=examples/plugin_pkg hamgraph sweep examples/sweep.yaml",
    "PYTHONPATH=examples/plugin_pkg hamgraph report results/plugins-demo",
)


def test_examples_grid_and_sweep_run(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "examples",
                    ignore=shutil.ignore_patterns("build", "*.egg-info"))
    for command in EXAMPLE_COMMANDS:
        assignment, _, rest = command.partition(" ")
        env = _env(tmp_path / assignment.split("=", 1)[1])
        env["HAMGRAPH_DATA"] = str(tmp_path / "cache")
        done = _hamgraph([*rest.split()[1:], "--device", "cpu"] if "report" not in rest
                         else rest.split()[1:], env, tmp_path)
        assert done.returncode == 0, (command, done.stderr)
    rows = _rows(tmp_path / "results" / "plugins-demo" / "runs.csv")
    assert {r["model"] for r in rows} == {"gcn", "TinyGNN"} and len(rows) == 4
    assert {r["metric"] for r in rows} == {"macro-F1"}
    assert len(_rows(tmp_path / "results" / "plugins-sweep" / "runs.csv")) == 3
    report = "".join(p.read_text() for p in
                     (tmp_path / "results" / "plugins-demo" / "report").glob("*.md"))
    assert "| TinyGNN+HAM |" in report and "noisy_cliques (macro-F1)" in report


def test_examples_are_the_documented_files() -> None:
    """docs/plugins.md shows the example files as they are (so its blocks are what the tests
    above run)."""
    docs = (REPO / "docs" / "plugins.md").read_text()
    package = EXAMPLES / "plugin_pkg"
    for path in (EXAMPLES / "grid.yaml", EXAMPLES / "sweep.yaml", package / "pyproject.toml",
                 *(package / "hamgraph_examples" / f"{m}.py" for m in ("models", "data",
                                                                        "metrics"))):
        assert path.read_text() in docs, path


# --- lower-is-better metrics: the best cell, the report's marks, the study direction ---------


def test_lower_is_better_metric_picks_lowest_cell_and_minimizes(
    user_module: Path, tmp_path: Path
) -> None:
    import optuna
    import pandas as pd

    from hamgraph.cells import select_best
    from hamgraph.report.rows import _mark_best
    from hamgraph.sweep.command import prepare_studies
    from hamgraph.sweep.schema import load_sweep, study_name

    cells = pd.DataFrame({"n": [1, 1], "failed": [0, 0], "val_mean": [10.0, 20.0],
                          "alpha": [1.0, 2.0], "beta": [0.0, 0.0], "label": ["a", "b"],
                          "higher_is_better": [False, False]})
    assert select_best(cells)["label"] == "a"
    assert select_best(cells.assign(higher_is_better=True))["label"] == "b"

    @dataclasses.dataclass(frozen=True)
    class Shown:  # the fields _mark_best reads and sets
        dataset: str
        model: str
        mean: float
        best: bool = False
        tie: bool = False

    marked = _mark_best([Shown("d", "m", 10.0), Shown("d", "m", 20.0)], {"d"})
    assert [c.best for c in marked] == [True, False]
    marked = _mark_best([Shown("d", "m", 10.0), Shown("d", "m", 20.0)])
    assert [c.best for c in marked] == [False, True]

    sweep_file = tmp_path / "low.yaml"
    sweep_file.write_text(
        "name: low\nruns: 1\nepochs: 2\nmetric: {_target_: userlab.error_rate}\n"
        "datasets: [{_target_: userlab.ring_with_masks}]\nmodels: [{_target_: userlab.RingNet}]\n"
        "search: {kind: grid, alpha: [10], beta: [0.0]}\n")
    sweep = load_sweep(sweep_file)
    (study,) = prepare_studies(sweep, optuna.storages.InMemoryStorage())
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.study_name.startswith("low.ring_with_masks.RingNet.")
    # the plug-ins' options join the study name: an edited option set is a new study
    sweep_file.write_text(sweep_file.read_text().replace("RingNet}", "RingNet, hidden: 4}"))
    assert study_name(load_sweep(sweep_file), "ring_with_masks", "RingNet") != study.study_name


# --- graph classification: a user's model on a user's dataset -------------------------------

GRAPH_GRID = """\
runs: 1
epochs: 4
overrides: {batch_size: 8}
grid:
  dataset:
    - {_target_: hamgraph_examples.data.cliques_and_rings, graphs: 24,
       split: {kind: random, train: 0.5, val: 0.25}}
  model: [{_target_: hamgraph_examples.models.TinyGraphNet, hidden: 8}]
  optimizer: [adamw, {ham: {alpha: 100, beta: 0.01}}]
"""


def test_graph_classification_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    from hamgraph.config import parse_config
    from hamgraph.errors import ConfigError
    from hamgraph.grid import expand

    monkeypatch.syspath_prepend(str(EXAMPLES / "plugin_pkg"))
    monkeypatch.setenv("HAMGRAPH_DATA", str(tmp_path / "cache"))
    specs = expand(parse_config(yaml.safe_load(GRAPH_GRID), "g.yaml"))
    assert [type(s.params).__name__ for s in specs] == ["GraphParams"] * 2
    assert specs[0].params.hidden == 64 and specs[0].params.batch_size == 8
    # a user's graph model needs a user's graph dataset, and the other way round
    for dataset, model, loc in (("ogbg-molhiv", "{_target_: hamgraph_examples.models."
                                 "TinyGraphNet}", "grid.dataset[0]"),
                                ("{_target_: hamgraph_examples.data.cliques_and_rings, split: "
                                 "{kind: random, train: 0.5, val: 0.25}}", "gcnplus",
                                 "grid.dataset[0]")):
        text = (f"runs: 1\ngrid:\n  dataset: [{dataset}]\n  model: [{model}]\n"
                "  optimizer: [adamw]\n")
        with pytest.raises(ConfigError, match=loc.replace("[", r"\[")):
            expand(parse_config(yaml.safe_load(text), "g.yaml"))
    # no get_idx_split and no stated split: refused; a node model on it: wrong probe shape
    text = GRAPH_GRID.replace(",\n       split: {kind: random, train: 0.5, val: 0.25}}", "}")
    with pytest.raises(ConfigError, match=r"grid.dataset\[0\]: .*get_idx_split"):
        expand(parse_config(yaml.safe_load(text), "g.yaml"))
    text = GRAPH_GRID.replace("TinyGraphNet, hidden: 8", "TinyGNN")
    with pytest.raises(ConfigError, match=r"grid.model\[0\]: .*3-node probe graph"):
        expand(parse_config(yaml.safe_load(text), "g.yaml"))

    # any torch_geometric Dataset of several graphs (FakeDataset: graph-level labels)
    from hamgraph.data.paths import data_paths_from_env
    from hamgraph.data.plugin import load_plugin_graphs
    from hamgraph.data.registry import resolve_dataset_choice

    fake = resolve_dataset_choice({
        "_target_": "torch_geometric.datasets.FakeDataset", "num_graphs": 20,
        "avg_num_nodes": 8, "num_channels": 4, "num_classes": 2,
        "split": {"kind": "random", "train": 0.5, "val": 0.25}})
    assert (fake.task, fake.family) == ("graph", "graph")
    graphs = load_plugin_graphs(fake, data_paths_from_env())
    assert (len(graphs.train), len(graphs.val), len(graphs.test)) == (10, 5, 5)
    assert (graphs.num_features, graphs.num_classes) == (4, 2)

    config = tmp_path / "graph.yaml"
    config.write_text(GRAPH_GRID)
    env = _env(EXAMPLES / "plugin_pkg")
    env["HAMGRAPH_DATA"] = str(tmp_path / "cache")
    out = tmp_path / "results"
    done = _hamgraph(["run", str(config), "--out", str(out), "--device", "cpu"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    rows = _rows(out / "runs.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}
    assert {r["model_display"] for r in rows} == {"TinyGraphNet"}
    assert all(r["epochs"] == "4" and 1 <= int(r["best_epoch"]) <= 4 for r in rows)
    history = _rows(out / rows[1]["history"])
    assert len(history) == 4 and int(history[-1]["sign_flips"]) >= 0
    seconds = [float(row["train_seconds"]) for row in history]  # as every trainer records
    assert seconds[0] > 0 and seconds == sorted(seconds)
    # labelled on the graph protocol's base optimizer (AdamW), as built-in graph runs
    assert "ham(100, 0.01)" in done.stdout and "on adamw" not in done.stdout
    report = _hamgraph(["report", str(out), "--format", "md"], env, tmp_path)
    assert report.returncode == 0, report.stderr
    text = (out / "report" / "main.md").read_text()
    assert "| TinyGraphNet |" in text and "| TinyGraphNet+HAM |" in text


def test_installed_plugin_sweep_resumes_after_kill(
    installed_pkg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from collections import Counter

    import optuna
    from optuna.trial import TrialState

    from hamgraph import sweep as sw

    env = _env(installed_pkg)
    env["HAMGRAPH_DATA"] = str(tmp_path / "cache")
    sweep_file = tmp_path / "k.yaml"
    sweep_file.write_text("name: k\nruns: 1\nepochs: 300\nmetric: macro-f1\n"
                          "datasets: [{_target_: cliques, masks: true}]\nmodels: [tinygnn]\n"
                          "search: {kind: grid, alpha: [100, 200], beta: [0.0]}\n")
    out = tmp_path / "out"
    args = [*HAMGRAPH, "sweep", str(sweep_file), "--out", str(out), "--device", "cpu",
            "--batch", "1"]
    process = subprocess.Popen(args, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (out / "records").is_dir() and list((out / "records").glob("*.json")):
            break
        time.sleep(0.05)
    killed_early = process.poll() is None
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert killed_early and len(list((out / "records").glob("*.json"))) < 3
    done = _hamgraph(args[3:], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(_rows(out / "runs.csv")) == 3

    monkeypatch.syspath_prepend(str(installed_pkg))  # the entry points, in this process too
    monkeypatch.setenv("HAMGRAPH_DATA", str(tmp_path / "cache"))
    sweep = sw.load_sweep(sweep_file)
    study = optuna.load_study(study_name=sw.study_name(sweep, "cliques", "tinygnn"),
                              storage=sw.open_storage(sw.storage_url(None, out)))
    complete = Counter(t.user_attrs["cell"] for t in study.get_trials(deepcopy=False)
                       if t.state == TrialState.COMPLETE)
    assert len(complete) == 3 and set(complete.values()) == {1}  # every cell once
