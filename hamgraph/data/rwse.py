"""Random-walk structural encodings (RWSE): diag(P^k) for k = 1..steps, with P = D^-1 A.

`A[i, j]` counts the edges i -> j, `D` is the out-degree; a node without out-edges has a zero
row in P (so its return probabilities are 0, as in GraphGPS). The encodings depend only on the
graph, so they are computed once per dataset and step count and cached on disk
(`cached_rwse`).

Small graphs (<= DENSE_MAX_NODES nodes) are computed dense, many at once: graphs of similar
size are padded into a batch [B, n, n] and multiplied with `torch.bmm`. Larger graphs never
build a dense N x N matrix: P^k e_j is propagated with a sparse matmul for a block of columns
j at a time, and the diagonal entries are read off (memory O(N * block)).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import Tensor

from hamgraph.atomic import atomic_path

log = logging.getLogger(__name__)

__all__ = ["cached_rwse", "rwse_all", "rwse_dense", "rwse_sparse"]

DENSE_MAX_NODES = 512  # graphs above this size use the sparse path
DENSE_BATCH_ENTRIES = 4_000_000  # padded entries (B * n * n) per dense batch
SPARSE_BLOCK = 256  # columns propagated together on the sparse path


def _transition(edge_index: Tensor, num_nodes: int) -> tuple[Tensor, Tensor, Tensor]:
    """Rows, columns and values of P = D^-1 A (duplicate edges add up)."""
    row, col = edge_index[0], edge_index[1]
    deg = torch.zeros(num_nodes, dtype=torch.float64).index_add_(
        0, row, torch.ones(row.numel(), dtype=torch.float64)
    )
    inv = torch.where(deg > 0, 1.0 / deg.clamp(min=1.0), torch.zeros_like(deg))
    return row, col, inv[row]


def rwse_dense(edge_index: Tensor, num_nodes: int, steps: int) -> Tensor:
    """Reference: diag(P^k), k = 1..steps, with a dense [N, N] matrix ([N, steps] float32)."""
    row, col, val = _transition(edge_index, num_nodes)
    p = torch.zeros(num_nodes, num_nodes, dtype=torch.float64)
    p.index_put_((row, col), val, accumulate=True)
    out, pk = [], p
    for _ in range(steps):
        out.append(torch.diagonal(pk))
        pk = pk @ p
    return torch.stack(out, dim=1).float() if out else torch.zeros(num_nodes, 0)


def rwse_sparse(
    edge_index: Tensor, num_nodes: int, steps: int, block: int = SPARSE_BLOCK
) -> Tensor:
    """diag(P^k) without a dense N x N matrix: P^k e_j for `block` columns j at a time."""
    row, col, val = _transition(edge_index, num_nodes)
    p = torch.sparse_coo_tensor(
        torch.stack([row, col]), val, (num_nodes, num_nodes), check_invariants=False
    ).coalesce()
    out = torch.zeros(num_nodes, steps, dtype=torch.float64)
    for start in range(0, num_nodes, block):
        cols = torch.arange(start, min(start + block, num_nodes))
        x = torch.zeros(num_nodes, cols.numel(), dtype=torch.float64)
        x[cols, torch.arange(cols.numel())] = 1.0
        for k in range(steps):
            x = torch.sparse.mm(p, x)  # column j of P^(k+1)
            out[cols, k] = x[cols, torch.arange(cols.numel())]
    return out.float()


def _dense_batch(graphs: list[tuple[Tensor, int]], steps: int) -> list[Tensor]:
    """rwse_dense for several small graphs at once (padded to the largest, batched matmul)."""
    size = max(n for _, n in graphs)
    p = torch.zeros(len(graphs), size, size, dtype=torch.float64)
    for b, (edge_index, n) in enumerate(graphs):
        row, col, val = _transition(edge_index, n)
        p[b].index_put_((row, col), val, accumulate=True)
    diags, pk = [], p
    for _ in range(steps):
        diags.append(torch.diagonal(pk, dim1=1, dim2=2))
        pk = torch.bmm(pk, p)
    stacked = torch.stack(diags, dim=2).float()  # [B, size, steps]
    return [stacked[b, :n] for b, (_, n) in enumerate(graphs)]


def rwse_all(edge_index: Tensor, edge_slices: Tensor, node_slices: Tensor, steps: int) -> Tensor:
    """RWSE of every graph of a collated dataset (graph-local edge indices, as OGB stores them).

    `edge_slices` / `node_slices` [G + 1] are the offsets of each graph's edges / nodes.
    Returns [total nodes, steps] float32 in the dataset's node order.
    """
    num_graphs = node_slices.numel() - 1
    sizes = (node_slices[1:] - node_slices[:-1]).tolist()
    es = edge_slices.tolist()
    ns = node_slices.tolist()
    out = torch.zeros(int(ns[-1]), steps)
    order = sorted(range(num_graphs), key=lambda g: sizes[g])
    pending: list[int] = []

    def flush() -> None:
        if not pending:
            return
        graphs = [(edge_index[:, es[g] : es[g + 1]], sizes[g]) for g in pending]
        for g, pe in zip(pending, _dense_batch(graphs, steps), strict=True):
            out[ns[g] : ns[g + 1]] = pe
        pending.clear()

    for g in order:
        n = sizes[g]
        if n == 0:
            continue
        if n > DENSE_MAX_NODES:
            flush()
            out[ns[g] : ns[g + 1]] = rwse_sparse(edge_index[:, es[g] : es[g + 1]], n, steps)
            continue
        if (len(pending) + 1) * n * n > DENSE_BATCH_ENTRIES:
            flush()
        pending.append(g)
    flush()
    return out


def cached_rwse(
    path: Path, *, edge_index: Tensor, edge_slices: Tensor, node_slices: Tensor, steps: int
) -> Tensor:
    """`rwse_all`, read from `path` when a matching result is there, else computed and saved.

    The file records the step count and a hash of the graphs; a mismatch (the processed
    dataset changed) recomputes. Written atomically (temp file + os.replace). Concurrent
    callers should hold the dataset's lock, otherwise both may compute (still correct).
    """
    digest = hashlib.sha256()
    for tensor in (node_slices, edge_slices, edge_index):
        digest.update(tensor.detach().cpu().contiguous().to(torch.int64).numpy().tobytes())
    fingerprint = {
        "steps": int(steps),
        "num_graphs": int(node_slices.numel() - 1),
        "graphs_sha256": digest.hexdigest(),  # node / edge offsets and the edges themselves
    }
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            if saved.get("fingerprint") == fingerprint:
                return saved["pe"]
            log.info("RWSE cache %s is stale, recomputing", path)
        except (OSError, RuntimeError, EOFError, AttributeError) as exc:
            log.warning("RWSE cache %s is unreadable (%s), recomputing", path, exc)
    log.info("computing RWSE (%d steps) for %d graphs", steps, fingerprint["num_graphs"])
    pe = rwse_all(edge_index, edge_slices, node_slices, steps)
    with atomic_path(path) as tmp:
        torch.save({"fingerprint": fingerprint, "pe": pe}, tmp)
    return pe
