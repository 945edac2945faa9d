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


# The base optimizer of each protocol (REFERENCE §2: Adam with coupled weight decay; §3: AdamW
# with decoupled weight decay). It is the default of every grid and sweep, and a run on its
# protocol's base keeps the key it had before the base became a setting.
PROTOCOL_BASE: dict[str, str] = {"NodeParams": "adam", "GraphParams": "adamw"}

BaseOptionValue = float | int | bool | str | tuple[float | int | bool | str, ...]


@dataclass(frozen=True)
class OptimizerSpec:
    """The optimizer of a run: a base optimizer with its options, and HAM on top or not.

    `lr` and `weight_decay` are not options here: they are hyperparameters of the protocol
    (`NodeParams` / `GraphParams`) and reach the base optimizer from there.
    """

    base: str  # "adam" | "adamw" | "sgd" | dotted path of a torch.optim.Optimizer subclass
    base_options: tuple[tuple[str, BaseOptionValue], ...] = ()  # sorted (name, value) pairs
    ham: HamSettings | None = None  # None: the plain base optimizer (a baseline)

    @property
    def kind(self) -> str:
        """"ham" | "nham" with HAM, else the base's short name ("adam", "sgd", "RAdam")."""
        return self.ham.kind if self.ham is not None else self.base.rsplit(".", 1)[-1]

    @property
    def options(self) -> dict[str, BaseOptionValue]:
        return dict(self.base_options)

    def label(self, protocol_base: str | None = None) -> str:
        """Readable and unique: "adam", "sgd(momentum=0.9)", "ham(200, 0.1)",
        "ham(200, 0.1, sign_source=previous)", "ham(200, 0.1) on sgd(momentum=0.9)".

        The base is named for HAM only when it differs from `protocol_base`.
        """
        base = self.base.rsplit(".", 1)[-1] if self.base.startswith("torch.optim.") else self.base
        if self.base_options:
            base += "(" + ", ".join(f"{k}={_show(v)}" for k, v in self.base_options) + ")"
        if self.ham is None:
            return base
        ham = self.ham
        extra = [
            f"{f.name}={getattr(ham, f.name)}"
            for f in dataclasses.fields(HamSettings)
            if f.name not in ("alpha", "beta") and getattr(ham, f.name) != f.default
        ]
        text = f"{ham.kind}({', '.join([f'{ham.alpha:g}', f'{ham.beta:g}', *extra])})"
        if self.base != protocol_base or self.base_options:
            text += f" on {base}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "base_options": {k: list(v) if isinstance(v, tuple) else v
                             for k, v in self.base_options},
            "ham": None if self.ham is None else dataclasses.asdict(self.ham),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizerSpec:
        return cls(
            base=data["base"],
            base_options=normalize_options(data.get("base_options") or {}),
            ham=None if data.get("ham") is None else HamSettings(**data["ham"]),
        )


def normalize_options(options: dict[str, Any]) -> tuple[tuple[str, BaseOptionValue], ...]:
    """Options as the sorted, hashable pairs `OptimizerSpec.base_options` holds."""
    return tuple(
        sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in options.items())
    )


def _show(value: BaseOptionValue) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class RunSpec:
    """One training run: a dataset, a model, its hyperparameters, an optimizer, a seed."""

    dataset: str  # a registry name, e.g. "cora", "csbm-h0.2", "ogbg-molhiv"
    model: str  # "gcn" | "gat" | "sage" | "gcnplus"
    params: NodeParams | GraphParams
    optimizer: OptimizerSpec
    run: int  # index within the protocol's runs; selects the split for multi-split datasets
    seed: int

    @property
    def ham(self) -> HamSettings | None:
        return self.optimizer.ham

    @property
    def protocol_base(self) -> str:
        return PROTOCOL_BASE[type(self.params).__name__]

    @property
    def optimizer_label(self) -> str:
        """The optimizer as shown in summaries and tables, e.g. "ham(200, 0.1)"."""
        return self.optimizer.label(self.protocol_base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "model": self.model,
            "params": dataclasses.asdict(self.params),
            "params_kind": type(self.params).__name__,
            "optimizer": self.optimizer.to_dict(),
            "run": self.run,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        """Reads this version's records and those written before the optimizer was a value
        (a top-level "ham", on the protocol's base)."""
        params_kind = data["params_kind"]
        params_cls = {"NodeParams": NodeParams, "GraphParams": GraphParams}[params_kind]
        params = dict(data["params"])
        params.pop("num_workers", None)  # a DataLoader detail of old records, not a setting
        if "optimizer" in data:
            optimizer = OptimizerSpec.from_dict(data["optimizer"])
        else:
            ham = data.get("ham")
            optimizer = OptimizerSpec(
                base=PROTOCOL_BASE[params_kind],
                ham=None if ham is None else HamSettings(**ham),
            )
        return cls(
            dataset=data["dataset"],
            model=data["model"],
            params=params_cls(**params),
            optimizer=optimizer,
            run=int(data["run"]),
            seed=int(data["seed"]),
        )

    def key(self) -> str:
        """A stable identifier: readable prefix + hash of every setting that changes a number.

        The hashed text keeps the layout of the first release, so runs whose optimizer is the
        protocol's plain base (+ HAM) keep their keys: "ham" at the top level, and the base
        and its options only when they differ from the protocol's.
        """
        blob: dict[str, Any] = {
            "dataset": self.dataset,
            "model": self.model,
            "params": dataclasses.asdict(self.params),
            "params_kind": type(self.params).__name__,
            "ham": None if self.ham is None else dataclasses.asdict(self.ham),
            "run": self.run,
            "seed": self.seed,
        }
        if isinstance(self.params, GraphParams):
            # DataLoader workers do not change a number; hashed as the old field's only value
            blob["params"]["num_workers"] = 0
        if self.optimizer.base != self.protocol_base or self.optimizer.base_options:
            blob["base"] = self.optimizer.base
            blob["base_options"] = self.optimizer.to_dict()["base_options"]
            prefix = self.optimizer.kind
        else:  # the first release named every protocol-base baseline "adam" (AdamW included)
            prefix = "adam" if self.ham is None else self.ham.kind
        text = json.dumps(blob, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        return f"{self.dataset}-{self.model}-{prefix}-run{self.run}-{digest}"


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
    # training time spent so far in the run (s), evaluation excluded; NaN: not measured (old runs)
    train_seconds: float = math.nan


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
    # versions, git commit, device, start / finish time (set by the runner: `hamgraph.provenance`)
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok" and math.isfinite(self.val) and math.isfinite(self.test)


NodeEncoderName = Literal["atom", "ppa", "ast"]  # OGB AtomEncoder | one learned vector | AST
EdgeEncoderName = Literal["bond", "ppa", "ast"]  # OGB BondEncoder | Linear(7, d) | type + dir
HeadName = Literal["mlp", "ppa", "sequence"]  # MLP | Lin-ReLU-L2norm-Lin | one Linear per token
TargetName = Literal["binary", "multiclass", "sequence"]  # what the loss and evaluation read


@dataclass(frozen=True)
class GraphTask:
    """What a graph model (and its loss) needs to know of its task: no dataset object.

    The data layer builds it from its per-kind table (`hamgraph.data.ogbg.GRAPH_KINDS`) and the
    sizes known after loading; the model builder and the trainer only read it.
    """

    node_encoder: NodeEncoderName
    edge_encoder: EdgeEncoderName
    head: HeadName
    target: TargetName  # binary: multi-task 0/1 with NaN = unlabeled; sequence: seq_len tokens
    num_outputs: int  # per graph (tasks; classes; or, per token, the vocabulary size)
    head_layers: int = 1  # "mlp": Linear layers, widths halving (3: d, d/2, d/4 -> out)
    seq_len: int = 1  # "sequence": tokens predicted per graph
    num_node_types: int = 0  # "ast": node type vocabulary
    num_node_attributes: int = 0  # "ast": node attribute vocabulary
    rwse_steps: int = 0  # > 0: every graph carries `rwse` [num_nodes, rwse_steps]
