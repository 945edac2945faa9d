"""Protocol presets (REFERENCE §2) and the paper's best HAM settings (REFERENCE §1)."""

from __future__ import annotations

import pytest

from hamgraph.data.registry import DATASETS, resolve_dataset
from hamgraph.errors import UnknownNameError
from hamgraph.presets import NODE_PRESETS, default_params, paper_best
from hamgraph.specs import GraphParams, NodeParams

PROTOCOL_DATASETS = [
    "cora", "citeseer", "pubmed", "amazon-computer", "amazon-photo", "coauthor-cs",
    "coauthor-physics", "wikics", "amazon-ratings", "minesweeper", "roman-empire", "squirrel",
    "chameleon",
]
MODELS = ["gcn", "gat", "sage"]


@pytest.mark.parametrize("dataset", PROTOCOL_DATASETS)
@pytest.mark.parametrize("model", MODELS)
def test_every_protocol_cell_has_preset_and_paper_best(dataset, model):
    params = default_params(resolve_dataset(dataset), model)
    assert isinstance(params, NodeParams)
    alpha, beta = paper_best(dataset, model, "ham")
    assert alpha > 0 and beta in (0.0, 0.01, 0.1)
    alpha, beta = paper_best(dataset, model, "nham")
    assert alpha < 0 and beta in (0.0, 0.01, 0.1)


# (dataset, model): (lr, hidden, layers, dropout, weight decay, epochs, norm, residual, pre)
SPOT_CHECKS = {
    ("cora", "gcn"): (1e-3, 512, 3, 0.7, 5e-4, 500, "none", False, False),
    ("cora", "gat"): (1e-3, 512, 3, 0.2, 5e-4, 500, "none", True, False),
    ("citeseer", "gcn"): (1e-3, 512, 2, 0.5, 1e-2, 500, "none", False, False),
    ("pubmed", "gat"): (1e-2, 512, 2, 0.5, 5e-4, 500, "none", False, False),
    ("coauthor-cs", "gat"): (1e-3, 256, 1, 0.3, 5e-4, 1500, "layer", True, False),
    ("coauthor-physics", "sage"): (1e-3, 64, 2, 0.7, 5e-4, 1500, "batch", True, False),
    ("wikics", "gat"): (1e-3, 512, 2, 0.7, 0.0, 1000, "layer", True, False),
    ("minesweeper", "gcn"): (1e-2, 64, 12, 0.2, 0.0, 2000, "batch", True, False),
    ("roman-empire", "sage"): (1e-3, 256, 9, 0.3, 0.0, 2500, "batch", False, True),
    ("roman-empire", "gat"): (1e-3, 512, 10, 0.3, 0.0, 2500, "batch", True, True),
    ("squirrel", "gat"): (5e-3, 512, 7, 0.5, 5e-4, 500, "batch", True, False),
    ("chameleon", "gcn"): (5e-3, 512, 5, 0.2, 1e-3, 200, "none", False, False),
    ("amazon-photo", "gcn"): (1e-3, 256, 6, 0.5, 5e-5, 1000, "layer", True, False),
}


@pytest.mark.parametrize(("dataset", "model"), list(SPOT_CHECKS))
def test_preset_rows_match_reference(dataset, model):
    lr, hidden, layers, dropout, wd, epochs, norm, residual, pre = SPOT_CHECKS[(dataset, model)]
    assert default_params(resolve_dataset(dataset), model) == NodeParams(
        lr=lr, hidden=hidden, layers=layers, dropout=dropout, weight_decay=wd, epochs=epochs,
        norm=norm, residual=residual, pre_linear=pre,
    )


def test_paper_best_spot_checks():
    assert paper_best("cora", "gcn", "ham") == (200.0, 0.1)
    assert paper_best("citeseer", "gat", "ham") == (10.0, 0.0)
    assert paper_best("minesweeper", "sage", "ham") == (1.0, 0.01)
    assert paper_best("amazon-ratings", "gat", "nham") == (-200.0, 0.1)
    assert paper_best("roman-empire", "sage", "nham") == (-1.0, 0.1)
    assert paper_best("Cora", "GCN", "ham") == (200.0, 0.1)
    assert paper_best("ogbg-molhiv", "gcnplus", "ham") == (200.0, 0.1)
    assert paper_best("ogbg-code2", "gcnplus", "ham") == (1.0, 0.01)


def test_paper_best_errors():
    with pytest.raises(UnknownNameError, match=r"entries: .*cora/gcn"):
        paper_best("tolokers", "gcn", "ham")
    with pytest.raises(UnknownNameError, match="no paper-best nham"):
        paper_best("ogbg-molhiv", "gcnplus", "nham")
    with pytest.raises(UnknownNameError, match="valid names: ham, nham"):
        paper_best("cora", "gcn", "adam")


def test_every_node_dataset_and_csbm_has_presets():
    for info in DATASETS.values():
        if info.task == "node":
            for model in MODELS:
                assert (info.base_name, model) in NODE_PRESETS  # variants: their base's
    csbm = default_params(resolve_dataset("csbm-h0.2-n500"), "sage")
    assert isinstance(csbm, NodeParams) and csbm.epochs > 0
    assert default_params(resolve_dataset("questions"), "gcn").pre_linear


def test_model_must_fit_the_task():
    with pytest.raises(UnknownNameError, match="valid names: gcn, gat, sage"):
        default_params(resolve_dataset("cora"), "gcnplus")
    with pytest.raises(UnknownNameError, match="valid names: gcnplus"):
        default_params(resolve_dataset("ogbg-molhiv"), "gcn")


def test_graph_presets_come_from_the_graph_module():
    from hamgraph.presets import graph

    molhiv = default_params(resolve_dataset("ogbg-molhiv"), "gcnplus")
    assert isinstance(molhiv, GraphParams)
    assert molhiv == graph.GRAPH_PRESETS["ogbg-molhiv"]
    assert (molhiv.lr, molhiv.hidden, molhiv.layers, molhiv.batch_size) == (1e-4, 256, 4, 32)
