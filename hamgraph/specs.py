"""Small typed values passed between the stages: RunSpec in, RunResult out.

    YAML -> config -> RunSpec -> trainer -> RunResult -> result store -> report

Every field that changes what a run computes is part of `RunSpec.key()`, so a result is only
ever reused (resume) for exactly the same settings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Norm = Literal["none", "layer", "batch"]
SignSource = Literal["current", "previous"]
RunStatus = Literal["ok", "failed"]


@dataclass(frozen=True)
class HamSettings:
    """The hyperbolic step that follows each base-optimizer step (REFERENCE §1)."""

    alpha: float  # > 0: HAM, < 0: nHAM, 0: only the beta shrinkage
    beta: float  # multiplicative shrinkage, like a weight decay proportional to the weight
    clamp: float = 5.0  # |exponent| is clamped to this, as in the paper
    mask_beta: bool = True  # no beta shrinkage where the gradient is exactly zero (dropout)
    sign_source: SignSource = "current"  # "previous" = the "HAM signed" ablation

    @property
    def kind(self) -> Literal["ham", "nham"]:
        return "nham" if self.alpha < 0 else "ham"


@dataclass(frozen=True)
class NodeParams:
    """Hyperparameters of a full-batch node-classification run (REFERENCE §2)."""

    lr: float
    hidden: int
    layers: int
    dropout: float
    weight_decay: float  # coupled (Adam's weight_decay), as in the reference code
    epochs: int
    norm: Norm = "none"
    residual: bool = False
    pre_linear: bool = False


@dataclass(frozen=True)
class GraphParams:
    """Hyperparameters of a mini-batch graph-classification run with GCN+ (REFERENCE §3)."""

    lr: float
    weight_decay: float  # AdamW (decoupled)
    hidden: int
    layers: int
    dropout: float
    residual: bool
    ffn: bool
    batch_size: int
    epochs: int
    warmup_epochs: int
    rwse_steps: int = 0  # 0: no RWSE positional encoding
    pe_dim: int = 0  # width of the RWSE projection concatenated to the node embedding
    grad_clip: float = 1.0
    num_workers: int = 0  # DataLoader worker processes


@dataclass(frozen=True)
class RunSpec:
    """One training run: a dataset, a model, its hyperparameters, an optimizer, a seed."""

    dataset: str  # a registry name, e.g. "cora", "csbm-h0.2", "ogbg-molhiv"
    model: str  # "gcn" | "gat" | "sage" | "gcnplus"
    params: NodeParams | GraphParams
    ham: HamSettings | None  # None: the plain base optimizer (the baseline)
    run: int  # index within the protocol's runs; selects the split for multi-split datasets
    seed: int

    @property
    def optimizer(self) -> Literal["adam", "ham", "nham"]:
        """The optimizer label of result tables ("adam" also stands for AdamW on graph runs)."""
        return "adam" if self.ham is None else self.ham.kind

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["params_kind"] = type(self.params).__name__
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        params_cls = {"NodeParams": NodeParams, "GraphParams": GraphParams}[data.pop("params_kind")]
        ham = data.pop("ham")
        return cls(
            params=params_cls(**data.pop("params")),
            ham=None if ham is None else HamSettings(**ham),
            **data,
        )

    def key(self) -> str:
        """A stable identifier: readable prefix + hash of every setting."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
        return f"{self.dataset}-{self.model}-{self.optimizer}-run{self.run}-{digest}"


@dataclass(frozen=True)
class EpochStats:
    """What one epoch left behind. Diagnostics are over the HAM-targeted weights (all runs)."""

    epoch: int  # 1-based
    loss: float  # mean training loss
    train: float  # train metric (node runs; NaN for graph runs, not evaluated there)
    val: float
    test: float
    lr: float
    sign_flips: int  # HAM-targeted weights whose sign changed since the previous epoch
    mean_abs_weight: float  # mean |w| over the HAM-targeted weights


@dataclass
class RunResult:
    """The outcome of one RunSpec. `val`/`test` are at the first epoch with the best validation."""

    spec: RunSpec
    metric: str  # "accuracy" | "rocauc" | "ap" | "f1"
    status: RunStatus
    val: float
    test: float
    best_epoch: int  # 1-based; 0 when no epoch finished
    epochs: int  # epochs actually completed
    seconds: float
    reason: str = ""  # why a failed run failed
    history: list[EpochStats] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and math.isfinite(self.val) and math.isfinite(self.test)
