"""Device metrics against reference implementations (sklearn, OGB's Evaluator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hamgraph.errors import UnknownNameError
from hamgraph.train.metrics import accuracy, ap, resolve_metric, rocauc

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _binary_cases():
    gen = torch.Generator().manual_seed(0)
    for n in (2, 5, 17, 100, 1000):
        for tied in (False, True):
            for _ in range(3):
                scores = torch.rand(n, generator=gen)
                if tied:  # few distinct values: many ties, across classes too
                    scores = torch.randint(0, 4, (n,), generator=gen).float()
                labels = torch.randint(0, 2, (n,), generator=gen)
                labels[0], labels[-1] = 0, 1  # both classes present
                yield scores, labels


def test_rocauc_and_ap_match_sklearn():
    count = 0
    for scores, labels in _binary_cases():
        y, s = labels.numpy(), scores.numpy()
        assert rocauc(scores, labels).item() == pytest.approx(
            sklearn_metrics.roc_auc_score(y, s), abs=1e-12
        )
        assert ap(scores, labels).item() == pytest.approx(
            sklearn_metrics.average_precision_score(y, s), abs=1e-12
        )
        count += 1
    assert count == 30


def test_rocauc_known_values_and_degenerate_input():
    labels = torch.tensor([0, 0, 1, 1])
    assert rocauc(torch.tensor([0.1, 0.2, 0.3, 0.4]), labels).item() == 1.0
    assert rocauc(torch.tensor([0.4, 0.3, 0.2, 0.1]), labels).item() == 0.0
    assert rocauc(torch.tensor([0.5, 0.5, 0.5, 0.5]), labels).item() == 0.5
    assert np.isnan(rocauc(torch.rand(5), torch.ones(5)).item())  # one class only


def test_multitask_with_missing_labels_matches_per_task_sklearn():
    gen = torch.Generator().manual_seed(1)
    scores = torch.randn(60, 4, generator=gen)
    labels = torch.randint(0, 2, (60, 4), generator=gen).float()
    labels[torch.rand(60, 4, generator=gen) < 0.3] = float("nan")
    labels[:, 3] = torch.where(torch.isnan(labels[:, 3]), labels[:, 3], 1.0)  # one class: skipped
    for ours, theirs in ((rocauc, sklearn_metrics.roc_auc_score),
                         (ap, sklearn_metrics.average_precision_score)):
        expected = []
        for t in range(3):
            known = ~torch.isnan(labels[:, t])
            expected.append(theirs(labels[known, t].numpy(), scores[known, t].numpy()))
        assert ours(scores, labels).item() == pytest.approx(np.mean(expected), abs=1e-12)


def test_accuracy_matches_ogb_evaluator():
    from ogb.nodeproppred import Evaluator

    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(500, 40, generator=gen)
    labels = torch.randint(0, 40, (500,), generator=gen)
    labels[:100] = logits[:100].argmax(-1)
    expected = Evaluator("ogbn-arxiv").eval(
        {"y_true": labels.view(-1, 1), "y_pred": logits.argmax(-1, keepdim=True)}
    )["acc"]
    value = accuracy(logits, labels)
    assert isinstance(value, torch.Tensor) and value.dim() == 0
    assert value.item() == pytest.approx(expected, abs=1e-12)
    assert np.isnan(accuracy(logits[:0], labels[:0]).item())


def test_resolve_metric():
    assert resolve_metric("ROCAUC") is rocauc
    assert resolve_metric("accuracy") is accuracy
    with pytest.raises(UnknownNameError, match="valid names: accuracy, rocauc, ap"):
        resolve_metric("mrr")


def test_a_nan_score_gives_no_auc_in_both_versions():
    """A NaN score (a run going bad) must not yield an AUC; padded rows used to rank NaN above
    the +inf padding and return values above 1."""
    from hamgraph.train.metrics import rocauc_rows

    labels = torch.tensor([0, 1, 0, 1, 1])
    scores = torch.tensor([0.1, 0.9, 0.3, float("nan"), 0.7])
    assert np.isnan(rocauc(scores, labels).item())
    rows = torch.stack([scores, torch.tensor([0.1, 0.9, 0.3, 0.8, 0.7])])
    valid = torch.tensor([[True] * 5, [True, True, True, True, False]])
    out = rocauc_rows(rows, labels.expand(2, 5), valid)
    assert np.isnan(out[0].item())
    assert out[1].item() == rocauc(rows[1, :4], labels[:4]).item()
    # a NaN outside a row's valid entries does not matter
    rows[1, 4] = float("nan")
    assert rocauc_rows(rows, labels.expand(2, 5), valid)[1].item() == out[1].item()
