"""Throughput of GCN+ on ogbg-molhiv: graphs / second for training and evaluation,
with AdamW and with HAM (alpha 200, beta 0.1), on one device.

    HAMGRAPH_MIRROR=../shared/datasets python benchmarks/graph_epoch.py --device cpu --batches 50

Uses the molhiv protocol preset (256 x 4, RWSE 20 -> 16, batch 32) unless overridden. Data
loading (collation) is included, as in a real epoch; the first batches are a warm-up and not
timed. Data come from $HAMGRAPH_DATA / $HAMGRAPH_MIRROR like every hamgraph command.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from torch import nn
from torch_geometric.loader import DataLoader

from hamgraph.data.ogbg import load_graph_dataset
from hamgraph.data.paths import data_paths_from_env
from hamgraph.data.registry import resolve_dataset
from hamgraph.models.gcnplus import build_graph_model
from hamgraph.optim import build_optimizer
from hamgraph.presets.graph import graph_params
from hamgraph.specs import HamSettings, OptimizerSpec
from hamgraph.train import resolve_device
from hamgraph.train.graph import _loss, evaluate

WARMUP_BATCHES = 3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_rate(model, loader, data, optimizer, device, batches: int) -> float:
    model.train()
    graphs, started = 0, 0.0
    for i, batch in enumerate(loader):
        if i == WARMUP_BATCHES:
            _sync(device)
            started, graphs = time.perf_counter(), 0
        if i >= WARMUP_BATCHES + batches:
            break
        batch = batch.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(data.task, model(batch), batch)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        graphs += batch.num_graphs
    _sync(device)
    return graphs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batches", type=int, default=100, help="timed training batches")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--hidden", type=int, default=None, help="default: the preset's 256")
    parser.add_argument("--eval-graphs", type=int, default=2000, help="validation graphs timed")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    params = graph_params("ogbg-molhiv")
    if args.batch_size:
        params = replace(params, batch_size=args.batch_size)
    if args.hidden:
        params = replace(params, hidden=args.hidden)

    started = time.perf_counter()
    data = load_graph_dataset(
        resolve_dataset("ogbg-molhiv"), data_paths_from_env(), rwse_steps=params.rwse_steps
    )
    print(
        f"loaded ogbg-molhiv in {time.perf_counter() - started:.1f} s; device {device}, "
        f"{torch.get_num_threads()} threads, batch {params.batch_size}, hidden {params.hidden}"
    )
    pin = device.type == "cuda"
    val = data.val[: args.eval_graphs]
    for label, ham in (("adamw", None), ("ham", HamSettings(200.0, 0.1))):
        torch.manual_seed(0)
        model = build_graph_model(params, data.task).to(device)
        optimizer = build_optimizer(
            model, OptimizerSpec("adamw", ham=ham), lr=params.lr, weight_decay=params.weight_decay
        )
        loader = DataLoader(
            data.train,
            batch_size=params.batch_size,
            shuffle=True,
            pin_memory=pin,
            generator=torch.Generator().manual_seed(0),
        )
        train = _train_rate(model, loader, data, optimizer, device, args.batches)
        eval_loader = DataLoader(val, batch_size=params.batch_size, pin_memory=pin)
        t0 = time.perf_counter()
        evaluate(model, eval_loader, data, data.evaluator(), device)
        _sync(device)
        rate = len(val) / (time.perf_counter() - t0)
        print(f"{label:6s} train {train:8.1f} graphs/s   eval {rate:8.1f} graphs/s")


if __name__ == "__main__":
    main()
