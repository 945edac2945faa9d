"""Search spaces: what the trials of a study may try. One class per `kind:` of `search:`.

Every kind is one `SearchSpace` subclass (the schema of its `search:` block and its behaviour):

    cells()        the finite list of cells (grid) or None (an open space)
    suggest()      the cell of a trial (asks the trial's sampler)
    make_sampler() the Optuna sampler of a worker; make_pruner(): the pruner (Nop: none)
    budget()       evaluated trials per study; prepare(): what a new study needs (a baseline)

A new kind is a new subclass here plus its entry in `Space` (the tagged union of the file).

Kinds (REFERENCE §1):
- `grid`: the paper grid, every (alpha, beta) cell plus the baseline cell exactly once, with
  Optuna's GridSampler over ONE categorical parameter `cell` whose values read "adam",
  "a=200,b=0.1", ... (a product over alpha x beta cannot hold a baseline without alpha/beta).
- `tpe`: |alpha| log-uniform in [min, max] with a sign choice (`ham`, `nham`), beta uniform
  (or log) in [min, max], seeded TPE with `constant_liar` (several trials are asked at once),
  optional MedianPruner. The baseline is an enqueued trial without parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Annotated, Any, ClassVar, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import Field, Strict, field_validator, model_validator

from hamgraph.config import StrictModel
from hamgraph.specs import HamSettings

BASELINE = "adam"  # the baseline cell's label when the sweep keeps the protocol's base
CELL = "cell"  # the grid's one parameter, and every trial's user attribute naming its cell
GRID_SAMPLER_SEED = 0  # the same in every worker: GridSampler shuffles its grid with it
MEDIAN_STARTUP_TRIALS = 5  # MedianPruner: trials before pruning starts
TPE_BATCH = 8  # TPE trials asked at once by default (constant liar keeps them apart)

Number = Annotated[float, Strict()]


def fmt(x: float) -> str:
    return f"{x:.6g}"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a study's space: the baseline (ham None) or an (alpha, beta) pair.

    The base optimizer is the sweep's (one per study), so within a study the label is the key
    of the cell: `baseline` (e.g. "adam", "sgd(momentum=0.9)") or "a=200,b=0.1".
    """

    ham: HamSettings | None
    baseline: str = BASELINE

    @property
    def label(self) -> str:
        if self.ham is None:
            return self.baseline
        return f"a={fmt(self.ham.alpha)},b={fmt(self.ham.beta)}"


def cell_from_label(label: str, baseline: str = BASELINE) -> Cell:
    if label == baseline:
        return Cell(None, baseline)
    a, b = (part.split("=", 1)[1] for part in label.split(","))
    return Cell(HamSettings(alpha=float(a), beta=float(b)), baseline)


def cell_of_trial(trial: FrozenTrial, baseline: str = BASELINE) -> Cell | None:
    """The cell a trial tried (from its user attributes); None before it chose one."""
    attrs = trial.user_attrs
    if CELL not in attrs:
        return None
    if attrs.get("alpha") is None:
        return Cell(None, baseline)
    return Cell(HamSettings(alpha=float(attrs["alpha"]), beta=float(attrs["beta"])), baseline)


def node_id() -> str:
    """This process's place in a Slurm job: array task and step task ("0.0" elsewhere)."""
    array = os.environ.get("SLURM_ARRAY_TASK_ID", "0")
    proc = os.environ.get("SLURM_PROCID", "0")
    return f"{array}.{proc}"


def worker_seed(seed: int, worker: int, node: str, offset: int) -> int:
    """The TPE seed of one worker: `seed` itself for the first worker of the first node on a
    fresh study, else a hash of (seed, worker, node, trials finished so far).

    The finished-trial count keeps a resumed sweep from replaying the suggestions of the
    previous one (they would only be pruned as duplicates); a queued baseline does not count.
    """
    if (worker, node, offset) == (0, "0.0", 0):
        return seed
    text = f"{seed}-{worker}-{node}-{offset}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: Optuna's `after_trial` calls `study.stop()`, which raises
    outside `study.optimize`; the sweep's own loop decides when a study is done."""

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        return None


class SearchSpace(StrictModel):
    """The interface of every kind (the base is never a `search:` block itself)."""

    kind: str
    include_baseline: bool = True  # the baseline cell, so every study holds its own reference
    batch: int | None = Field(default=None, gt=0)  # trials asked at once (None: the default)

    EXECUTION: ClassVar[frozenset[str]] = frozenset({"batch"})  # not part of the study name
    DEFAULT_BATCH: ClassVar[int | None] = None  # None: the cells left / local workers

    def identity(self) -> dict[str, Any]:
        """What makes two trials comparable (hashed into the study name)."""
        return self.model_dump(exclude=set(self.EXECUTION))

    def cells(self, baseline: str = BASELINE) -> list[Cell] | None:
        return None

    def suggest(self, trial: optuna.Trial, baseline: str = BASELINE) -> Cell:
        raise NotImplementedError

    def make_sampler(
        self, worker: int, offset: int, baseline: str = BASELINE
    ) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def make_pruner(self) -> optuna.pruners.BasePruner:
        return optuna.pruners.NopPruner()

    def budget(self, trials: int | None) -> int:
        raise NotImplementedError

    def prepare(self, study: optuna.Study, baseline: str = BASELINE) -> None:
        """Called once per study by the parent before workers start."""


def _check_values(values: Sequence[float], what: str, minimum: float | None) -> list[float]:
    for v in values:
        if not math.isfinite(v) or (minimum is not None and v < minimum):
            bound = f" and >= {fmt(minimum)}" if minimum is not None else ""
            raise ValueError(f"{what} must be finite{bound}, got {v}")
    if len({fmt(v) for v in values}) != len(values):
        raise ValueError(f"values repeat: {list(values)}")
    return list(values)


class GridSpace(SearchSpace):
    """The paper grid: every alpha x beta cell (+ the baseline) exactly once."""

    kind: Literal["grid"]
    alpha: list[Number] = Field(min_length=1)  # e.g. [1, 10, 100, 200] or [-1, -10, -100, -200]
    beta: list[Number] = Field(default=[0.0, 0.01, 0.1], min_length=1)

    @field_validator("alpha")
    @classmethod
    def _alphas(cls, values: list[float]) -> list[float]:
        return _check_values(values, "alpha", None)

    @field_validator("beta")
    @classmethod
    def _betas(cls, values: list[float]) -> list[float]:
        return _check_values(values, "beta", 0.0)

    def cells(self, baseline: str = BASELINE) -> list[Cell]:
        cells = [Cell(HamSettings(alpha=float(a), beta=float(b)), baseline)
                 for a in self.alpha for b in self.beta]
        return ([Cell(None, baseline)] if self.include_baseline else []) + cells

    def suggest(self, trial: optuna.Trial, baseline: str = BASELINE) -> Cell:
        labels = [c.label for c in self.cells(baseline)]
        return cell_from_label(trial.suggest_categorical(CELL, labels), baseline)

    def make_sampler(
        self, worker: int, offset: int, baseline: str = BASELINE
    ) -> optuna.samplers.BaseSampler:
        labels = [c.label for c in self.cells(baseline)]
        return _AskTellGridSampler({CELL: labels}, seed=GRID_SAMPLER_SEED)

    def budget(self, trials: int | None) -> int:
        total = len(self.cells())
        return total if trials is None else min(total, trials)


class AlphaRange(StrictModel):
    """|alpha| log-uniform in [min, max]; `signs`: ham (alpha > 0), nham (alpha < 0), or both."""

    min: Number = Field(gt=0)
    max: Number = Field(gt=0)
    signs: list[Literal["ham", "nham"]] = Field(default=["ham"], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> AlphaRange:
        if not self.min <= self.max or not math.isfinite(self.max):
            raise ValueError(f"need 0 < min <= max < inf, got min={self.min}, max={self.max}")
        if len(set(self.signs)) != len(self.signs):
            raise ValueError(f"signs repeat a value: {self.signs}")
        return self


class BetaRange(StrictModel):
    min: Number = Field(default=0.0, ge=0)
    max: Number = Field(default=0.1, ge=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> BetaRange:
        if not self.min <= self.max or not math.isfinite(self.max):
            raise ValueError(f"need 0 <= min <= max < inf, got min={self.min}, max={self.max}")
        if self.log and self.min <= 0:
            raise ValueError(f"log: true needs min > 0, got min={self.min}")
        return self


class TpeSpace(SearchSpace):
    """Continuous alpha / beta with TPE (seeded, constant liar) and an optional median pruner."""

    kind: Literal["tpe"]
    alpha: AlphaRange
    beta: BetaRange = BetaRange()
    trials: int = Field(default=50, gt=0)  # evaluated trials per study (incl. the baseline)
    seed: int = 0  # the first worker's TPE seed; the others derive theirs (worker_seed)
    pruner: Literal["median", "none"] = "median"

    EXECUTION: ClassVar[frozenset[str]] = frozenset({"batch", "trials", "seed", "pruner"})
    DEFAULT_BATCH: ClassVar[int | None] = TPE_BATCH

    def suggest(self, trial: optuna.Trial, baseline: str = BASELINE) -> Cell:
        if trial.user_attrs.get(CELL) == baseline:
            return Cell(None, baseline)
        sign = self.alpha.signs[0]
        if len(self.alpha.signs) > 1:
            sign = trial.suggest_categorical("sign", list(self.alpha.signs))
        magnitude = trial.suggest_float("abs_alpha", self.alpha.min, self.alpha.max, log=True)
        beta = trial.suggest_float("beta", self.beta.min, self.beta.max, log=self.beta.log)
        return Cell(HamSettings(alpha=magnitude if sign == "ham" else -magnitude, beta=beta),
                    baseline)

    def make_sampler(
        self, worker: int, offset: int, baseline: str = BASELINE
    ) -> optuna.samplers.BaseSampler:
        with quiet_experimental():  # constant_liar is experimental in some Optuna versions
            return optuna.samplers.TPESampler(
                seed=worker_seed(self.seed, worker, node_id(), offset), constant_liar=True
            )

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS)
        return optuna.pruners.NopPruner()

    def budget(self, trials: int | None) -> int:
        return self.trials if trials is None else trials

    def prepare(self, study: optuna.Study, baseline: str = BASELINE) -> None:
        if self.include_baseline and not any(
            t.user_attrs.get(CELL) == baseline for t in study.get_trials(deepcopy=False)
        ):
            study.enqueue_trial({}, user_attrs={CELL: baseline})


# The `search:` block of a sweep file: one of the kinds, by its `kind:` key.
Space = Annotated[GridSpace | TpeSpace, Field(discriminator="kind")]
