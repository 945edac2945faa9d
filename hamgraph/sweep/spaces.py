"""Search spaces: what the trials of a study may try. One class per `kind:` of `search:`.

Every kind is one `SearchSpace` subclass (the schema of its `search:` block and its behaviour):

    cells()        the finite list of cells (grid) or None (an open space)
    suggest()      the cell of a trial (asks the trial's sampler)
    make_sampler() the Optuna sampler of a worker; make_pruner(): the pruner (Nop: none)
    budget_of()    evaluated trials per study; prepare(): what a new study needs (a baseline)
    for_role()     the space of a target's "main" or (budget: equal) "baseline" study

A new kind is a new subclass here plus its entry in `Space` (the tagged union of the file).
Beside alpha and beta, `space:` searches any run setting (hamgraph.sweep.settings names them;
`Dimension` is one setting's values).

Kinds (REFERENCE §1):
- `grid`: the paper grid, every (alpha, beta, settings...) cell plus the baseline cells exactly
  once, with Optuna's GridSampler over ONE categorical parameter `cell` whose values read
  "adam", "a=200,b=0.1", "a=200,b=0.1,lr=0.001", ... (a product over alpha x beta cannot hold
  a baseline without alpha/beta).
- `tpe`: |alpha| log-uniform in [min, max] with a sign choice (`ham`, `nham`), beta uniform
  (or log) in [min, max] (or alpha / beta as dimensions of `space:`), every other searched
  setting by its own name, seeded TPE with `constant_liar` (several trials are asked at once),
  optional MedianPruner. The reference baseline is an enqueued trial without parameters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
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
A_SETTINGS = "settings"  # user attr: [[name, value], ...] of the searched settings of a cell
GRID_SAMPLER_SEED = 0  # the same in every worker: GridSampler shuffles its grid with it
MEDIAN_STARTUP_TRIALS = 5  # MedianPruner: trials before pruning starts
TPE_BATCH = 8  # TPE trials asked at once by default (constant liar keeps them apart)

Number = Annotated[float, Strict()]


def fmt(x: float) -> str:
    return f"{x:.6g}"


Value = Any  # a setting's value: a number, bool, string or a tuple (a list in YAML)


def show(value: Value) -> str:
    """A setting's value in a cell label: 0.001, 64, true, [0.9,0.999]."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, tuple):
        return "[" + ",".join(show(v) for v in value) + "]"
    return str(value)


def canonical(value: Value) -> Value:
    """Lists (YAML, JSON) as tuples, so cells are hashable and compare equal after storage."""
    if isinstance(value, list | tuple):
        return tuple(canonical(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class Cell:
    """One point of a study's space: the baseline (ham None) or an (alpha, beta) pair, plus the
    values of the other searched settings (`settings`, in the order of `search.space`; see
    hamgraph.sweep.settings for the names). A baseline cell holds no HAM-only setting.

    The base optimizer is the sweep's (one per study), so within a study the label is the key
    of the cell: `baseline` (e.g. "adam", "sgd(momentum=0.9)") or "a=200,b=0.1", followed by
    ",name=value" per searched setting ("a=200,b=0.1,lr=0.001,dropout=0.5").
    """

    ham: HamSettings | None
    baseline: str = BASELINE
    settings: tuple[tuple[str, Value], ...] = ()

    @property
    def label(self) -> str:
        head = self.baseline if self.ham is None else (
            f"a={fmt(self.ham.alpha)},b={fmt(self.ham.beta)}")
        return ",".join([head, *(f"{name}={show(value)}" for name, value in self.settings)])


def cell_of_trial(trial: FrozenTrial, baseline: str = BASELINE) -> Cell | None:
    """The cell a trial tried (from its user attributes); None before it chose one."""
    attrs = trial.user_attrs
    if CELL not in attrs:
        return None
    settings = tuple((str(n), canonical(v)) for n, v in attrs.get(A_SETTINGS) or [])
    if attrs.get("alpha") is None:
        return Cell(None, baseline, settings)
    if attrs.get("beta") is None:  # claimed by a worker that died in between
        return None
    return Cell(HamSettings(alpha=float(attrs["alpha"]), beta=float(attrs["beta"])), baseline,
                settings)


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


Role = Literal["main", "baseline"]  # a target's study: HAM (+ reference), or its tuned baseline


class Dimension(StrictModel):
    """One searched setting of `search.space`:

        [a, b, c] or {choice: [a, b, c]}    categorical (any kind; grid: the only form)
        {range: [lo, hi]}                   uniform; ints for an int field; optional `step`
        {log: [lo, hi]}                     log-uniform, 0 < lo
    """

    choice: list[Any] | None = Field(default=None, min_length=1)
    range: list[int | float] | None = Field(default=None, min_length=2, max_length=2)
    log: list[int | float] | None = Field(default=None, min_length=2, max_length=2)
    step: int | float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _list_is_choice(cls, value: Any) -> Any:
        return {"choice": value} if isinstance(value, list) else value

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        given = [k for k in ("choice", "range", "log") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("expected a list, {choice: [...]}, {range: [lo, hi]} or "
                             f"{{log: [lo, hi]}}, got {', '.join(given) or 'none of them'}")
        if self.choice is not None:
            if self.step is not None:
                raise ValueError("step goes with range, not with a choice")
            shown = [show(canonical(v)) if isinstance(v, int | float) and not isinstance(v, bool)
                     else repr(canonical(v)) for v in self.choice]  # 1 and 1.0 repeat
            if len(set(shown)) != len(shown):
                raise ValueError(f"values repeat: {self.choice}")
            for v in self.choice:
                if isinstance(v, dict) or v is None:
                    raise ValueError(f"a choice is a number, bool, string or list, got {v!r}")
            return self
        lo, hi = self.bounds
        if any(isinstance(v, bool) or not math.isfinite(v) for v in (lo, hi)) or not lo <= hi:
            raise ValueError(f"need finite lo <= hi, got [{lo}, {hi}]")
        if self.log is not None:
            if lo <= 0:
                raise ValueError(f"log needs 0 < lo, got [{lo}, {hi}]")
            if self.step is not None:
                raise ValueError("step goes with range, not with log")
        return self

    @property
    def bounds(self) -> tuple[float, float]:
        lo, hi = self.range if self.range is not None else self.log  # type: ignore[misc]
        return lo, hi

    @property
    def finite(self) -> bool:
        return self.choice is not None

    def values(self) -> list[Value]:
        """Every value of a choice (the check and the grid), or the range's two ends."""
        if self.choice is not None:
            return [canonical(v) for v in self.choice]
        return list(self.bounds)

    def suggest(self, trial: optuna.Trial, name: str, integer: bool) -> Value:
        """Ask the trial's sampler; `integer`: the setting is an int (an int field)."""
        if self.choice is not None:
            values = [canonical(v) for v in self.choice]
            if all(v is None or isinstance(v, (bool, int, float, str)) for v in values):
                return trial.suggest_categorical(name, values)
            texts = [json.dumps(v) for v in values]  # Optuna's choices are scalars
            return values[texts.index(trial.suggest_categorical(name, texts))]
        lo, hi = self.bounds
        if integer:
            step = 1 if self.step is None else self.step
            return trial.suggest_int(name, int(lo), int(hi), step=int(step),
                                     log=self.log is not None)
        return trial.suggest_float(name, float(lo), float(hi), step=self.step,
                                   log=self.log is not None)

    def is_integer(self, name: str) -> bool:
        """Ints are drawn for int fields of the params, and where a range is all ints."""
        from hamgraph.sweep.settings import param_type, setting_kind

        if self.choice is not None:
            return False
        if setting_kind(name) == "params":
            return any(param_type(name, k) is int for k in ("NodeParams", "GraphParams"))
        ends = [*self.bounds, *([] if self.step is None else [self.step])]
        return all(isinstance(v, int) and not isinstance(v, bool) for v in ends)


def _product(dims: list[tuple[str, Dimension]]) -> list[tuple[tuple[str, Value], ...]]:
    """Every combination of the values of finite dimensions, the first one varying slowest."""
    combos: list[tuple[tuple[str, Value], ...]] = [()]
    for name, dim in dims:
        combos = [(*c, (name, v)) for c in combos for v in dim.values()]
    return combos


def _suggest_all(trial: optuna.Trial, dims: list[tuple[str, Dimension]]
                 ) -> tuple[tuple[str, Value], ...]:
    return tuple((name, dim.suggest(trial, name, dim.is_integer(name))) for name, dim in dims)


class SearchSpace(StrictModel):
    """The interface of every kind (the base is never a `search:` block itself).

    `space`: the searched settings beside alpha and beta (hamgraph.sweep.settings names them;
    alpha and beta may be given there too, instead of the kind's own `alpha:` / `beta:` keys).
    `budget: equal`: every target also gets a baseline study (`for_role("baseline")`) over the
    same non-HAM settings, with as many trials (TPE) or the same grid, and the main study then
    holds HAM cells only.
    """

    kind: str
    include_baseline: bool = True  # the baseline cell, so every study holds its own reference
    batch: int | None = Field(default=None, gt=0)  # trials asked at once (None: the default)
    space: dict[str, Dimension] = Field(default_factory=dict)  # searched settings
    budget: Literal["equal"] | None = None  # equal: a baseline study tuned as hard

    EXECUTION: ClassVar[frozenset[str]] = frozenset({"batch"})  # not part of the study name
    DEFAULT_BATCH: ClassVar[int | None] = None  # None: the cells left / local workers
    NEW_KEYS: ClassVar[tuple[str, ...]] = ("space", "budget")  # hashed only when given

    def identity(self) -> dict[str, Any]:
        """What makes two trials comparable (hashed into the study name). Keys added after the
        first release are left out while unset, so older sweep files keep their study names."""
        out = self.model_dump(exclude=set(self.EXECUTION))
        for key in (*self.NEW_KEYS, "alpha", "beta"):
            if out.get(key) in (None, {}):
                out.pop(key, None)
        return out

    # --- the searched settings ---
    @field_validator("space")
    @classmethod
    def _names(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        from hamgraph.errors import UserInputError
        from hamgraph.sweep.settings import setting_kind

        for name in space:
            try:
                setting_kind(name)
            except UserInputError as exc:
                raise ValueError(str(exc)) from None
        return space

    @model_validator(mode="after")
    def _check_space(self) -> SearchSpace:
        for name in self.space:
            if name in ("alpha", "beta") and getattr(self, name, None) is not None:
                raise ValueError(f"{name} is given both in search and in search.space; keep one")
        if not self.has_ham:
            from hamgraph.sweep.settings import is_ham_only

            ham_only = [n for n in self.space if is_ham_only(n)]
            if ham_only:
                raise ValueError(f"{', '.join(ham_only)} vary HAM cells only, but alpha is not "
                                 "searched (add alpha to search.space)")
        if self.budget == "equal" and not self.has_ham:
            raise ValueError("budget: equal compares HAM with its baseline; search alpha too")
        if self.budget == "equal" and not self.baseline_dims():
            raise ValueError("budget: equal tunes the baseline over the non-HAM settings of "
                             "search.space (lr, dropout, ...); there are none")
        if not self.has_ham and not self.include_baseline:
            raise ValueError("nothing to search: no alpha and include_baseline: false")
        return self

    @property
    def has_ham(self) -> bool:
        """HAM cells are searched (alpha is given)."""
        return getattr(self, "alpha", None) is not None or "alpha" in self.space

    def setting_dims(self) -> list[tuple[str, Dimension]]:
        """The searched settings of a HAM cell beside alpha and beta, in file order."""
        return [(n, d) for n, d in self.space.items() if n not in ("alpha", "beta")]

    def baseline_dims(self) -> list[tuple[str, Dimension]]:
        """The searched settings of a baseline cell: those that are not HAM's."""
        from hamgraph.sweep.settings import is_ham_only

        return [(n, d) for n, d in self.setting_dims() if not is_ham_only(n)]

    def for_role(self, role: Role) -> SearchSpace:
        """The space of a target's study: "main" (HAM, + the reference baseline unless the
        budget is equal) or "baseline" (the tuned baseline of `budget: equal`)."""
        if self.budget != "equal":
            return self
        if role == "main":
            return self.model_copy(update={"include_baseline": False})
        update: dict[str, Any] = {"space": dict(self.baseline_dims()), "budget": None}
        update.update({k: None for k in ("alpha", "beta") if k in type(self).model_fields})
        return self.model_copy(update=update)

    def roles(self) -> list[Role]:
        return ["main", "baseline"] if self.budget == "equal" else ["main"]

    def size(self) -> int | None:
        """The number of distinct cells of a finite space (None: an open one)."""
        cells = self.cells()
        return None if cells is None else len(cells)

    # --- behaviour of a kind ---
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

    def budget_of(self, trials: int | None) -> int:
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


DEFAULT_GRID_BETA = [0.0, 0.01, 0.1]


class GridSpace(SearchSpace):
    """The paper grid: every alpha x beta x searched-settings cell (+ the baseline cells: one
    per combination of the non-HAM settings) exactly once."""

    kind: Literal["grid"]
    alpha: list[Number] | None = Field(default=None, min_length=1)  # e.g. [1, 10, 100, 200]
    beta: list[Number] | None = Field(default=None, min_length=1)  # default DEFAULT_GRID_BETA

    @model_validator(mode="before")
    @classmethod
    def _default_beta(cls, value: Any) -> Any:
        if isinstance(value, dict) and "alpha" in value and "beta" not in value:
            value = {**value, "beta": list(DEFAULT_GRID_BETA)}
        return value

    @field_validator("alpha")
    @classmethod
    def _alphas(cls, values: list[float] | None) -> list[float] | None:
        return None if values is None else _check_values(values, "alpha", None)

    @field_validator("beta")
    @classmethod
    def _betas(cls, values: list[float] | None) -> list[float] | None:
        return None if values is None else _check_values(values, "beta", 0.0)

    @field_validator("space")
    @classmethod
    def _finite(cls, space: dict[str, Dimension]) -> dict[str, Dimension]:
        for name, dim in space.items():
            if not dim.finite:
                raise ValueError(f"{name}: a grid needs a list of values, not a range")
        return space

    def _alpha_beta(self) -> tuple[list[float], list[float]]:
        alphas = self.alpha if self.alpha is not None else (
            [float(v) for v in self.space["alpha"].values()] if "alpha" in self.space else [])
        betas = self.beta if self.beta is not None else (
            [float(v) for v in self.space["beta"].values()] if "beta" in self.space
            else DEFAULT_GRID_BETA)
        return alphas, betas

    def cells(self, baseline: str = BASELINE) -> list[Cell]:
        alphas, betas = self._alpha_beta()
        settings = _product(self.setting_dims())
        cells = [Cell(HamSettings(alpha=float(a), beta=float(b)), baseline, s)
                 for a in alphas for b in betas for s in settings]
        base = [Cell(None, baseline, s) for s in _product(self.baseline_dims())]
        return (base if self.include_baseline or not self.has_ham else []) + cells

    def suggest(self, trial: optuna.Trial, baseline: str = BASELINE) -> Cell:
        by_label = {c.label: c for c in self.cells(baseline)}
        return by_label[trial.suggest_categorical(CELL, list(by_label))]

    def make_sampler(
        self, worker: int, offset: int, baseline: str = BASELINE
    ) -> optuna.samplers.BaseSampler:
        labels = [c.label for c in self.cells(baseline)]
        return _AskTellGridSampler({CELL: labels}, seed=GRID_SAMPLER_SEED)

    def budget_of(self, trials: int | None) -> int:
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
    """Seeded TPE (constant liar) over alpha / beta and the searched settings, with an optional
    median pruner. The reference baseline (include_baseline) is an enqueued trial without
    parameters: the plain base at the sweep's own settings."""

    kind: Literal["tpe"]
    alpha: AlphaRange | None = None  # the first release's form; or alpha in `space`
    beta: BetaRange | None = None  # default BetaRange() with `alpha`
    trials: int = Field(default=50, gt=0)  # evaluated trials per study (incl. the baseline)
    seed: int = 0  # the first worker's TPE seed; the others derive theirs (worker_seed)
    pruner: Literal["median", "none"] = "median"

    EXECUTION: ClassVar[frozenset[str]] = frozenset({"batch", "trials", "seed", "pruner"})
    DEFAULT_BATCH: ClassVar[int | None] = TPE_BATCH

    @model_validator(mode="before")
    @classmethod
    def _default_beta(cls, value: Any) -> Any:
        if isinstance(value, dict) and "alpha" in value and "beta" not in value:
            space = value.get("space")
            if not (isinstance(space, dict) and "beta" in space):
                value = {**value, "beta": {}}
        return value

    def _suggest_ham(self, trial: optuna.Trial) -> HamSettings:
        if self.alpha is not None:  # the first release's parameters: sign, abs_alpha, beta
            sign = self.alpha.signs[0]
            if len(self.alpha.signs) > 1:
                sign = trial.suggest_categorical("sign", list(self.alpha.signs))
            magnitude = trial.suggest_float("abs_alpha", self.alpha.min, self.alpha.max,
                                            log=True)
            alpha = magnitude if sign == "ham" else -magnitude
        else:
            alpha = self.space["alpha"].suggest(trial, "alpha", False)
        if self.beta is not None:
            beta = trial.suggest_float("beta", self.beta.min, self.beta.max, log=self.beta.log)
        elif "beta" in self.space:
            beta = self.space["beta"].suggest(trial, "beta", False)
        else:
            beta = trial.suggest_float("beta", BetaRange().min, BetaRange().max)
        return HamSettings(alpha=float(alpha), beta=float(beta))

    def suggest(self, trial: optuna.Trial, baseline: str = BASELINE) -> Cell:
        if trial.user_attrs.get(CELL) == baseline:
            return Cell(None, baseline)  # the reference: no searched setting
        if not self.has_ham:
            return Cell(None, baseline, _suggest_all(trial, self.baseline_dims()))
        ham = self._suggest_ham(trial)
        return Cell(ham, baseline, _suggest_all(trial, self.setting_dims()))

    def cells(self, baseline: str = BASELINE) -> list[Cell] | None:
        return None

    def size(self) -> int | None:
        """Distinct cells when every searched setting is a choice (a baseline-only space)."""
        if self.has_ham or not all(d.finite for _, d in self.baseline_dims()):
            return None
        return len(_product(self.baseline_dims())) + int(self.include_baseline)

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

    def budget_of(self, trials: int | None) -> int:
        budget = self.trials if trials is None else trials
        size = self.size()
        return budget if size is None else min(budget, size)

    def prepare(self, study: optuna.Study, baseline: str = BASELINE) -> None:
        if self.include_baseline and not any(
            t.user_attrs.get(CELL) == baseline for t in study.get_trials(deepcopy=False)
        ):
            study.enqueue_trial({}, user_attrs={CELL: baseline})


# The `search:` block of a sweep file: one of the kinds, by its `kind:` key.
Space = Annotated[GridSpace | TpeSpace, Field(discriminator="kind")]
