"""Mini-batch graph classification of a user's model on a user's dataset (hamgraph.plugins).

Reads top to bottom: data (the dataset's graphs and split) -> model (`cls(in, out, **options)`,
called `model(x, edge_index, batch)` plus `edge_attr=` when the graphs have it) -> optimizer
(the protocol's AdamW or the run's choice, HAM on the model's MessagePassing parameters) ->
epochs (train pass, evaluation of val and test, diagnostics) -> result. The schedule is the
graph protocol's (`warmup_cosine`, stepped per epoch) and gradients are clipped at
`params.grad_clip`, as for the built-in graph runs. Loss: cross-entropy of the graph's class
index `y`. The metric is evaluated on the concatenated logits of each split (accuracy on the
device; a user's metric on the CPU softmax probabilities). A run is not checkpointed: an
interrupted run starts again (user graph datasets are small enough for that).

Randomness: `seed_everything(spec.seed)` before building the model; the training loader
shuffles with a generator seeded from (seed, epoch).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch_geometric.loader import DataLoader

from hamgraph.data.paths import DataPaths
from hamgraph.data.plugin import PluginGraphData, load_plugin_graphs
from hamgraph.data.registry import DatasetInfo
from hamgraph.errors import ConfigError
from hamgraph.models.plugin import build_plugin_graph_model
from hamgraph.optim import build_optimizer, ham_target_params
from hamgraph.plugins import accepted_names
from hamgraph.specs import EpochStats, GraphParams, RunResult, RunSpec
from hamgraph.train.common import (
    HISTORY_COLUMNS,
    BestTracker,
    TrainClock,
    WeightDiagnostics,
    divergence_reason,
    epoch_stats,
    first_nonfinite,
    seed_everything,
)
from hamgraph.train.metrics import node_metric, run_metric

log = logging.getLogger(__name__)


def _forward(model: nn.Module, batch: object, edge_attr: bool) -> Tensor:
    if edge_attr:
        return model(batch.x, batch.edge_index, batch.batch, edge_attr=batch.edge_attr)
    return model(batch.x, batch.edge_index, batch.batch)


def _evaluate(
    model: nn.Module, loader: DataLoader, device: torch.device, edge_attr: bool,
    metric: Callable[[Tensor, Tensor], Tensor],
) -> Tensor:
    model.eval()
    outs, ys = [], []
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            outs.append(_forward(model, batch, edge_attr).float())
            ys.append(batch.y.view(-1))
    return metric(torch.cat(outs), torch.cat(ys)).double()


def train_plugin_graph_run(
    spec: RunSpec,
    info: DatasetInfo,
    paths: DataPaths,
    device: torch.device,
    *,
    on_epochs: Callable[[list[EpochStats]], None] | None = None,
) -> RunResult:
    """Train and evaluate one graph-classification run of a user's model on a user's dataset."""
    params = spec.params
    if not isinstance(params, GraphParams) or spec.model_plugin is None:
        raise ConfigError(f"run {spec.key()}: a user's graph dataset needs GraphParams and a "
                          "user's graph model")
    started = time.perf_counter()

    # -- data
    data: PluginGraphData = load_plugin_graphs(info, paths)
    parts = [data.dataset[idx] for idx in (data.train, data.val, data.test)]
    evaluation = [DataLoader(part, batch_size=params.batch_size) for part in parts[1:]]
    choice = run_metric(spec, info.metric)
    metric = node_metric(choice)

    # -- model (seeded); edge_attr only when the graphs have it and forward takes it
    seed_everything(spec.seed)
    model = build_plugin_graph_model(spec.model_plugin, params, data.num_features,
                                     data.num_classes).to(device)
    edge_attr = data.has_edge_attr and "edge_attr" in accepted_names(model.forward)

    # -- optimizer, schedule, diagnostics
    from hamgraph.train.graph import epoch_seed, warmup_cosine

    optimizer = build_optimizer(model, spec.optimizer, lr=params.lr,
                                weight_decay=params.weight_decay)
    scheduler = LambdaLR(optimizer, warmup_cosine(params.warmup_epochs, params.epochs))
    diagnostics = WeightDiagnostics(ham_target_params(model))
    best = BestTracker(device, higher_is_better=choice.higher_is_better)
    rows: list[Tensor] = []
    lrs: list[float] = []
    clock = TrainClock(device)  # training time per epoch, evaluation excluded
    status, reason = "ok", ""

    for epoch in range(1, params.epochs + 1):
        generator = torch.Generator().manual_seed(epoch_seed(spec.seed, epoch))
        loader = DataLoader(parts[0], batch_size=params.batch_size, shuffle=True,
                            generator=generator)
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=device)
        graphs = 0
        lrs.append(float(optimizer.param_groups[0]["lr"]))
        clock.start()
        for batch in loader:
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(_forward(model, batch, edge_attr), batch.y.view(-1))
            loss.backward()
            if params.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            optimizer.step()
            total += loss.detach().double() * batch.num_graphs
            graphs += batch.num_graphs
        clock.stop()
        scheduler.step()
        val_m, test_m = (_evaluate(model, part, device, edge_attr, metric) for part in evaluation)
        flips, mean_abs = diagnostics.update()
        mean_loss = total / max(1, graphs)
        row = (mean_loss, torch.tensor(math.nan, device=device), val_m, test_m, flips, mean_abs)
        rows.append(torch.stack([v.to(device=device, dtype=torch.float64) for v in row]))
        best.update(epoch, val_m, test_m)
        bad = first_nonfinite(mean_loss.view(1))  # the epoch's host sync
        clock.settle()
        if bad is not None:
            rows.pop()
            lrs.pop()
            status, reason = "failed", divergence_reason(float(mean_loss), epoch)
            log.warning("%s: %s", spec.key(), reason)
            break
        if on_epochs is not None:
            on_epochs(epoch_stats(rows[-1].view(1, len(HISTORY_COLUMNS)), lrs[-1:], epoch,
                                  clock.totals[-1:]))

    history = torch.stack(rows).cpu() if rows else torch.zeros(0, len(HISTORY_COLUMNS))
    val, test, best_epoch = best.result() if status == "ok" else (math.nan, math.nan, 0)
    return RunResult(
        spec=spec, metric=choice.name, status=status, val=val, test=test,
        best_epoch=best_epoch, epochs=len(rows), seconds=time.perf_counter() - started,
        reason=reason, history=epoch_stats(history, lrs[: len(rows)], 1,
                                           clock.totals[: len(rows)]),
    )
