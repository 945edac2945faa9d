"""A user's metric: f(scores, target) -> float, with scores the softmax probabilities [N, C]
(float64, CPU) and target the class indices [N] (int64, CPU)."""

from __future__ import annotations

import torch


def macro_f1(scores: torch.Tensor, target: torch.Tensor) -> float:
    """The unweighted mean of the per-class F1 scores (classes present in target or
    prediction)."""
    predicted = scores.argmax(dim=-1)
    classes = torch.unique(torch.cat([predicted, target]))
    values = []
    for c in classes:
        tp = ((predicted == c) & (target == c)).sum().item()
        fp = ((predicted == c) & (target != c)).sum().item()
        fn = ((predicted != c) & (target == c)).sum().item()
        values.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(sum(values) / len(values)) if values else float("nan")


def error_rate(scores: torch.Tensor, target: torch.Tensor) -> float:
    """1 - accuracy: lower is better."""
    return float((scores.argmax(dim=-1) != target).double().mean())


error_rate.higher_is_better = False  # type: ignore[attr-defined]
