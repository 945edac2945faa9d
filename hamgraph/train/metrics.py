"""Evaluation metrics computed on the device, without host syncs (they return 0-dim tensors).

    accuracy  multi-class:   logits [N, C], labels [N]
    rocauc    binary:        scores [N] (e.g. softmax[:, 1]) or [N, T] multi-task with NaN labels
    ap        binary:        same shapes as rocauc (average precision, as OGB / sklearn)

Multi-task inputs ([N, T], labels NaN where missing) average over the tasks that have both a
positive and a negative label, like OGB's Evaluator for ogbg-molhiv / ogbg-molpcba. A task (or
a binary input) without both classes gives NaN; OGB raises there instead.

ogbn-arxiv's OGB Evaluator computes plain accuracy; `accuracy` here is checked against it in the
tests, so every node dataset keeps the device path. F1 of ogbg-code2 (sequences of tokens) is
not a device metric: use OGB's Evaluator there.

Row-batched variants (the packed trainer: M models, each with its own node set) take
`[M, T, ...]` inputs padded to a common T with a `valid [M, T]` mask and return `[M]`, with the
same value per row as the plain metric on that row's valid entries (tested for equality):

    accuracy_rows  logits [M, T, C], labels [M, T], valid [M, T]
    rocauc_rows    scores [M, T],    labels [M, T], valid [M, T]   (binary only)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from hamgraph.errors import UnknownNameError
from hamgraph.specs import PluginRef, RunSpec

MetricFn = Callable[[Tensor, Tensor], Tensor]


def accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of rows whose argmax equals the label (NaN for zero rows)."""
    if labels.numel() == 0:
        return logits.new_tensor(float("nan"))
    return (logits.argmax(dim=-1) == labels).double().mean()


def _average_ranks(values: Tensor) -> Tensor:
    """1-based ranks of `values` (1-D), ties get their average rank. Sync-free (fixed shapes)."""
    n = values.numel()
    sorted_values, order = torch.sort(values)
    new_group = torch.ones(n, dtype=torch.bool, device=values.device)
    new_group[1:] = sorted_values[1:] != sorted_values[:-1]
    group = torch.cumsum(new_group, 0) - 1  # group id of each sorted position
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=values.device)
    rank_sum = torch.zeros(n, dtype=torch.float64, device=values.device)
    count = torch.zeros(n, dtype=torch.float64, device=values.device)
    rank_sum.scatter_add_(0, group, positions)  # integer-valued: exact, order-independent
    count.scatter_add_(0, group, torch.ones_like(positions))
    ranks = torch.empty(n, dtype=torch.float64, device=values.device)
    ranks[order] = (rank_sum / count.clamp(min=1))[group]
    return ranks


def _binary_rocauc(scores: Tensor, labels: Tensor) -> Tensor:
    """Mann-Whitney U / (n_pos * n_neg) with average ranks for ties; NaN without both classes
    or with a non-finite score."""
    positive = labels > 0.5
    n_pos = positive.sum().double()
    n_neg = positive.numel() - n_pos
    ranks = _average_ranks(scores.double())
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    auc = u / (n_pos * n_neg)  # 0/0 -> NaN when one class is missing
    return torch.where(torch.isfinite(scores).all(), auc, torch.nan)  # a NaN score: no AUC


def _binary_ap(scores: Tensor, labels: Tensor) -> Tensor:
    """Average precision = sum over thresholds of (recall step) x precision, as sklearn.

    Thresholds are the distinct scores; tied scores form one threshold.
    """
    positive = (labels > 0.5).double()
    scores = scores.double()
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_scores = scores[order]
    true_pos = torch.cumsum(positive[order], 0)
    seen = torch.arange(1, scores.numel() + 1, dtype=torch.float64, device=scores.device)
    is_threshold = torch.ones_like(sorted_scores, dtype=torch.bool)  # last of each tie run
    is_threshold[:-1] = sorted_scores[:-1] != sorted_scores[1:]
    tp_at_threshold = torch.where(is_threshold, true_pos, torch.zeros_like(true_pos))
    tp_before = torch.cummax(tp_at_threshold, 0).values  # true positives at the last threshold
    tp_before = torch.cat([tp_before.new_zeros(1), tp_before[:-1]])
    gain = torch.where(is_threshold, true_pos - tp_before, torch.zeros_like(true_pos))
    return (gain * true_pos / seen).sum() / positive.sum()  # NaN without positives


def _per_task(binary: MetricFn) -> MetricFn:
    def metric(scores: Tensor, labels: Tensor) -> Tensor:
        if scores.dim() == 1:
            return binary(scores, labels)
        # multi-task: drop the unknown (NaN) labels of each task. Boolean indexing has a
        # data-dependent size (a sync on CUDA); multi-task metrics run once per evaluation.
        values = []
        for task in range(scores.size(1)):
            known = ~torch.isnan(labels[:, task].double())
            task_labels = labels[known, task]
            positives = (task_labels > 0.5).sum()
            both = (positives > 0) & (positives < task_labels.numel())
            value = binary(scores[known, task], task_labels)
            values.append(torch.where(both, value, torch.full_like(value, float("nan"))))
        return torch.nanmean(torch.stack(values))

    metric.__doc__ = binary.__doc__
    return metric


rocauc = _per_task(_binary_rocauc)
ap = _per_task(_binary_ap)

METRICS: dict[str, MetricFn] = {"accuracy": accuracy, "rocauc": rocauc, "ap": ap}


def resolve_metric(name: str) -> MetricFn:
    """A metric name -> its device function. Raises UnknownNameError listing the choices."""
    key = str(name).strip().lower()
    if key not in METRICS:
        raise UnknownNameError(f"unknown metric {name!r}; valid names: {', '.join(METRICS)}")
    return METRICS[key]


# ---------------------------------------------------------------------------------------------
# the metric of a run: a built-in name or a user's metric (hamgraph.plugins)

BUILTIN_METRICS = ("accuracy", "rocauc", "ap", "f1")  # f1: ogbg-code2 only (OGB's Evaluator)


@dataclass(frozen=True)
class MetricChoice:
    """A resolved metric: its name, its direction and, for a user's metric, its PluginRef.

    A user's metric is `f(scores, target) -> float`: `scores` are the softmax probabilities
    [N, C] (float64, on the CPU) of the evaluated nodes, `target` their class indices [N]
    (int64, on the CPU). It runs on the host: one device-to-host copy of the N x C scores per
    evaluated split and epoch (built-in metrics stay on the device).
    """

    name: str
    higher_is_better: bool = True
    plugin: PluginRef | None = None


def resolve_metric_choice(value: Any) -> MetricChoice:
    """A YAML metric choice -> MetricChoice: a built-in name, then an installed entry point
    (group `hamgraph.metrics`), then `{_target_: path, higher_is_better: bool}`.

    A user's metric is checked here: it takes (scores, target) and returns a number on a tiny
    probe. Raises UserInputError (UnknownNameError for a name no source defines).
    """
    from hamgraph.plugins import PluginError, check_call, load, parse_choice

    name, ref, _obj = parse_choice("metric", value, BUILTIN_METRICS)
    if ref is None:
        if name not in BUILTIN_METRICS:
            raise UnknownNameError(
                f"unknown metric {value!r}; valid names: {', '.join(BUILTIN_METRICS)}, an "
                "installed hamgraph.metrics entry point, or {_target_: module.function}"
            )
        return MetricChoice(name)
    fn = load(ref)
    check_call(fn, 2, ref.kwargs, f"metric {ref.target!r}")
    probe = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=torch.float64)
    try:
        value = float(fn(probe, torch.tensor([0, 1, 1]), **ref.kwargs))
    except Exception as exc:
        raise PluginError(
            f"metric {ref.target!r} fails on a probe (scores [3, 2] float64, target [3] "
            f"int64): {type(exc).__name__}: {exc}"
        ) from None
    del value
    return MetricChoice(name, bool(ref.setting["higher_is_better"]), ref)


def run_metric(spec: RunSpec, dataset_metric: str) -> MetricChoice:
    """The metric of a run: the spec's choice, else the dataset's (no import for built-ins)."""
    if spec.metric_plugin is not None:
        return MetricChoice(spec.metric or spec.metric_plugin.display,
                            bool(spec.metric_plugin.setting.get("higher_is_better", True)),
                            spec.metric_plugin)
    return MetricChoice(spec.metric or dataset_metric)


def node_metric(choice: MetricChoice) -> Callable[[Tensor, Tensor], Tensor]:
    """metric(logits [n, C], labels [n]) -> 0-dim float64 tensor on the logits' device.

    Built-ins never leave the device (rocauc reads softmax[:, 1]); a user's metric gets the
    softmax probabilities on the CPU (one copy per call).
    """
    if choice.plugin is None:
        fn = resolve_metric(choice.name)
        if choice.name in ("rocauc", "ap"):
            return lambda logits, labels: fn(logits.softmax(dim=-1)[:, 1], labels)
        return fn
    from hamgraph.plugins import load

    user = load(choice.plugin)
    options = choice.plugin.kwargs

    def metric(logits: Tensor, labels: Tensor) -> Tensor:
        scores = logits.detach().softmax(dim=-1).to("cpu", torch.float64)
        value = float(user(scores, labels.detach().cpu(), **options))
        return torch.tensor(value, dtype=torch.float64, device=logits.device)

    return metric


RowMetricFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def accuracy_rows(logits: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
    """`accuracy` of each row over its valid entries -> [M] float64 (NaN for an empty row)."""
    correct = (logits.argmax(dim=-1) == labels) & valid
    return correct.sum(dim=1).double() / valid.sum(dim=1).double()


def _average_ranks_rows(values: Tensor) -> Tensor:
    """`_average_ranks` of every row of a 2-D tensor at once (ties within a row only)."""
    rows, n = values.shape
    sorted_values, order = torch.sort(values, dim=1)
    new_group = torch.ones_like(sorted_values, dtype=torch.bool)
    new_group[:, 1:] = sorted_values[:, 1:] != sorted_values[:, :-1]
    offsets = torch.arange(rows, device=values.device).unsqueeze(1) * n
    group = (torch.cumsum(new_group, 1) - 1 + offsets).reshape(-1)  # global group ids
    positions = torch.arange(1, n + 1, dtype=torch.float64, device=values.device)
    positions = positions.expand(rows, n).reshape(-1)
    rank_sum = torch.zeros(rows * n, dtype=torch.float64, device=values.device)
    count = torch.zeros(rows * n, dtype=torch.float64, device=values.device)
    rank_sum.scatter_add_(0, group, positions)  # integer-valued: exact, order-independent
    count.scatter_add_(0, group, torch.ones_like(positions))
    sorted_ranks = (rank_sum / count.clamp(min=1))[group].view(rows, n)
    return torch.empty_like(sorted_ranks).scatter_(1, order, sorted_ranks)


def rocauc_rows(scores: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
    """Binary `rocauc` of each row over its valid entries -> [M] float64.

    Padding entries get the score +inf, so they rank above every real entry and leave the
    ranks of the real ones as in the row alone. A row with a non-finite valid score is NaN.
    """
    scores = scores.double()
    scores = torch.where(valid, scores, torch.full_like(scores, math.inf))
    positive = (labels > 0.5) & valid
    n_pos = positive.sum(dim=1).double()
    n_neg = valid.sum(dim=1).double() - n_pos
    ranks = _average_ranks_rows(scores)
    u = torch.where(positive, ranks, torch.zeros_like(ranks)).sum(dim=1) - n_pos * (n_pos + 1) / 2
    auc = u / (n_pos * n_neg)  # 0/0 -> NaN when one class is missing
    broken = (valid & ~torch.isfinite(scores)).any(dim=1)  # as `rocauc`: a NaN score, no AUC
    return torch.where(broken, torch.nan, auc)


ROW_METRICS: dict[str, RowMetricFn] = {"accuracy": accuracy_rows, "rocauc": rocauc_rows}
