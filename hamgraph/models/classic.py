"""Classic node-classification GNNs (GCN, GATv2, GraphSAGE) of the "classic GNNs are strong
baselines" protocol (REFERENCE §2), shaped like PyG's `basic_gnn.py`: one base class, one hook
(`init_conv`) that makes a convolution, capabilities as class attributes.

    [pre-linear -> dropout] -> L x (conv (+ residual Linear) -> norm -> ReLU -> dropout) -> Linear

The graph is prepared once per run (`prepare_graph`, `prepare_features`), not per forward:
self loops are already in the graph, GCN gets the symmetric-normalized adjacency as a sparse CSR
matrix, SAGE the plain adjacency (mean reduce), GAT the edge index. Every tensor the convs see
is computed once, so an epoch is only matrix products.

Known limits: the sparse adjacency is PyG's `adj_t` (row = target node; `prepare_graph`
transposes the edge index accordingly). GCN's propagation backward reuses the adjacency as its
own transpose (no per-step transpose), so GCN requires an undirected graph, as every protocol
graph is; `GCN.prepare_graph` raises ValueError otherwise. Low-density features are kept as a
sparse CSR matrix for GCN / GAT (and any model with a pre-linear): same numbers up to float
rounding order, a much cheaper first matrix product.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GATv2Conv, GCNConv, SAGEConv
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor

from hamgraph.errors import UnknownNameError
from hamgraph.specs import Norm

GraphFormat = Literal["gcn_norm_csr", "csr", "edge_index"]

NORMS: tuple[str, ...] = ("none", "layer", "batch")
# Features whose fraction of non-zeros is below this are kept as a sparse CSR matrix (bag of
# words: cora is 1.3% dense), so the first matrix product costs nnz instead of N x F.
SPARSE_FEATURE_DENSITY = 0.1


def dropout_mask(
    shape: tuple[int, ...] | torch.Size,
    p: float,
    generator: torch.Generator | None,
    *,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """The keep mask of one dropout site: uniform draws from `generator` (the run's own; None:
    torch's global generator), kept where >= p. The same call on CPU and CUDA, so a run's masks
    depend only on its generator's seed and the shapes drawn, in order: the packed trainer draws
    each model's mask with exactly this call and gets bit-identical masks."""
    return torch.rand(shape, generator=generator, device=device, dtype=dtype) >= p


def apply_dropout_mask(x: Tensor, keep: Tensor, p: float) -> Tensor:
    """Inverted dropout with a given keep mask (broadcastable to x)."""
    return x * keep * (1.0 / (1.0 - p))


def dropout(
    x: Tensor, p: float, training: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Inverted dropout whose mask is drawn from `generator` (see `dropout_mask`).

    A uniform-threshold mask rather than `F.dropout`: on the CPU about 3x faster (Bernoulli
    sampling dominates a small full-batch epoch there), and on every device the stream is the
    run's own generator, which is what lets a packed run reproduce its single run exactly.
    """
    if not training or p == 0.0:
        return x
    keep = dropout_mask(x.shape, p, generator, device=x.device, dtype=x.dtype)
    return apply_dropout_mask(x, keep, p)


def resolve_norm(name: str, dim: int) -> nn.Module:
    """"none" | "layer" | "batch" -> the module (Identity for "none")."""
    if name == "none":
        return nn.Identity()
    if name == "layer":
        return nn.LayerNorm(dim)
    if name == "batch":
        return nn.BatchNorm1d(dim)
    raise UnknownNameError(f"unknown norm {name!r}; valid names: {', '.join(NORMS)}")


class ClassicGNN(nn.Module):
    """The shared body; subclasses only say how to make one convolution.

    Args:
        in_dim: input feature width.
        num_classes: output width (logits).
        hidden: width of every hidden layer.
        layers: number of convolutions (>= 1).
        dropout: dropout after the pre-linear and after every layer.
        norm: "none" | "layer" | "batch", after each convolution (+ residual).
        residual: add `Linear(x)` of the layer input to each convolution's output.
        pre_linear: `Linear(in_dim, hidden)` + dropout before the first convolution; without
            it the first convolution (and its residual Linear) maps in_dim -> hidden.
    """

    name: ClassVar[str]
    graph_format: ClassVar[GraphFormat] = "edge_index"  # what `forward` takes as `graph`
    accepts_sparse_features: ClassVar[bool] = False  # first conv multiplies x by a weight first

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        *,
        hidden: int,
        layers: int,
        dropout: float,
        norm: Norm = "none",
        residual: bool = False,
        pre_linear: bool = False,
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers must be >= 1, got {layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout
        self.residual = residual
        self.pre_linear = nn.Linear(in_dim, hidden) if pre_linear else None
        self.convs = nn.ModuleList()
        self.res_linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = hidden if pre_linear else in_dim
        for _ in range(layers):
            self.convs.append(self.init_conv(width, hidden))
            if residual:
                self.res_linears.append(nn.Linear(width, hidden))
            self.norms.append(resolve_norm(norm, hidden))
            width = hidden
        self.head = nn.Linear(hidden, num_classes)

    def init_conv(self, in_dim: int, out_dim: int) -> MessagePassing:
        """The one hook: a convolution from `in_dim` to `out_dim` channels."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, graph: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """Logits [N, classes]. `generator` draws the dropout masks (the run's own; None:
        torch's global generator)."""
        if self.pre_linear is not None:
            x = dropout(self.pre_linear(x), self.dropout, self.training, generator)
        for i, conv in enumerate(self.convs):
            out = conv(x, graph)
            if self.residual:
                out = out + self.res_linears[i](x)
            x = dropout(F.relu(self.norms[i](out)), self.dropout, self.training, generator)
        return self.head(x)

    # -- inputs, prepared once per run ---------------------------------------------------------

    @classmethod
    def prepare_graph(cls, edge_index: Tensor, num_nodes: int) -> Tensor:
        """Edge index WITH self loops -> the graph argument of `forward` (see `graph_format`)."""
        if cls.graph_format == "edge_index":
            return edge_index
        weight = None
        if cls.graph_format == "gcn_norm_csr":
            edge_index, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=False)
        # PyG reads a sparse matrix as adj_t: row = target (edge_index[1]), column = source
        with _quiet_sparse_beta():
            return to_torch_csr_tensor(edge_index.flip(0), weight, size=(num_nodes, num_nodes))

    def prepare_features(self, x: Tensor) -> Tensor:
        """Low-density features become sparse CSR when the first layer can take them.

        Same numbers, different layout: only the first matrix product changes (one host
        sync here, once per run, to measure the density).
        """
        takes_sparse = self.pre_linear is not None or self.accepts_sparse_features
        if takes_sparse and x.dim() == 2 and x.numel() > 0:
            density = torch.count_nonzero(x).item() / x.numel()
            if density < SPARSE_FEATURE_DENSITY:
                with _quiet_sparse_beta():
                    return x.to_sparse_csr()
        return x


@contextmanager
def _quiet_sparse_beta() -> Iterator[None]:
    """torch warns that sparse CSR is "in beta"; the paths used here are tested."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly")
        yield


class _SymmetricSpmm(torch.autograd.Function):
    """A @ x for a symmetric sparse A: the backward is A @ grad, no transpose of A per step."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(adj)
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, Tensor]:
        (adj,) = ctx.saved_tensors
        return None, torch.sparse.mm(adj, grad)


class SymmetricGCNConv(GCNConv):
    """GCNConv whose propagation on a sparse adjacency assumes it is symmetric (undirected
    graph, symmetric normalization), which `GCN.prepare_graph` checks once per run."""

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:
        if isinstance(adj_t, Tensor) and adj_t.layout == torch.sparse_csr:
            return _SymmetricSpmm.apply(adj_t, x)
        return super().message_and_aggregate(adj_t, x)


class GCN(ClassicGNN):
    """GCNConv on the symmetric-normalized adjacency D^-1/2 (A + I) D^-1/2, computed once."""

    name = "gcn"
    graph_format = "gcn_norm_csr"
    accepts_sparse_features = True

    def init_conv(self, in_dim: int, out_dim: int) -> MessagePassing:
        # normalize=False: the adjacency passed in is already normalized (and has self loops)
        return SymmetricGCNConv(in_dim, out_dim, normalize=False, add_self_loops=False)

    @classmethod
    def prepare_graph(cls, edge_index: Tensor, num_nodes: int) -> Tensor:
        """The normalized adjacency; raises ValueError for a directed graph (see the conv)."""
        adjacency = super().prepare_graph(edge_index, num_nodes)
        with _quiet_sparse_beta():
            transposed = adjacency.t().to_sparse_csr()
        same = torch.equal(adjacency.crow_indices(), transposed.crow_indices()) and torch.equal(
            adjacency.col_indices(), transposed.col_indices()
        )
        if not same or not torch.allclose(adjacency.values(), transposed.values()):
            raise ValueError("GCN expects an undirected graph (symmetric adjacency)")
        return adjacency


class SAGE(ClassicGNN):
    """SAGEConv with mean aggregation (over neighbours incl. the self loop, as in the protocol)."""

    name = "sage"
    graph_format = "csr"
    accepts_sparse_features = False  # SAGEConv aggregates x before its Linear

    def init_conv(self, in_dim: int, out_dim: int) -> MessagePassing:
        return SAGEConv(in_dim, out_dim, aggr="mean")


class GAT(ClassicGNN):
    """GATv2Conv, 1 head, no conv bias, no conv self loops (the graph has them)."""

    name = "gat"
    graph_format = "edge_index"
    accepts_sparse_features = True

    def init_conv(self, in_dim: int, out_dim: int) -> MessagePassing:
        return GATv2Conv(in_dim, out_dim, heads=1, bias=False, add_self_loops=False)


CLASSIC_MODELS: dict[str, type[ClassicGNN]] = {cls.name: cls for cls in (GCN, GAT, SAGE)}
