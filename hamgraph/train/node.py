"""Full-batch node classification: one RunSpec in, one RunResult out (REFERENCE §2).

Reads top to bottom: data -> model -> optimizer -> epochs (train step, eval, diagnostics) ->
result. Nothing in an epoch moves data to the host: the loss, the metrics, the sign flips and
mean |w| of the HAM-targeted weights go into a preallocated device buffer, and the best epoch
is tracked on the device. Every `SYNC_EVERY` epochs (and at the end) the new rows are copied
to the host in one transfer, which is also when a non-finite loss is noticed: the run then stops
and comes back as status "failed" with the epochs before the first bad one as its history.
"""

from __future__ import annotations

import logging
import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import add_self_loops
from tqdm.auto import tqdm

from hamgraph.data.node import load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import DatasetInfo
from hamgraph.errors import ConfigError
from hamgraph.models import build_node_model
from hamgraph.optim import build_optimizer, ham_target_params
from hamgraph.specs import NodeParams, RunResult, RunSpec
from hamgraph.train.common import (
    HISTORY_COLUMNS,
    BestTracker,
    WeightDiagnostics,
    divergence_reason,
    epoch_stats,
    first_nonfinite,
    seed_everything,
)
from hamgraph.train.metrics import resolve_metric

log = logging.getLogger(__name__)

SYNC_EVERY = 10  # epochs between host syncs (history transfer + divergence check)


def loss_fn(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy; ROC-AUC datasets are 2-class problems trained the same way."""
    return F.cross_entropy(logits, labels)


def train_node_run(
    spec: RunSpec, info: DatasetInfo, paths: DataPaths, device: torch.device
) -> RunResult:
    """Train and evaluate one full-batch node-classification run."""
    params = spec.params
    if not isinstance(params, NodeParams):
        raise ConfigError(
            f"run {spec.key()}: node dataset {info.name!r} needs NodeParams, "
            f"got {type(params).__name__}"
        )
    started = time.perf_counter()

    # -- data: the protocol's split for this run; self loops added once; on the device once
    data = load_node_dataset(info, paths)
    split = data.split_for_run(spec.run)
    metric = resolve_metric(info.metric)
    if info.metric == "rocauc" and data.num_classes != 2:
        raise ConfigError(
            f"dataset {info.name!r}: ROC-AUC needs 2 classes, the data has {data.num_classes}"
        )
    edge_index, _ = add_self_loops(data.edge_index, num_nodes=data.num_nodes)
    y = data.y.to(device)
    parts = [idx.to(device) for idx in (split.train, split.val, split.test)]
    train_idx = parts[0]

    # -- model: seeded initialization; graph and features in the layout the model consumes
    seed_everything(spec.seed)
    model = build_node_model(spec.model, params, data.num_features, data.num_classes).to(device)
    graph = model.prepare_graph(edge_index.to(device), data.num_nodes)
    x = model.prepare_features(data.x.to(device))

    # -- optimizer (HAM when spec.ham is set) and diagnostics of the HAM-targeted weights
    optimizer = build_optimizer(
        model, spec.optimizer, lr=params.lr, weight_decay=params.weight_decay
    )
    diagnostics = WeightDiagnostics(ham_target_params(model))
    best = BestTracker(device)
    history = torch.full(
        (params.epochs, len(HISTORY_COLUMNS)), math.nan, dtype=torch.float64, device=device
    )
    host_rows: list[Tensor] = []  # history rows already on the host
    synced = 0  # epochs whose rows are in host_rows
    lrs: list[float] = []
    status, reason = "ok", ""

    bar = tqdm(
        range(1, params.epochs + 1),
        desc=f"{spec.dataset} {spec.model} {spec.optimizer_label} run {spec.run}",
        disable=None,
        leave=False,
    )
    for epoch in bar:
        # -- train step (full batch)
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x, graph)[train_idx], y[train_idx])
        loss.backward()
        optimizer.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))

        # -- evaluate every split in eval mode; diagnostics; best epoch (all on the device)
        model.eval()
        with torch.no_grad():
            out = model(x, graph)
            scores = out.softmax(dim=-1)[:, 1] if info.metric == "rocauc" else out
            train_m, val_m, test_m = (metric(scores[idx], y[idx]) for idx in parts)
            flips, mean_abs = diagnostics.update()
            row = (loss.detach(), train_m, val_m, test_m, flips, mean_abs)
            history[epoch - 1] = torch.stack([v.to(torch.float64) for v in row])
            best.update(epoch, val_m, test_m)

        # -- every SYNC_EVERY epochs: copy new rows to the host, stop on a non-finite loss
        if epoch % SYNC_EVERY == 0 or epoch == params.epochs:
            rows = history[synced:epoch].cpu()
            bad = first_nonfinite(rows[:, 0])
            if bad is not None:
                host_rows.append(rows[:bad])
                status = "failed"
                reason = divergence_reason(float(rows[bad, 0]), synced + bad + 1)
                log.warning("%s: %s", spec.key(), reason)
                break
            host_rows.append(rows)
            synced = epoch
            bar.set_postfix(loss=f"{rows[-1, 0]:.4f}", val=f"{rows[-1, 2]:.4f}", refresh=False)
    bar.close()

    # -- result: test metric at the first epoch with the best validation metric
    rows = torch.cat(host_rows) if host_rows else history[:0].cpu()
    done = len(rows)
    if status == "ok":
        val, test, best_epoch = best.result()
    else:
        val, test, best_epoch = math.nan, math.nan, 0
    return RunResult(
        spec=spec,
        metric=info.metric,
        status=status,
        val=val,
        test=test,
        best_epoch=best_epoch,
        epochs=done,
        seconds=time.perf_counter() - started,
        reason=reason,
        history=epoch_stats(rows, lrs[:done]),
    )
