"""M copies of one ClassicGNN architecture trained as one model (HFTA-style packing).

Every weight of the single model becomes one parameter with a leading model dimension M, so a
dense layer of all M models is one batched matmul `[M, N, F] x [M, F, F']`, and message passing,
being linear in the features, is one sparse product / scatter over the stacked features
`[N, M * F]` with the graph shared by all models. Activations are `[M, N, F]`.

    [pre-linear -> dropout] -> L x (conv (+ residual Linear) -> norm -> ReLU -> dropout) -> Linear

Exactness: `PackedGNN.from_models(models)` stacks the parameters (and BatchNorm statistics)
of M already-initialized single models, so the initialization is bit-identical; model m's
dropout masks are drawn from generator m with exactly the call of the single run
(`classic.dropout_mask` of shape [N, F]), so the masks are bit-identical too. What remains are
rounding differences of a different order of summation (float64: below 1e-12 relative).

Every parameter is stored under the name of its single-model parameter (dots -> "__"), in the
single model's `named_parameters()` order; `ham_target_params()` are the stacked parameters of
the single model's HAM targets (everything under a MessagePassing module).

Models are independent: no operation mixes the columns of two models, so a model whose weights
became NaN does not affect the others (the trainer freezes it).

The shared input (features `[N, F]`, dense or sparse CSR) enters the first layer as one
`[N, F] x [F, M * F']` product, without copying it M times.

`torch.vmap` is not used: PyG's scatter / sparse kernels have no batching rules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import scatter, softmax, spmm

from hamgraph.models.classic import (
    ClassicGNN,
    _SymmetricSpmm,
    apply_dropout_mask,
)
from hamgraph.optim.groups import ham_target_names

__all__ = ["PackedGNN"]

LN_EPS = 1e-5  # nn.LayerNorm / nn.BatchNorm1d defaults, as in the single model
BN_EPS = 1e-5
BN_MOMENTUM = 0.1
GAT_NEGATIVE_SLOPE = 0.2  # GATv2Conv's default


def _key(name: str) -> str:
    return name.replace(".", "__")


class PackedGNN(nn.Module):
    """M ClassicGNNs of one architecture as one module. Build with `from_models`.

    `forward(x, graph, generators)` -> logits [M, N, classes]. `x` is the shared feature matrix
    [N, F] (dense or sparse CSR, as `ClassicGNN.prepare_features` made it); `graph` is what
    the single model's `prepare_graph` made; `generators[m]` draws model m's dropout masks.
    """

    def __init__(self, models: Sequence[ClassicGNN]) -> None:
        super().__init__()
        if not models:
            raise ValueError("a pack needs at least one model")
        first = models[0]
        names = [n for n, _ in first.named_parameters()]
        for i, model in enumerate(models):
            if type(model) is not type(first) or [n for n, _ in model.named_parameters()] != names:
                raise ValueError(f"model {i} of the pack differs in architecture from model 0")
            shapes = [p.shape for p in model.parameters()]
            if shapes != [p.shape for p in first.parameters()]:
                raise ValueError(f"model {i} of the pack differs in parameter shapes")
        self.kind = first.name
        self.size = len(models)
        self.p = first.dropout
        self.residual = first.residual
        self.has_pre_linear = first.pre_linear is not None
        self.layers = len(first.convs)
        norm = first.norms[0]
        self.norm = (
            "batch" if isinstance(norm, nn.BatchNorm1d)
            else "layer" if isinstance(norm, nn.LayerNorm)
            else "none"
        )
        self.weights = nn.ParameterDict()
        with torch.no_grad():
            for name in names:
                stacked = torch.stack([dict(m.named_parameters())[name].detach() for m in models])
                self.weights[_key(name)] = nn.Parameter(stacked.clone())
            for name, _ in first.named_buffers():
                if name.endswith("num_batches_tracked"):
                    continue  # momentum is fixed (0.1): never read
                stacked = torch.stack([dict(m.named_buffers())[name] for m in models]).clone()
                self.register_buffer(_key(name), stacked)
        self._ham_names = ham_target_names(first)

    @classmethod
    def from_models(cls, models: Sequence[ClassicGNN]) -> PackedGNN:
        return cls(models)

    # -- parameters ------------------------------------------------------------------------------

    def w(self, name: str) -> Tensor:
        """The stacked parameter of the single model's parameter `name`, e.g. "head.weight"."""
        return self.weights[_key(name)]

    def ham_target_params(self) -> list[nn.Parameter]:
        """The stacked HAM targets, in the single model's `ham_target_params` order."""
        return [self.weights[_key(n)] for n in self._ham_names]

    def single_state(self, m: int) -> dict[str, Tensor]:
        """Model m's parameters and buffers under the single model's names (for tests)."""
        out = {name.replace("__", "."): p[m] for name, p in self.weights.items()}
        for name, buf in self.named_buffers():
            out[name.replace("__", ".")] = buf[m]
        return out

    # -- building blocks -----------------------------------------------------------------------

    def _linear(self, h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """Per-model Linear: h [M, N, I] (or the shared [N, I]) x weight [M, O, I] -> [M, N, O]."""
        m, out_dim, in_dim = weight.shape
        if h.dim() == 2 and h.layout != torch.strided and h.device.type == "cpu":
            # sparse features on CPU: one product with the [I, M * O] weights is about 2x
            # slower there than M products as the single runs do them (measured, cora);
            # unbind, not weight[i]: one backward stack instead of M weight-sized zero fills
            out = torch.stack([F.linear(h, w) for w in weight.unbind(0)])
        elif h.dim() == 2:  # the shared input [N, I] (dense or sparse CSR): one product
            stacked = weight.permute(2, 0, 1).reshape(in_dim, m * out_dim)
            out = (h @ stacked).view(-1, m, out_dim).transpose(0, 1)
        else:
            out = torch.bmm(h, weight.transpose(1, 2))
        return out if bias is None else out + bias.unsqueeze(1)

    def _propagate(self, h: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:
        """Apply a node-wise linear graph operator `fn([N, K]) -> [N, K]` to every model at once
        (one product over [N, M * F]); h is [M, N, F] or the shared [N, F]."""
        if h.dim() == 2:
            return fn(h)
        m, n, f = h.shape
        out = fn(h.transpose(0, 1).reshape(n, m * f))
        return out.view(n, m, f).transpose(0, 1)

    def _conv(self, i: int, h: Tensor, graph: Tensor) -> Tensor:
        pre = f"convs.{i}."
        if self.kind == "gcn":  # A (h W^T) + b
            hw = self._linear(h, self.w(pre + "lin.weight"), None)
            out = self._propagate(hw, lambda z: _SymmetricSpmm.apply(graph, z))
            return out + self.w(pre + "bias").unsqueeze(1)
        if self.kind == "sage":  # lin_l(mean_j h_j) + lin_r(h)
            agg = self._propagate(h, lambda z: spmm(graph, z, reduce="mean"))
            out = self._linear(agg, self.w(pre + "lin_l.weight"), self.w(pre + "lin_l.bias"))
            return out + self._linear(h, self.w(pre + "lin_r.weight"), None)
        if self.kind == "gat":
            return self._gatv2(h, graph, pre)
        raise ValueError(f"no packed convolution for model {self.kind!r}")

    def _gatv2(self, h: Tensor, edge_index: Tensor, pre: str) -> Tensor:
        """GATv2Conv(heads=1, bias=False, add_self_loops=False), one attention per model:
        e_ij = att . leaky_relu(W_r h_i + W_l h_j), softmax over j -> sum_j a_ij W_l h_j."""
        x_l = self._linear(h, self.w(pre + "lin_l.weight"), None).transpose(0, 1)  # [N, M, H]
        x_r = self._linear(h, self.w(pre + "lin_r.weight"), None).transpose(0, 1)
        src, dst = edge_index[0], edge_index[1]
        n, m, hidden = x_l.shape
        x_j = x_l.index_select(0, src)  # [E, M, H]
        e = F.leaky_relu(x_j + x_r.index_select(0, dst), GAT_NEGATIVE_SLOPE)
        att = self.w(pre + "att").reshape(1, m, hidden)
        alpha = softmax((e * att).sum(dim=-1), dst, num_nodes=n)  # [E, M]
        out = scatter(x_j * alpha.unsqueeze(-1), dst, dim=0, dim_size=n, reduce="sum")
        return out.transpose(0, 1)  # [M, N, H]

    def _norm(self, i: int, h: Tensor) -> Tensor:
        if self.norm == "none":
            return h
        weight, bias = self.w(f"norms.{i}.weight"), self.w(f"norms.{i}.bias")
        if self.norm == "layer":
            out = F.layer_norm(h, (h.shape[-1],), eps=LN_EPS)
            return out * weight.unsqueeze(1) + bias.unsqueeze(1)
        # BatchNorm per model and feature = BatchNorm1d over the M * H columns of [N, M * H];
        # the running statistics are views of the [M, H] buffers (updated in place)
        mean = getattr(self, _key(f"norms.{i}.running_mean"))
        var = getattr(self, _key(f"norms.{i}.running_var"))
        m, n, hidden = h.shape
        out = F.batch_norm(
            h.transpose(0, 1).reshape(n, m * hidden),
            mean.view(-1),
            var.view(-1),
            weight.reshape(-1),
            bias.reshape(-1),
            self.training,
            BN_MOMENTUM,
            BN_EPS,
        )
        return out.view(n, m, hidden).transpose(0, 1)

    def _dropout(self, h: Tensor, generators: Sequence[torch.Generator] | None) -> Tensor:
        """Model m's mask from generator m, drawn as the single run draws it
        (`classic.dropout_mask`: uniform [N, F] in the activation's dtype, kept where >= p).

        M small draws instead of one [M, N, F] draw: one draw cannot come from M generators,
        and the draw is cheap next to the layer it follows.
        """
        if not self.training or self.p == 0.0:
            return h
        if generators is None or len(generators) != h.shape[0]:
            raise ValueError(f"training a pack of {h.shape[0]} models needs as many generators")
        noise = torch.empty(h.shape, device=h.device, dtype=h.dtype)
        for m, generator in enumerate(generators):  # the single run's draw, into row m
            torch.rand(h.shape[1:], generator=generator, out=noise[m])
        return apply_dropout_mask(h, noise >= self.p, self.p)

    def forward(
        self, x: Tensor, graph: Tensor, generators: Sequence[torch.Generator] | None = None
    ) -> Tensor:
        h = x
        if self.has_pre_linear:
            h = self._linear(h, self.w("pre_linear.weight"), self.w("pre_linear.bias"))
            h = self._dropout(h, generators)
        for i in range(self.layers):
            out = self._conv(i, h, graph)
            if self.residual:
                res_w, res_b = self.w(f"res_linears.{i}.weight"), self.w(f"res_linears.{i}.bias")
                out = out + self._linear(h, res_w, res_b)
            h = self._dropout(F.relu(self._norm(i, out)), generators)
        return self._linear(h, self.w("head.weight"), self.w("head.bias"))
