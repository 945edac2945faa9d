"""Protocol hyperparameters of full-batch node classification (REFERENCE §2).

The 13 x 3 table is the one of "Classic GNNs are Strong Baselines" (Luo et al., NeurIPS 2024),
as in its `medium_graph/run_gnn.sh`. Rows not in REFERENCE §2 and where they come from:

- questions: tunedGNN `medium_graph/run_gnn.sh` (lr 3e-5, pre-linear, 1500 epochs).
- tolokers: not in the official script; taken from a tunedGNN-derived third-party script
  (lr 3e-5, 512 x 3, dropout 0.2, BN + residual, 1000 epochs). Treat as a starting point.
- ogbn-arxiv: tunedGNN `large_graph/arxiv.sh` (GCN 512 x 5, SAGE 256 x 4, BN + residual,
  lr 5e-4, 2000 epochs, its default dropout 0.5 and weight decay 5e-4; its input dropout 0.15
  is not part of this model). GAT is not given there; it uses the SAGE row.
- csbm-*: our own choice for small synthetic graphs (Kipf & Welling style): 2 layers x 64,
  lr 1e-2, dropout 0.5, weight decay 5e-4, 200 epochs, no norm.
"""

from __future__ import annotations

from hamgraph.specs import GraphParams, NodeParams


def _row(lr, hidden, layers, dropout, wd, epochs=500, flags="") -> NodeParams:
    """One table row; flags: "LN" | "BN", "Res", "Pre" separated by spaces."""
    words = set(flags.split())
    unknown = words - {"LN", "BN", "Res", "Pre"}
    if unknown or {"LN", "BN"} <= words:
        raise ValueError(f"bad preset flags {flags!r}")
    norm = "layer" if "LN" in words else "batch" if "BN" in words else "none"
    return NodeParams(
        lr=lr,
        hidden=hidden,
        layers=layers,
        dropout=dropout,
        weight_decay=wd,
        epochs=epochs,
        norm=norm,
        residual="Res" in words,
        pre_linear="Pre" in words,
    )


NODE_PRESETS: dict[tuple[str, str], NodeParams] = {
    # dataset, model: lr, hidden, layers, dropout, weight decay, epochs, flags
    ("cora", "gcn"): _row(1e-3, 512, 3, 0.7, 5e-4),
    ("cora", "sage"): _row(1e-3, 256, 3, 0.7, 5e-4),
    ("cora", "gat"): _row(1e-3, 512, 3, 0.2, 5e-4, flags="Res"),
    ("citeseer", "gcn"): _row(1e-3, 512, 2, 0.5, 1e-2),
    ("citeseer", "sage"): _row(1e-3, 512, 3, 0.2, 1e-2),
    ("citeseer", "gat"): _row(1e-3, 256, 3, 0.5, 1e-2, flags="Res"),
    ("pubmed", "gcn"): _row(5e-3, 256, 2, 0.7, 5e-4),
    ("pubmed", "sage"): _row(5e-3, 512, 4, 0.7, 5e-4),
    ("pubmed", "gat"): _row(1e-2, 512, 2, 0.5, 5e-4),
    ("amazon-computer", "gcn"): _row(1e-3, 512, 3, 0.5, 5e-5, 1000, "LN"),
    ("amazon-computer", "sage"): _row(1e-3, 64, 4, 0.3, 5e-5, 1000, "LN"),
    ("amazon-computer", "gat"): _row(1e-3, 64, 2, 0.5, 5e-5, 1000, "LN"),
    ("amazon-photo", "gcn"): _row(1e-3, 256, 6, 0.5, 5e-5, 1000, "LN Res"),
    ("amazon-photo", "sage"): _row(1e-3, 64, 6, 0.2, 5e-5, 1000, "LN Res"),
    ("amazon-photo", "gat"): _row(1e-3, 64, 3, 0.5, 5e-5, 1000, "LN Res"),
    ("coauthor-cs", "gcn"): _row(1e-3, 512, 2, 0.3, 5e-4, 1500, "LN Res"),
    ("coauthor-cs", "sage"): _row(1e-3, 512, 2, 0.5, 5e-4, 1500, "LN Res"),
    ("coauthor-cs", "gat"): _row(1e-3, 256, 1, 0.3, 5e-4, 1500, "LN Res"),
    ("coauthor-physics", "gcn"): _row(1e-3, 64, 2, 0.3, 5e-4, 1500, "LN Res"),
    ("coauthor-physics", "sage"): _row(1e-3, 64, 2, 0.7, 5e-4, 1500, "BN Res"),
    ("coauthor-physics", "gat"): _row(1e-3, 256, 2, 0.7, 5e-4, 1500, "BN Res"),
    ("wikics", "gcn"): _row(1e-3, 256, 3, 0.5, 0.0, 1000, "LN"),
    ("wikics", "sage"): _row(1e-3, 256, 2, 0.7, 0.0, 1000, "LN"),
    ("wikics", "gat"): _row(1e-3, 512, 2, 0.7, 0.0, 1000, "LN Res"),
    ("amazon-ratings", "gcn"): _row(1e-3, 512, 4, 0.5, 0.0, 2500, "BN Res"),
    ("amazon-ratings", "sage"): _row(1e-3, 512, 9, 0.5, 0.0, 2500, "BN Res"),
    ("amazon-ratings", "gat"): _row(1e-3, 512, 4, 0.5, 0.0, 2500, "BN Res"),
    ("minesweeper", "gcn"): _row(1e-2, 64, 12, 0.2, 0.0, 2000, "BN Res"),
    ("minesweeper", "sage"): _row(1e-2, 64, 15, 0.2, 0.0, 2000, "BN Res"),
    ("minesweeper", "gat"): _row(1e-2, 64, 15, 0.2, 0.0, 2000, "BN Res"),
    ("roman-empire", "gcn"): _row(1e-3, 512, 9, 0.5, 0.0, 2500, "BN Res Pre"),
    ("roman-empire", "sage"): _row(1e-3, 256, 9, 0.3, 0.0, 2500, "BN Pre"),
    ("roman-empire", "gat"): _row(1e-3, 512, 10, 0.3, 0.0, 2500, "BN Res Pre"),
    ("squirrel", "gcn"): _row(1e-2, 256, 4, 0.7, 5e-4, 500, "BN Res"),
    ("squirrel", "sage"): _row(1e-2, 256, 3, 0.7, 5e-4, 500, "BN Res"),
    ("squirrel", "gat"): _row(5e-3, 512, 7, 0.5, 5e-4, 500, "BN Res"),
    ("chameleon", "gcn"): _row(5e-3, 512, 5, 0.2, 1e-3, 200),
    ("chameleon", "sage"): _row(1e-2, 256, 4, 0.7, 1e-3, 200, "BN Res"),
    ("chameleon", "gat"): _row(1e-2, 256, 2, 0.7, 1e-3, 200, "BN Res"),
    # beyond REFERENCE §2 (sources in the module docstring)
    ("questions", "gcn"): _row(3e-5, 512, 10, 0.3, 0.0, 1500, "Res Pre"),
    ("questions", "sage"): _row(3e-5, 512, 6, 0.2, 0.0, 1500, "LN Pre"),
    ("questions", "gat"): _row(3e-5, 512, 3, 0.2, 0.0, 1500, "LN Res Pre"),
    ("tolokers", "gcn"): _row(3e-5, 512, 3, 0.2, 0.0, 1000, "BN Res"),
    ("tolokers", "sage"): _row(3e-5, 512, 3, 0.2, 0.0, 1000, "BN Res"),
    ("tolokers", "gat"): _row(3e-5, 512, 3, 0.2, 0.0, 1000, "BN Res"),
    ("ogbn-arxiv", "gcn"): _row(5e-4, 512, 5, 0.5, 5e-4, 2000, "BN Res"),
    ("ogbn-arxiv", "sage"): _row(5e-4, 256, 4, 0.5, 5e-4, 2000, "BN Res"),
    ("ogbn-arxiv", "gat"): _row(5e-4, 256, 4, 0.5, 5e-4, 2000, "BN Res"),
}

# every csbm-* dataset, every model
CSBM_PRESET = NodeParams(lr=1e-2, hidden=64, layers=2, dropout=0.5, weight_decay=5e-4, epochs=200)
# A user's dataset (hamgraph.data.plugin) has no protocol: this row, then the grid's
# `overrides:` (a user's model on a built-in dataset uses that dataset's gcn row instead).
# A user's graph-classification dataset: PLUGIN_GRAPH_PRESET (no warmup, no gradient-clip
# change; AdamW as every graph protocol).
PLUGIN_PRESET = NodeParams(lr=1e-2, hidden=64, layers=2, dropout=0.5, weight_decay=5e-4,
                           epochs=200)
PLUGIN_GRAPH_PRESET = GraphParams(lr=1e-3, weight_decay=0.0, hidden=64, layers=3, dropout=0.2,
                                  residual=False, ffn=False, batch_size=32, epochs=50,
                                  warmup_epochs=0)
