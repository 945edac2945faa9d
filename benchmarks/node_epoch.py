"""Time one full-batch training epoch (forward, backward, step, evaluation) of the node trainer
against a straightforward PyG loop of the same model, with Adam and with HAM.

    .venv/bin/python benchmarks/node_epoch.py [--device auto] [--epochs 40] [--repeats 3]

Needs the dataset mirror ($HAMGRAPH_MIRROR, default ../shared/datasets). Both sides are timed
the same way: a run of `epochs` epochs minus a run of `epochs // 4` epochs, divided by the
difference, so data loading, model construction and warm-up cancel out; each length is timed
`repeats` times and the fastest kept. On the CPU the clock is the process's CPU time (robust to
other processes on a shared machine; compare runs with the same --threads).

The baseline is what a typical research script does: `GCNConv` with its default
normalization recomputed every forward (cached=False, add_self_loops=True) on the edge index,
dense features, `.item()` per metric every epoch (sklearn ROC-AUC on the host for minesweeper).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from torch_geometric.nn import GCNConv
from torch_geometric.utils import add_self_loops

from hamgraph.data.node import load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import resolve_dataset
from hamgraph.optim import build_optimizer
from hamgraph.presets import default_params
from hamgraph.specs import HamSettings, NodeParams, OptimizerSpec, RunSpec
from hamgraph.train import resolve_device
from hamgraph.train.node import train_node_run

CASES = [("cora", "gcn"), ("minesweeper", "gcn")]  # 512 x 3 and 64 x 12 (BN, residual)
HAM = HamSettings(alpha=200.0, beta=0.1)


class BaselineGCN(nn.Module):
    """The tunedGNN-style model with stock GCNConv (normalization recomputed every call)."""

    def __init__(self, in_dim: int, classes: int, p: NodeParams) -> None:
        super().__init__()
        self.p = p
        dims = list(itertools.pairwise([in_dim] + [p.hidden] * p.layers))
        self.convs = nn.ModuleList(GCNConv(a, b) for a, b in dims)
        self.lins = nn.ModuleList(nn.Linear(a, b) for a, b in dims)
        norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(p.norm)
        self.norms = nn.ModuleList(norm(p.hidden) if norm else nn.Identity() for _ in dims)
        self.head = nn.Linear(p.hidden, classes)

    def forward(self, x, edge_index):
        for conv, lin, norm in zip(self.convs, self.lins, self.norms, strict=True):
            out = conv(x, edge_index) + (lin(x) if self.p.residual else 0)
            x = F.dropout(F.relu(norm(out)), self.p.dropout, self.training)
        return self.head(x)


def baseline_run(dataset: str, params: NodeParams, ham, paths: DataPaths, device) -> None:
    info = resolve_dataset(dataset)
    data = load_node_dataset(info, paths)
    split = data.split_for_run(0)
    x, y = data.x.to(device), data.y.to(device)
    edge_index = add_self_loops(data.edge_index, num_nodes=data.num_nodes)[0].to(device)
    torch.manual_seed(0)
    model = BaselineGCN(data.num_features, data.num_classes, params).to(device)
    lr, wd = params.lr, params.weight_decay
    if ham is None:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    else:
        optimizer = build_optimizer(model, OptimizerSpec("adam", ham=ham), lr=lr, weight_decay=wd)
    parts = [split.train.to(device), split.val.to(device), split.test.to(device)]
    best_val, best_test = -1.0, 0.0
    for _ in range(params.epochs):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x, edge_index)[parts[0]], y[parts[0]])
        loss.backward()
        optimizer.step()
        model.eval()
        with torch.no_grad():
            out = model(x, edge_index)
        if info.metric == "rocauc":
            score = out.softmax(-1)[:, 1].cpu().numpy()
            yy = y.cpu().numpy()
            res = [roc_auc_score(yy[i.cpu().numpy()], score[i.cpu().numpy()]) for i in parts]
        else:
            pred = out.argmax(-1)
            res = [(pred[i] == y[i]).float().mean().item() for i in parts]
        if res[1] > best_val:
            best_val, best_test = res[1], res[2]  # noqa: F841
        _ = loss.item()


def ours_run(dataset: str, params: NodeParams, ham, paths: DataPaths, device) -> None:
    spec = RunSpec(dataset, "gcn", params, OptimizerSpec("adam", ham=ham), run=0, seed=0)
    train_node_run(spec, resolve_dataset(dataset), paths, device)


def ms_per_epoch(fn, dataset, params, ham, paths, device, epochs, repeats) -> float:
    short = dataclasses.replace(params, epochs=max(1, epochs // 4))
    long = dataclasses.replace(params, epochs=epochs)
    fn(dataset, short, ham, paths, device)  # warm-up (data cache, allocator)
    # CPU: process time, so other processes on a shared machine do not count; CUDA: wall time
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    best = {short.epochs: float("inf"), long.epochs: float("inf")}
    for _ in range(repeats):
        for p in (short, long):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            fn(dataset, p, ham, paths, device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[p.epochs] = min(best[p.epochs], clock() - t0)
    # min over repeats of each length (robust to other load), then the per-epoch difference
    return 1000 * (best[long.epochs] - best[short.epochs]) / (long.epochs - short.epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    mirror = os.environ.get("HAMGRAPH_MIRROR") or str(Path(__file__).parents[2] / "shared/datasets")
    cache = Path(os.environ.get("HAMGRAPH_BENCH_CACHE", "/tmp/hamgraph-bench-cache"))
    paths = DataPaths(cache=cache, mirror=Path(mirror))
    clock = "CPU time" if device.type == "cpu" else "wall time"
    threads = torch.get_num_threads()
    print(f"device {device}, torch threads {threads}, {args.epochs} epochs, {clock}")
    header = f"{'case':<24}{'optimizer':<10}{'PyG loop ms':>12}{'ours ms':>10}{'speedup':>9}"
    print(header)
    print("-" * len(header))
    for dataset, model in CASES:
        params = default_params(resolve_dataset(dataset), model)
        case = f"{dataset}/{model.upper()} {params.hidden}x{params.layers}"
        for label, ham in (("adam", None), ("ham", HAM)):
            timing = (params, ham, paths, device, args.epochs, args.repeats)
            base = ms_per_epoch(baseline_run, dataset, *timing)
            ours = ms_per_epoch(ours_run, dataset, *timing)
            speedup = base / ours
            print(f"{case:<24}{label:<10}{base:>12.1f}{ours:>10.1f}{speedup:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
