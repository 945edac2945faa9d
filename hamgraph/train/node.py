"""Full-batch node classification: one RunSpec in, one RunResult out (REFERENCE §2).

Reads top to bottom: data -> model -> optimizer -> epochs (train step, eval, diagnostics) ->
result. Nothing in an epoch moves data to the host: the loss, the metrics, the sign flips and
mean |w| of the HAM-targeted weights go into a preallocated device buffer, and the best epoch
is tracked on the device. Every `SYNC_EVERY` epochs (and at the end) the new rows are copied
to the host in one transfer, which is also when a non-finite loss is noticed: the run then stops
and comes back as status "failed" with the epochs before the first bad one as its history.

Randomness: `seed_everything(spec.seed)` right before building the model draws its
initialization; the dropout masks come from the run's own `torch.Generator` (on the run's
device, seeded with spec.seed), never from the global generator. The packed trainer
(hamgraph.train.packed) relies on both to reproduce every run of a pack exactly.

Checkpoints (hamgraph.train.checkpoint): at a host sync, when the checkpointer says a few
minutes have passed, and at the next epoch boundary after a stop request (SIGTERM / SIGUSR1,
hamgraph.preemption), the run's whole state is written; a later call resumes from it and ends
with exactly the numbers of an uninterrupted run. `train_seconds` of every history row is the
training time so far (hamgraph.train.common.TrainClock: CUDA events read at the host syncs,
no extra sync), carried across a resume.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.utils import add_self_loops
from tqdm.auto import tqdm

from hamgraph import preemption
from hamgraph.data.node import NodeDataset, load_node_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import DatasetInfo
from hamgraph.errors import ConfigError
from hamgraph.models import ClassicGNN, build_node_model
from hamgraph.optim import build_optimizer, ham_target_params
from hamgraph.preemption import Preempted
from hamgraph.specs import EpochStats, NodeParams, RunResult, RunSpec
from hamgraph.train.checkpoint import Checkpointer, NullCheckpointer, rng_state, set_rng_state
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

SYNC_EVERY = 10  # epochs between host syncs (history transfer + divergence check)
BEST_FIELDS = ("val", "test", "epoch")  # BestTracker's state, as checkpoints keep it


def loss_fn(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy; ROC-AUC datasets are 2-class problems trained the same way."""
    return F.cross_entropy(logits, labels)


def check_node_spec(spec: RunSpec, info: DatasetInfo) -> NodeParams:
    """The spec's NodeParams; ConfigError when the spec does not fit a node dataset."""
    params = spec.params
    if not isinstance(params, NodeParams):
        raise ConfigError(
            f"run {spec.key()}: node dataset {info.name!r} needs NodeParams, "
            f"got {type(params).__name__}"
        )
    return params


def load_node_data(info: DatasetInfo, paths: DataPaths) -> NodeDataset:
    """The dataset; ConfigError when its metric cannot be computed on it."""
    data = load_node_dataset(info, paths)
    if info.metric == "rocauc" and data.num_classes != 2:
        raise ConfigError(
            f"dataset {info.name!r}: ROC-AUC needs 2 classes, the data has {data.num_classes}"
        )
    return data


def build_seeded_model(
    spec: RunSpec, data: NodeDataset, device: torch.device, dtype: torch.dtype
) -> ClassicGNN:
    """The run's model, initialized from `seed_everything(spec.seed)` (then moved to
    device / dtype): the packed trainer builds each of its models with this same call."""
    seed_everything(spec.seed)
    model = build_node_model(
        spec.model, spec.params, data.num_features, data.num_classes, spec.model_plugin
    )
    return model.to(device=device, dtype=dtype)


def dropout_generator(spec: RunSpec, device: torch.device) -> torch.Generator:
    """The run's own source of dropout masks: a generator on its device seeded with spec.seed."""
    generator = torch.Generator(device=device)
    generator.manual_seed(spec.seed)
    return generator


def prepare_inputs(
    model: ClassicGNN | type[ClassicGNN],
    data: NodeDataset,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor]:
    """(graph, features) in the layout `model` consumes, on `device`, floats in `dtype`.
    Self loops are added here, once."""
    edge_index, _ = add_self_loops(data.edge_index, num_nodes=data.num_nodes)
    graph = model.prepare_graph(edge_index.to(device), data.num_nodes)
    if graph.is_floating_point() and graph.dtype != dtype:
        graph = graph.to(dtype)
    x = model.prepare_features(data.x.to(device=device, dtype=dtype))
    return graph, x


def train_node_run(
    spec: RunSpec,
    info: DatasetInfo,
    paths: DataPaths,
    device: torch.device,
    *,
    dtype: torch.dtype = torch.float32,
    on_epochs: Callable[[list[EpochStats]], None] | None = None,
    checkpointer: Checkpointer | NullCheckpointer | None = None,
) -> RunResult:
    """Train and evaluate one full-batch node-classification run.

    `dtype`: of the weights, features and graph values (float64 for exact comparisons).
    `on_epochs(rows)`: called at every host sync with the epochs finished since the last one
    (for progress trackers); a diverged run's last call holds the epochs before the bad one.
    `checkpointer`: the run's checkpoint (hamgraph.train.checkpoint). A checkpoint it holds is
    resumed; a new one is written at a host sync when `checkpointer.due()`, and at the next
    epoch boundary after a stop request (hamgraph.preemption), which then raises Preempted.
    The caller removes the checkpoint once the result is stored.
    """
    params = check_node_spec(spec, info)
    started = time.perf_counter()
    checkpointer = checkpointer or NullCheckpointer()

    # -- data: the protocol's split for this run; on the device once
    data = load_node_data(info, paths)
    split = data.split_for_run(spec.run)
    choice = run_metric(spec, info.metric)
    metric = node_metric(choice)
    y = data.y.to(device)
    parts = [idx.to(device) for idx in (split.train, split.val, split.test)]
    train_idx = parts[0]

    # -- model: seeded initialization; graph and features in the layout the model consumes;
    # dropout masks from the run's own generator
    model = build_seeded_model(spec, data, device, dtype)
    graph, x = prepare_inputs(model, data, device, dtype)
    generator = dropout_generator(spec, device)

    # -- optimizer (HAM when spec.ham is set), best-epoch tracker, history buffer
    optimizer = build_optimizer(
        model, spec.optimizer, lr=params.lr, weight_decay=params.weight_decay
    )
    best = BestTracker(device, higher_is_better=choice.higher_is_better)
    history = torch.full(
        (params.epochs, len(HISTORY_COLUMNS)), math.nan, dtype=torch.float64, device=device
    )
    host_rows: list[Tensor] = []  # history rows already on the host
    synced = 0  # epochs whose rows are in host_rows
    lrs: list[float] = []
    clock = TrainClock(device)  # training time per epoch, evaluation excluded
    seconds_before = 0.0  # wall time of the processes before a resume
    status, reason = "ok", ""

    # -- resume after the last checkpointed epoch, if there is one
    state = checkpointer.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        best.val, best.test, best.epoch = (state["best"][k].to(device) for k in BEST_FIELDS)
        history.copy_(state["history"])
        synced = int(state["synced"])
        host_rows = [state["host_rows"]]
        lrs = list(state["lrs"])
        clock = TrainClock(device, state["train_seconds"])
        seconds_before = float(state["seconds"])
        log.info("%s: resuming after epoch %d", spec.key(), state["epoch"])
    first_epoch = len(lrs) + 1
    # sign flips are counted against the weights as they are now (after the resumed epoch)
    diagnostics = WeightDiagnostics(ham_target_params(model))

    def save(epoch: int) -> None:
        checkpointer.save(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generator": generator.get_state(),
                "rng": rng_state(),
                "best": dict(zip(BEST_FIELDS, (best.val, best.test, best.epoch), strict=True)),
                "history": history.cpu(),
                "synced": synced,
                "host_rows": torch.cat(host_rows) if host_rows else history[:0].cpu(),
                "lrs": lrs,
                "train_seconds": list(clock.settle()),
                "seconds": seconds_before + time.perf_counter() - started,
            }
        )

    bar = tqdm(
        range(first_epoch, params.epochs + 1),
        desc=f"{spec.dataset} {spec.model} {spec.optimizer_label} run {spec.run}",
        disable=None,
        leave=False,
    )
    for epoch in bar:
        # -- train step (full batch)
        clock.start()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x, graph, generator)[train_idx], y[train_idx])
        loss.backward()
        optimizer.step()
        clock.stop()
        lrs.append(float(optimizer.param_groups[0]["lr"]))

        # -- evaluate every split in eval mode; diagnostics; best epoch (all on the device)
        model.eval()
        with torch.no_grad():
            out = model(x, graph)
            train_m, val_m, test_m = (metric(out[idx], y[idx]) for idx in parts)
            flips, mean_abs = diagnostics.update()
            row = (loss.detach(), train_m, val_m, test_m, flips, mean_abs)
            history[epoch - 1] = torch.stack([v.to(torch.float64) for v in row])
            best.update(epoch, val_m, test_m)

        # -- every SYNC_EVERY epochs: copy new rows to the host, stop on a non-finite loss
        at_sync = epoch % SYNC_EVERY == 0 or epoch == params.epochs
        if at_sync:
            rows = history[synced:epoch].cpu()
            spent = clock.settle()[synced:epoch]
            bad = first_nonfinite(rows[:, 0])
            if bad is not None:
                host_rows.append(rows[:bad])
                if on_epochs is not None and bad > 0:
                    on_epochs(
                        epoch_stats(rows[:bad], lrs[synced : synced + bad], synced + 1, spent[:bad])
                    )
                status = "failed"
                reason = divergence_reason(float(rows[bad, 0]), synced + bad + 1)
                log.warning("%s: %s", spec.key(), reason)
                break
            host_rows.append(rows)
            if on_epochs is not None:
                on_epochs(epoch_stats(rows, lrs[synced:epoch], synced + 1, spent))
            synced = epoch
            bar.set_postfix(loss=f"{rows[-1, 0]:.4f}", val=f"{rows[-1, 2]:.4f}", refresh=False)

        # -- checkpoint every few minutes (at a sync), or now when asked to stop
        if epoch < params.epochs:
            stop = preemption.stop_requested()
            if stop or (at_sync and checkpointer.due()):
                save(epoch)
            if stop:
                bar.close()
                log.warning("%s: stopped after epoch %d (checkpointed)", spec.key(), epoch)
                raise Preempted
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
        metric=choice.name,
        status=status,
        val=val,
        test=test,
        best_epoch=best_epoch,
        epochs=done,
        seconds=seconds_before + time.perf_counter() - started,
        reason=reason,
        history=epoch_stats(rows, lrs[:done], train_seconds=clock.settle()[:done]),
    )
