"""Packed training: M node runs of one dataset x model x params trained as one model.

The runs of a pack share the graph, the features, the architecture and the hyperparameters;
they may differ in run (hence seed and split) and in HAM (Adam, HAM, nHAM with their alpha,
beta). They train as one `PackedGNN` whose weights carry a leading model dimension M
(HFTA, Wang et al., MLSys 2021): one sparse product per layer for all M models, one batched
matmul per dense layer.

A packed run is the same run: each model is initialized by `build_seeded_model` (seeded as its
single run), draws its dropout masks from its own generator seeded as its single run, gets its
own loss on its own train nodes, its own Adam state (elementwise on the stacked tensors) and
its own HAM step, and produces the RunResult `train_node_run` would have produced: the same
spec (hence key), history, best epoch, failure record. In float64 on the CPU the per-epoch
losses agree with the single run's to rounding (tests/test_packed.py). Only `seconds` differs:
each run of a pack gets the pack's wall time divided by M (its share).

    specs ──► models (seeded) ──► PackedGNN ──► epochs ──► M RunResults

Per epoch nothing goes to the host: losses, metrics, diagnostics of all M models go into one
device buffer [M, epochs, 6]; every `SYNC_EVERY` epochs the new rows are copied in one transfer.
A model whose loss became non-finite is then frozen (no gradient from then on; its columns never
mix with the others') and its failed RunResult is final at once (`on_result`); the others go on.

Checkpoints, as in `train_node_run`: the pack's whole state (stacked weights, optimizer, every
model's generator, trackers, histories, which models are frozen and why) every few minutes at
a sync and on a stop request; the pack resumes from it bit-identically. `train_seconds` of a
run's history is the pack's training time / M, like `seconds`.

The base optimizer is one instance of the spec's base class over the stacked parameters. For
an elementwise optimizer (`ELEMENTWISE_BASES`: Adam, AdamW, SGD, ...) that is M independent
optimizers; any other base (LBFGS's line search, Adafactor's factored moments, a LAMB-style
per-tensor trust ratio) would mix the models' numbers, so its runs train one at a time
(`pack_signature` is None). HAM's hyperbolic step then runs on the stacked HAM targets with
per-model alpha, beta ([M, 1, ...] tensors).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from hamgraph import preemption
from hamgraph.data.node import NodeDataset
from hamgraph.data.paths import DataPaths
from hamgraph.data.registry import DatasetInfo
from hamgraph.errors import ConfigError
from hamgraph.models.packed import PackedGNN
from hamgraph.optim import build_optimizer, hyperbolic_step_
from hamgraph.optim.factory import check_ham_base, resolve_base
from hamgraph.preemption import Preempted
from hamgraph.specs import EpochStats, HamSettings, OptimizerSpec, RunResult, RunSpec
from hamgraph.train.checkpoint import Checkpointer, NullCheckpointer, rng_state, set_rng_state
from hamgraph.train.common import (
    HISTORY_COLUMNS,
    BestTracker,
    TrainClock,
    divergence_reason,
    stats_from_values,
)
from hamgraph.train.metrics import ROW_METRICS, resolve_metric
from hamgraph.train.node import (
    BEST_FIELDS,
    SYNC_EVERY,
    build_seeded_model,
    check_node_spec,
    dropout_generator,
    load_node_data,
    prepare_inputs,
)

__all__ = [
    "ELEMENTWISE_BASES",
    "PackedDiagnostics",
    "pack_footprint",
    "pack_signature",
    "train_node_pack",
]

log = logging.getLogger(__name__)

_HAM_DEFAULTS = HamSettings(alpha=0.0, beta=0.0)


# Base optimizers whose step treats every element on its own (state and update elementwise,
# scalars such as the step count shared by all models): one instance over stacked weights is
# then exactly M optimizers. Any other base trains its runs one at a time.
ELEMENTWISE_BASES: frozenset[type[torch.optim.Optimizer]] = frozenset({
    torch.optim.Adam,
    torch.optim.AdamW,
    torch.optim.SGD,
    torch.optim.RAdam,
    torch.optim.NAdam,
    torch.optim.Adamax,
    torch.optim.Adagrad,
    torch.optim.Adadelta,
    torch.optim.RMSprop,
    torch.optim.Rprop,
})


def pack_signature(spec: RunSpec) -> Hashable | None:
    """Specs with equal signatures can train in one pack; None: this spec trains alone
    (its base optimizer is not in `ELEMENTWISE_BASES`).

    Shared by a pack: dataset, model, params, the base optimizer and its options, and HAM's
    `clamp` and `mask_beta` (runs without HAM count as the defaults, so they pack with the
    usual HAM runs). Per model: run (seed, split), HAM or not, alpha, beta, sign_source.
    """
    if resolve_base(spec.optimizer.base) not in ELEMENTWISE_BASES:
        return None
    ham = spec.ham or _HAM_DEFAULTS
    return (
        spec.dataset,
        spec.model,
        spec.params,
        spec.optimizer.base,
        spec.optimizer.base_options,
        ham.clamp,
        ham.mask_beta,
    )


@dataclass(frozen=True)
class PackedIndex:
    """One node set per model, padded to a common length: idx [M, T] (padding: node 0),
    valid [M, T], count [M] (float, the set sizes)."""

    idx: Tensor
    valid: Tensor
    count: Tensor
    parts: tuple[Tensor, ...]  # the unpadded sets, for metrics without a row-batched version

    @classmethod
    def build(cls, parts: Sequence[Tensor], device: torch.device) -> PackedIndex:
        longest = max(1, max(int(p.numel()) for p in parts))
        idx = torch.zeros(len(parts), longest, dtype=torch.long)
        valid = torch.zeros(len(parts), longest, dtype=torch.bool)
        for m, part in enumerate(parts):
            idx[m, : part.numel()] = part
            valid[m, : part.numel()] = True
        count = valid.sum(dim=1).double()
        return cls(
            idx.to(device), valid.to(device), count.to(device), tuple(p.to(device) for p in parts)
        )

    def gather(self, values: Tensor) -> Tensor:
        """values [M, N, ...] -> [M, T, ...] at each model's nodes."""
        index = self.idx.view(*self.idx.shape, *([1] * (values.dim() - 2)))
        return values.gather(1, index.expand(-1, -1, *values.shape[2:]))


def pack_loss(logits: Tensor, y: Tensor, train: PackedIndex) -> Tensor:
    """Per-model mean cross-entropy over its own train nodes -> [M] (as `node.loss_fn`)."""
    chosen = train.gather(logits)  # [M, T, C]
    m, t, c = chosen.shape
    ce = F.cross_entropy(chosen.reshape(m * t, c), y[train.idx].reshape(-1), reduction="none")
    ce = torch.where(train.valid, ce.view(m, t), torch.zeros_like(ce.view(m, t)))
    return ce.sum(dim=1) / train.count.to(ce.dtype)


class PackedDiagnostics:
    """`WeightDiagnostics` of every model of a pack: sign flips and mean |w| of its slices of
    the stacked parameters -> ([M] int64, [M]); no host sync."""

    def __init__(self, params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.numel = sum(p[0].numel() for p in self.params)
        self._signs = [torch.signbit(p.detach()) for p in self.params]

    @torch.no_grad()
    def update(self) -> tuple[Tensor, Tensor]:
        flips, l1 = 0, 0
        for i, p in enumerate(self.params):
            signs = torch.signbit(p)
            flips = flips + (signs != self._signs[i]).flatten(1).sum(dim=1)
            self._signs[i] = signs
            l1 = l1 + p.abs().flatten(1).sum(dim=1)
        return flips, l1 / self.numel


class _HamStep:
    """HAM's hyperbolic step on the stacked HAM targets, for all models at once: alpha and beta
    are [M, 1, ..., 1] tensors per weight, 0 for a model without HAM (theta * exp(0) = theta
    leaves it bit-identical). "HAM signed" models (sign_source "previous") read the signs taken
    before the base step, the others the current ones.
    """

    def __init__(self, specs: Sequence[RunSpec], params: Sequence[Tensor]) -> None:
        self.params = list(params)
        self.models = [(m, s.ham) for m, s in enumerate(specs) if s.ham is not None]
        self.previous = any(h.sign_source == "previous" for _, h in self.models)
        self.clamp = self.models[0][1].clamp if self.models else _HAM_DEFAULTS.clamp
        self.mask_beta = self.models[0][1].mask_beta if self.models else _HAM_DEFAULTS.mask_beta
        if not self.models or not self.params:
            return
        size = len(specs)
        first = self.params[0]

        def per_model(values: list[float], dtype: torch.dtype) -> Tensor:
            return torch.tensor(values, dtype=dtype, device=first.device)

        alpha, beta, previous = [0.0] * size, [0.0] * size, [False] * size
        for m, ham in self.models:
            alpha[m], beta[m] = ham.alpha, ham.beta
            previous[m] = ham.sign_source == "previous"
        self.alpha, self.beta, self.use_previous = [], [], []
        for p in self.params:
            shape = (size,) + (1,) * (p.dim() - 1)
            # float64, as the single run's Python floats: -lr * alpha is formed in float64 and
            # rounded once to the weight's dtype, exactly as there (float32 packs included)
            self.alpha.append(per_model(alpha, torch.float64).view(shape))
            self.beta.append(per_model(beta, torch.float64).view(shape))
            self.use_previous.append(per_model(previous, torch.bool).view(shape))

    def signs_before(self) -> list[Tensor] | None:
        if not self.previous:
            return None
        with torch.no_grad():
            return [torch.sign(p).to(torch.int8) for p in self.params]

    @torch.no_grad()
    def __call__(self, lr: float, signs: list[Tensor] | None) -> None:
        if not self.models:
            return
        grads = [p.grad for p in self.params]
        if signs is not None:  # "previous" models: signs before the base step; others: now
            signs = [
                torch.where(self.use_previous[i], before, torch.sign(self.params[i]).to(torch.int8))
                for i, before in enumerate(signs)
            ]
        hyperbolic_step_(
            self.params,
            grads,
            lr=lr,
            alpha=self.alpha,
            beta=self.beta,
            clamp=self.clamp,
            mask_beta=self.mask_beta,
            signs=signs,
        )



def _check_pack(specs: Sequence[RunSpec], info: DatasetInfo) -> None:
    each = [pack_signature(spec) for spec in specs]
    signatures = set(each)
    alone = [spec for spec, signature in zip(specs, each, strict=True) if signature is None]
    if alone and len(specs) > 1:
        raise ConfigError(
            f"run {alone[0].key()} cannot share a pack: its base optimizer "
            f"{alone[0].optimizer.base!r} is not elementwise (hamgraph.train.packed."
            "ELEMENTWISE_BASES)"
        )
    if len(signatures) > 1:
        raise ConfigError(
            f"runs {[s.key() for s in specs]} cannot share a pack: they differ in dataset, "
            "model, params, base optimizer or HAM clamp / mask_beta"
        )
    for spec in specs:
        check_node_spec(spec, info)
        if spec.ham is not None:
            check_ham_base(spec.optimizer.base)
        if spec.dataset != info.name:
            raise ConfigError(f"run {spec.key()} is not on dataset {info.name!r}")


def train_node_pack(
    specs: Sequence[RunSpec],
    info: DatasetInfo,
    paths: DataPaths,
    device: torch.device,
    *,
    dtype: torch.dtype = torch.float32,
    on_result: Callable[[RunResult], None] | None = None,
    on_epochs: Callable[[int, list[EpochStats]], None] | None = None,
    checkpointer: Checkpointer | NullCheckpointer | None = None,
) -> list[RunResult]:
    """Train the runs `specs` (equal `pack_signature`) as one packed model.

    Returns their RunResults in spec order. `on_result(result)` is called as each becomes
    final: a diverged run's as soon as noticed (at a sync), the others' at the end.
    `on_epochs(i, rows)`: at every sync, the epochs run i finished since the last one.
    `checkpointer`: the pack's checkpoint (its `members` must be the specs' keys in order), as
    in `train_node_run`: resumed when present, saved when due at a sync and on a stop request
    (then Preempted is raised). A resumed pack does not call `on_result` again for runs that
    diverged before the checkpoint (they were final then); it returns them all the same.
    """
    specs = list(specs)
    if not specs:
        return []
    _check_pack(specs, info)
    params = check_node_spec(specs[0], info)
    started = time.perf_counter()
    size = len(specs)
    checkpointer = checkpointer or NullCheckpointer()
    members = getattr(checkpointer, "members", None)
    if members is not None and members != [spec.key() for spec in specs]:
        raise ValueError(f"pack checkpoint {checkpointer.path}: written for other members")

    # -- data and the models, each seeded as its single run, stacked into one
    data = load_node_data(info, paths)
    first = build_seeded_model(specs[0], data, device, dtype)
    models = [first] + [build_seeded_model(s, data, device, dtype) for s in specs[1:]]
    graph, x = prepare_inputs(first, data, device, dtype)
    model = PackedGNN(models).to(device)
    del models, first
    generators = [dropout_generator(spec, device) for spec in specs]
    y = data.y.to(device)
    parts = _packed_splits(data, specs, device)

    # -- the base optimizer over the stacked weights; HAM on top, per model
    base = OptimizerSpec(specs[0].optimizer.base, specs[0].optimizer.base_options)
    optimizer = build_optimizer(model, base, lr=params.lr, weight_decay=params.weight_decay)
    ham_targets = model.ham_target_params()
    ham = _HamStep(specs, ham_targets)
    metric_rows = ROW_METRICS.get(info.metric)
    metric = resolve_metric(info.metric)
    best = BestTracker(device, (size,))
    history = torch.full(
        (size, params.epochs, len(HISTORY_COLUMNS)), math.nan, dtype=torch.float64, device=device
    )
    alive = [True] * size
    alive_mask = torch.ones(size, dtype=torch.bool, device=device)
    stats: list[list[EpochStats]] = [[] for _ in specs]
    results: list[RunResult | None] = [None] * size
    reasons = [""] * size  # why a frozen model failed
    synced = 0
    lrs: list[float] = []
    clock = TrainClock(device)  # the pack's training time per epoch, evaluation excluded
    seconds_before = 0.0  # the pack's wall time in the processes before a resume

    # -- resume after the last checkpointed epoch, if there is one
    state = checkpointer.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for generator, generator_state in zip(generators, state["generators"], strict=True):
            generator.set_state(generator_state)
        set_rng_state(state["rng"])
        best.val, best.test, best.epoch = (state["best"][k].to(device) for k in BEST_FIELDS)
        history.copy_(state["history"])
        synced = int(state["synced"])
        lrs = list(state["lrs"])
        clock = TrainClock(device, state["train_seconds"])
        seconds_before = float(state["seconds"])
        alive = list(state["alive"])
        alive_mask = torch.tensor(alive, dtype=torch.bool, device=device)
        reasons = list(state["reasons"])
        stats = [[EpochStats(**row) for row in rows] for rows in state["stats"]]
        log.info("%s: resuming after epoch %d", getattr(checkpointer, "key", ""), state["epoch"])
    first_epoch = len(lrs) + 1
    # sign flips are counted against the weights as they are now (after the resumed epoch)
    diagnostics = PackedDiagnostics(ham_targets)

    def evaluate(out: Tensor, part: PackedIndex) -> Tensor:
        scores = out.softmax(dim=-1)[..., 1] if info.metric == "rocauc" else out
        if metric_rows is not None:
            return metric_rows(part.gather(scores), y[part.idx], part.valid)
        return torch.stack(
            [metric(scores[m][idx], y[idx]).double() for m, idx in enumerate(part.parts)]
        )

    def finish(
        m: int, status: str, reason: str, best_result: tuple[float, float, int], report: bool = True
    ) -> None:
        val, test, best_epoch = best_result if status == "ok" else (math.nan, math.nan, 0)
        results[m] = RunResult(
            spec=specs[m],
            metric=info.metric,
            status=status,  # type: ignore[arg-type]
            val=val,
            test=test,
            best_epoch=best_epoch,
            epochs=len(stats[m]),
            seconds=(seconds_before + time.perf_counter() - started) / size,
            reason=reason,
            history=stats[m],
        )
        if on_result is not None and report:
            on_result(results[m])

    for m in range(size):  # diverged before the checkpoint: final (and reported) back then
        if not alive[m]:
            finish(m, "failed", reasons[m], (math.nan, math.nan, 0), report=False)

    def save(epoch: int) -> None:
        checkpointer.save(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "generators": [generator.get_state() for generator in generators],
                "rng": rng_state(),
                "best": dict(zip(BEST_FIELDS, (best.val, best.test, best.epoch), strict=True)),
                "history": history.cpu(),
                "synced": synced,
                "lrs": lrs,
                "train_seconds": list(clock.settle()),
                "seconds": seconds_before + time.perf_counter() - started,
                "alive": alive,
                "reasons": reasons,
                "stats": [[dataclasses.asdict(row) for row in rows] for rows in stats],
            }
        )

    first_spec = specs[0]
    bar = tqdm(
        range(first_epoch, params.epochs + 1),
        desc=f"{first_spec.dataset} {first_spec.model} pack of {size}",
        disable=None,
        leave=False,
    )
    for epoch in bar:
        # -- train step: every model's own loss; a frozen model gets no gradient
        clock.start()
        model.train()
        optimizer.zero_grad(set_to_none=True)
        losses = pack_loss(model(x, graph, generators), y, parts[0])
        torch.where(alive_mask, losses, torch.zeros_like(losses)).sum().backward()
        signs = ham.signs_before()
        optimizer.step()
        lr = float(optimizer.param_groups[0]["lr"])
        ham(lr, signs)
        clock.stop()
        lrs.append(lr)

        # -- evaluate all models on their own splits; diagnostics; best epochs (on the device)
        model.eval()
        with torch.no_grad():
            out = model(x, graph)
            train_m, val_m, test_m = (evaluate(out, part) for part in parts)
            flips, mean_abs = diagnostics.update()
            row = (losses.detach(), train_m, val_m, test_m, flips, mean_abs)
            history[:, epoch - 1] = torch.stack([v.to(torch.float64) for v in row], dim=1)
            best.update(epoch, val_m, test_m)

        # -- every SYNC_EVERY epochs: new rows to the host; freeze models whose loss went bad
        at_sync = epoch % SYNC_EVERY == 0 or epoch == params.epochs
        if at_sync:
            block = history[:, synced:epoch].cpu().tolist()  # the one transfer of a sync
            spent = [seconds / size for seconds in clock.settle()[synced:epoch]]  # each run's share
            for m in range(size):
                if not alive[m]:
                    continue
                bad = next((i for i, row in enumerate(block[m]) if not math.isfinite(row[0])), None)
                rows = block[m] if bad is None else block[m][:bad]
                new = stats_from_values(
                    rows, lrs[synced : synced + len(rows)], synced + 1, spent[: len(rows)]
                )
                stats[m].extend(new)
                if on_epochs is not None and new:
                    on_epochs(m, new)
                if bad is not None:
                    alive[m] = False
                    reasons[m] = divergence_reason(block[m][bad][0], synced + bad + 1)
                    log.warning("%s: %s", specs[m].key(), reasons[m])
                    finish(m, "failed", reasons[m], (math.nan, math.nan, 0))
            if not all(alive):
                alive_mask = torch.tensor(alive, dtype=torch.bool, device=device)
            synced = epoch
            if not any(alive):
                break
            bar.set_postfix(alive=sum(alive), refresh=False)

        # -- checkpoint every few minutes (at a sync), or now when asked to stop
        if epoch < params.epochs:
            stop = preemption.stop_requested()
            if stop or (at_sync and checkpointer.due()):
                save(epoch)
            if stop:
                bar.close()
                log.warning("pack of %d (%s, ...): stopped after epoch %d (checkpointed)",
                            size, first_spec.key(), epoch)
                raise Preempted
    bar.close()

    # -- results of the runs still alive: test metric at their first best validation epoch
    for m, best_result in enumerate(best.results()):
        if alive[m]:
            finish(m, "ok", "", best_result)
    return [r for r in results if r is not None]


def _packed_splits(
    data: NodeDataset, specs: Sequence[RunSpec], device: torch.device
) -> tuple[PackedIndex, PackedIndex, PackedIndex]:
    splits = [data.split_for_run(spec.run) for spec in specs]
    return tuple(  # type: ignore[return-value]
        PackedIndex.build([getattr(s, name) for s in splits], device)
        for name in ("train", "val", "test")
    )


def pack_footprint(
    spec: RunSpec, info: DatasetInfo, paths: DataPaths, device: torch.device
) -> int:
    """Bytes one more model adds to a pack of `spec`'s kind, for choosing M from free memory.

    CUDA: measured, the peak allocated memory of a 2-epoch pack of 2 minus that of a pack of 1
    (the shared graph and features cancel out). Elsewhere: an estimate from the tensor sizes,
    in float32: 4 copies of the weights (weight, gradient, two Adam moments) plus the
    activations an epoch keeps for the backward pass, about 8 [N, hidden] tensors per layer
    (conv, residual, norm, ReLU, dropout mask and output; GAT: 4 [E, hidden] more), the
    logits and the evaluation pass.
    """
    params = check_node_spec(spec, info)
    short = dataclasses.replace(spec, params=dataclasses.replace(params, epochs=2))
    if device.type == "cuda":
        peaks = []
        for m in (1, 2):
            pack = [dataclasses.replace(short, seed=short.seed + i) for i in range(m)]
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            train_node_pack(pack, info, paths, device)
            torch.cuda.synchronize(device)
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
        return max(1, peaks[1] - peaks[0])
    data = load_node_data(info, paths)
    model = build_seeded_model(short, data, torch.device("cpu"), torch.float32)
    weights = sum(p.numel() for p in model.parameters())
    n, hidden, layers = data.num_nodes, params.hidden, params.layers + int(params.pre_linear)
    activations = 8 * n * hidden * layers + 4 * n * data.num_classes
    if spec.model == "gat":
        activations += 4 * (data.edge_index.size(1) + n) * hidden * params.layers
    return 4 * (4 * weights + activations)
