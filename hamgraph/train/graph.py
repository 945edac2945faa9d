"""Mini-batch graph classification with GCN+ (REFERENCE §3): one RunSpec in, one RunResult out.

AdamW (or HAM on AdamW), cosine schedule with linear warmup stepped per epoch, gradient
clipping, evaluation with the OGB Evaluator every epoch, test metric at the first epoch with
the best validation metric.

Checkpoints: with a `checkpoint_dir`, the state after every epoch (model, optimizer incl. HAM,
scheduler, RNG states, history, best-val tracker) is written atomically to
`<checkpoint_dir>/checkpoint.pt`; a new call for the same spec resumes after the last finished
epoch and ends with exactly the numbers an uninterrupted run gives (on the CPU). The training
order of epoch e is drawn from a generator seeded by (seed, e), so it does not depend on where
a run was resumed. The checkpoint is deleted when the run returns its RunResult (ok or failed):
from then on the result store's record is the source of truth. Known limit: two processes
training the same spec into the same checkpoint_dir overwrite each other's checkpoints.
A stop request (SIGTERM / SIGUSR1, hamgraph.preemption) raises Preempted after the next
epoch's checkpoint. `train_seconds` of each history row: training time so far (the epoch's
training pass, evaluation excluded), carried across a resume.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch_geometric.loader import DataLoader
from tqdm.auto import tqdm

from hamgraph import preemption
from hamgraph.data.ogbg import Code2Vocab, GraphDataset, load_graph_dataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import DatasetInfo
from hamgraph.errors import UserInputError
from hamgraph.models.gcnplus import build_graph_model
from hamgraph.optim import build_optimizer, ham_target_params
from hamgraph.preemption import Preempted
from hamgraph.specs import EpochStats, GraphParams, GraphTask, RunResult, RunSpec, TargetName
from hamgraph.train.checkpoint import (
    CHECKPOINT_FILE,
    Checkpointer,
    NullCheckpointer,
    rng_state,
    set_rng_state,
)
from hamgraph.train.common import (
    BestTracker,
    TrainClock,
    WeightDiagnostics,
    divergence_reason,
    seed_everything,
)

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_FILE",
    "TARGETS",
    "Checkpointer",
    "NullCheckpointer",
    "TargetRules",
    "evaluate",
    "train_graph_run",
    "warmup_cosine",
]

# --------------------------------------------------------------------------------------------
# Schedule, losses, evaluation


def warmup_cosine(warmup_epochs: int, epochs: int):
    """LR factor of 0-based epoch e: linear warmup, then cosine decay to 0 (GraphGPS / GNN+).

    As in GraphGPS' `cosine_with_warmup`: e / warmup (at least 1e-6) during warmup, then
    0.5 * (1 + cos(pi * (e - warmup) / (epochs - warmup))).
    """

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return max(1e-6, epoch / max(1, warmup_epochs))
        progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

    return factor


def _binary_loss(out: Tensor, batch: Any) -> Tensor:
    """Multi-task binary cross-entropy; NaN labels (molpcba) are unlabeled and left out."""
    y = batch.y.view(out.shape).to(out.dtype)
    labeled = ~torch.isnan(y)
    losses = F.binary_cross_entropy_with_logits(out, torch.nan_to_num(y), reduction="none")
    return (losses * labeled).sum() / labeled.sum().clamp(min=1)


def _multiclass_loss(out: Tensor, batch: Any) -> Tensor:
    return F.cross_entropy(out, batch.y.view(-1))


def _sequence_loss(out: Tensor, batch: Any) -> Tensor:
    """Mean cross-entropy over the predicted tokens ([B, seq_len, vocab] vs y_arr [B, seq_len])."""
    return F.cross_entropy(out.reshape(-1, out.size(-1)), batch.y_arr.view(-1))


def _binary_inputs(preds: list[Tensor], trues: list[Any], vocab: Code2Vocab | None) -> dict:
    return {"y_true": torch.cat(trues).cpu(), "y_pred": torch.cat(preds).cpu()}


def _sequence_inputs(preds: list[Tensor], trues: list[Any], vocab: Code2Vocab | None) -> dict:
    if vocab is None:
        raise UserInputError("a sequence target needs the dataset's vocabulary to decode")
    pred = torch.cat(preds).cpu()  # one transfer per split
    refs = [seq for batch_refs in trues for seq in batch_refs]
    return {"seq_ref": refs, "seq_pred": [vocab.decode(row) for row in pred]}


@dataclass(frozen=True)
class TargetRules:
    """How one `GraphTask.target` is trained and handed to the OGB Evaluator."""

    loss: Callable[[Tensor, Any], Tensor]  # (logits, batch) -> mean loss, no host sync
    predict: Callable[[Tensor, Any], tuple[Tensor, Any]]  # (logits, batch) -> (pred, truth)
    inputs: Callable[[list[Tensor], list[Any], Code2Vocab | None], dict]  # -> Evaluator input


TARGETS: dict[TargetName, TargetRules] = {
    "binary": TargetRules(
        _binary_loss, lambda out, batch: (out.float(), batch.y.view(out.shape)), _binary_inputs
    ),
    "multiclass": TargetRules(
        _multiclass_loss,
        lambda out, batch: (out.argmax(dim=-1, keepdim=True), batch.y.view(-1, 1)),
        _binary_inputs,
    ),
    "sequence": TargetRules(
        _sequence_loss, lambda out, batch: (out.argmax(dim=-1), batch.y), _sequence_inputs
    ),
}


def _loss(task: GraphTask, out: Tensor, batch: Any) -> Tensor:
    """Mean training loss of a batch (no host sync)."""
    return TARGETS[task.target].loss(out, batch)


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, data: GraphDataset, evaluator: Any, device: torch.device
) -> float:
    """The OGB Evaluator's metric on one split; NaN when it is undefined (e.g. one class)."""
    model.eval()
    rules = TARGETS[data.task.target]
    preds: list[Tensor] = []
    trues: list[Any] = []
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        pred, true = rules.predict(model(batch), batch)
        preds.append(pred)
        trues.append(true)
    inputs = rules.inputs(preds, trues, data.vocab)
    try:
        return float(evaluator.eval(inputs)[data.eval_metric])
    except RuntimeError as exc:  # OGB: "No positively labeled data available..."
        log.warning("%s: metric undefined on this split: %s", data.name, exc)
        return math.nan


# --------------------------------------------------------------------------------------------
# Checkpoints


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffling seed of one epoch: a function of (seed, epoch) only."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


# --------------------------------------------------------------------------------------------
# The run


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    task: GraphTask,
    optimizer: Optimizer,
    grad_clip: float,
    device: torch.device,
    bar: Any,
) -> Tensor:
    """One pass over the training graphs; returns the graph-weighted mean loss (on device)."""
    model.train()
    total = torch.zeros((), dtype=torch.float64, device=device)
    graphs = 0
    for batch in loader:
        batch = batch.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(task, model(batch), batch)
        loss.backward()
        if grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += loss.detach().double() * batch.num_graphs  # no host sync per step
        graphs += batch.num_graphs
        bar.update(1)
    return total / max(graphs, 1)


def train_graph_run(
    spec: RunSpec,
    info: DatasetInfo,
    paths: DataPaths,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    on_epochs: Callable[[list[EpochStats]], None] | None = None,
) -> RunResult:
    """Train GCN+ on an OGB graph dataset; resume from `checkpoint_dir` when it holds a state.

    A run whose training loss becomes NaN / inf comes back as a failed RunResult with a reason.
    `on_epochs` receives each finished epoch's row (already on the host), e.g. for trackers.
    """
    params = spec.params
    if not isinstance(params, GraphParams):
        raise UserInputError(
            f"run {spec.key()}: dataset {spec.dataset!r} needs GraphParams, "
            f"got {type(params).__name__}"
        )
    started = time.perf_counter()

    # --- data, model, optimizer, schedule (seeded, so the initial weights are the run's own)
    seed_everything(spec.seed)
    data = load_graph_dataset(info, paths, rwse_steps=params.rwse_steps)
    model = build_graph_model(params, data.task).to(device)
    optimizer = build_optimizer(
        model, spec.optimizer, lr=params.lr, weight_decay=params.weight_decay
    )
    scheduler = LambdaLR(optimizer, warmup_cosine(params.warmup_epochs, params.epochs))
    evaluator = data.evaluator()
    tracker = BestTracker("cpu")
    history: list[EpochStats] = []
    seconds_before = 0.0

    # --- resume from the last finished epoch, if a checkpoint is there
    checkpointer = (
        NullCheckpointer() if checkpoint_dir is None else Checkpointer(checkpoint_dir, spec.key())
    )
    state = checkpointer.load()
    clock = TrainClock(device)  # training time per epoch, evaluation excluded
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        tracker.val, tracker.test, tracker.epoch = (
            state["best"][k] for k in ("val", "test", "epoch")
        )
        history = [EpochStats(**row) for row in state["history"]]
        seconds_before = float(state["seconds"])
        clock = TrainClock(device, [row.train_seconds for row in history])
        set_rng_state(state["rng"])
        log.info("%s: resuming after epoch %d", spec.key(), len(history))
    diagnostics = WeightDiagnostics(ham_target_params(model))  # signs as of the last epoch

    pin = device.type == "cuda"
    loader_args = {"batch_size": params.batch_size, "pin_memory": pin}  # in-memory: no workers
    # every loader has its own generator, so loading never consumes the global RNG (dropout)
    shuffle = torch.Generator()
    train_loader = DataLoader(data.train, shuffle=True, generator=shuffle, **loader_args)
    val_loader = DataLoader(
        data.val, shuffle=False, generator=torch.Generator().manual_seed(0), **loader_args
    )
    test_loader = DataLoader(
        data.test, shuffle=False, generator=torch.Generator().manual_seed(0), **loader_args
    )

    def result(status: str, reason: str = "") -> RunResult:
        val, test, best_epoch = tracker.result()
        return RunResult(
            spec=spec,
            metric=info.metric,
            status=status,  # type: ignore[arg-type]
            val=val,
            test=test,
            best_epoch=best_epoch,
            epochs=len(history),
            seconds=seconds_before + time.perf_counter() - started,
            reason=reason,
            history=list(history),
        )

    # --- epochs
    epochs = tqdm(
        range(len(history) + 1, params.epochs + 1),
        desc=spec.key(),
        unit="epoch",
        disable=None,
        leave=False,
    )
    for epoch in epochs:
        shuffle.manual_seed(epoch_seed(spec.seed, epoch))  # the loader draws from it
        lr = float(optimizer.param_groups[0]["lr"])
        with tqdm(
            total=len(train_loader), desc=f"epoch {epoch}", unit="batch", disable=None, leave=False
        ) as bar:
            clock.start()
            loss_t = _train_epoch(
                model, train_loader, data.task, optimizer, params.grad_clip, device, bar
            )
            clock.stop()
        flips_t, mean_abs_t = diagnostics.update()
        loss = float(loss_t)  # the one sync of the training phase
        train_seconds = clock.settle()[-1]
        if not math.isfinite(loss):
            epochs.close()
            checkpointer.clear()
            return result("failed", divergence_reason(loss, epoch))

        # evaluate every epoch; the test metric is kept for the first best-val epoch
        val = evaluate(model, val_loader, data, evaluator, device)
        test = evaluate(model, test_loader, data, evaluator, device)
        tracker.update(
            epoch, torch.tensor(val, dtype=torch.float64), torch.tensor(test, dtype=torch.float64)
        )
        history.append(
            EpochStats(
                epoch=epoch,
                loss=loss,
                train=math.nan,  # not evaluated on graph runs
                val=val,
                test=test,
                lr=lr,
                sign_flips=int(flips_t),
                mean_abs_weight=float(mean_abs_t),
                train_seconds=train_seconds,
            )
        )
        if on_epochs is not None:
            on_epochs(history[-1:])
        scheduler.step()
        log.info("%s epoch %d: loss %.4f val %.4f test %.4f", spec.key(), epoch, loss, val, test)
        epochs.set_postfix(loss=f"{loss:.4f}", val=f"{val:.4f}")

        checkpointer.save(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "best": {"val": tracker.val, "test": tracker.test, "epoch": tracker.epoch},
                "history": [asdict(row) for row in history],
                "seconds": seconds_before + time.perf_counter() - started,
                "rng": rng_state(),
            }
        )
        if preemption.stop_requested() and epoch < params.epochs:  # SIGTERM / SIGUSR1
            epochs.close()
            log.warning("%s: stopped after epoch %d (checkpointed)", spec.key(), epoch)
            raise Preempted
    epochs.close()

    checkpointer.clear()
    return result("ok")
