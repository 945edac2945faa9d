"""The sweep file: YAML -> a validated `Sweep` (the strict base and the one-line errors of
`hamgraph.config`, so grids and sweeps read and complain alike), and the study names.

    name: smoke                # default: the file name
    datasets: [cora]
    models: [gcn]
    base: {sgd: {momentum: 0.9}}   # optional: the base optimizer, as in grids (default: the
                                   # protocol's); part of every cell's identity
    epochs: 30                 # runs / seed / overrides: as in grids
    search:                    # see hamgraph.sweep.spaces (kinds) and .settings (names)
      kind: tpe
      space: {lr: {log: [1.0e-4, 1.0e-2]}, dropout: [0.2, 0.5], alpha: [200, -10]}
      budget: equal            # + a baseline study per target, tuned as hard
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from hamgraph.config import BaseChoice, Choice, StrictModel, parse_model, read_yaml
from hamgraph.errors import ConfigError, UserInputError
from hamgraph.plugins import with_options
from hamgraph.specs import OptimizerSpec, PluginRef, RunSpec, normalize_options
from hamgraph.sweep.settings import (
    PARAM_FIELDS,
    Recipe,
    apply_setting,
    check_plugin_setting,
    check_setting,
    plugin_option,
    setting_kind,
)
from hamgraph.sweep.spaces import BASELINE, Cell, Role, SearchSpace, Space

# Bumped when the meaning of a trial's value changes, so a resumed sweep never mixes two
# meanings in one study (2: the value is the mean validation metric x100, as in every table).
TRIAL_VALUES = 2


class Sweep(StrictModel):
    """A sweep file. Base settings mean the same as in a grid config (`hamgraph run`)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    datasets: list[Choice] = Field(min_length=1)  # names or {_target_: ...} (hamgraph.plugins)
    models: list[Choice] = Field(min_length=1)
    base: BaseChoice | None = None  # None: the protocol's base optimizer
    epochs: int | None = Field(default=None, gt=0)  # None: the protocol preset
    runs: int | None = Field(default=None, gt=0)  # None: all runs of the protocol
    seed: int = Field(default=0, ge=0)
    overrides: dict[str, Any] = Field(default_factory=dict)  # fields of NodeParams / GraphParams
    track: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)  # + --track
    metric: Choice | None = None  # None: each dataset's metric (as in grids)
    search: Space
    # readable name -> the resolved choice (set by load_sweep for user plug-ins)
    _datasets: dict[str, Any] = PrivateAttr(default_factory=dict)
    _models: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _epochs_once(self) -> Sweep:
        if self.epochs is not None and "epochs" in self.overrides:
            raise ValueError("epochs is given both at the top level and in overrides; keep one")
        return self

    def targets(self) -> list[tuple[str, str]]:
        """(dataset, model) readable names, one study each (two with `budget: equal`), in
        file order."""
        datasets = list(self._datasets) or [str(d) for d in self.datasets]
        models = list(self._models) or [str(m) for m in self.models]
        return [(d, m) for d in datasets for m in models]

    def studies(self) -> list[tuple[str, str, Role]]:
        """(dataset, model, role) of every study, in file order (main before baseline)."""
        return [(d, m, role) for d, m in self.targets() for role in self.search.roles()]

    def space_of(self, role: Role) -> SearchSpace:
        return self.search.for_role(role)

    def param_overrides(self) -> dict[str, Any]:
        out = dict(self.overrides)
        if self.epochs is not None:
            out["epochs"] = self.epochs
        return out

    @property
    def baseline(self) -> str:
        """The baseline cell's label: "adam" on the protocol's base, else the base's label."""
        if self.base is None:
            return BASELINE
        return OptimizerSpec(self.base.name, normalize_options(dict(self.base.options))).label()

    def recipe(self, cell: Cell) -> Recipe:
        """What the runs of a cell are made of: the sweep's settings, then the cell's."""
        recipe = Recipe(
            overrides=self.param_overrides(),
            base=None if self.base is None else self.base.name,
            base_options={} if self.base is None else dict(self.base.options),
            ham=cell.ham,
        )
        for name, value in cell.settings:
            recipe = apply_setting(recipe, name, value)
        return recipe

    def specs(self, dataset: str, model: str, cell: Cell) -> list[RunSpec]:
        """The RunSpecs of one cell (the protocol's runs), exactly as a grid would make them."""
        from hamgraph.grid import dataset_metric, specs_for

        info = self._datasets.get(dataset, dataset)
        if isinstance(info, str):
            from hamgraph.data.registry import resolve_dataset_choice

            info = resolve_dataset_choice(info)
        recipe = self.recipe(cell)
        choice = self._models.get(model, model)
        if recipe.dataset_options:  # a searched `dataset.<option>`: the plug-in, re-checked
            from hamgraph.data.plugin import plugin_info

            info = plugin_info(info.name, with_options(_plugin_of(info, "dataset", dataset),
                                                       **recipe.dataset_options))
        if recipe.model_options:  # a searched `model.<option>`: same readable name
            from hamgraph.models import ModelChoice

            ref = _plugin_of(choice, "model", model)
            choice = ModelChoice(choice.name, with_options(ref, **recipe.model_options))
        return specs_for(
            info, choice, recipe.ham, overrides=recipe.overrides,
            runs=self.runs, seed=self.seed, base=recipe.base,
            base_options=recipe.base_options or None, metric=dataset_metric(info, self.metric),
        )

    def higher_is_better(self, dataset: str) -> bool:
        """The direction of the dataset's metric (a study maximizes or minimizes it)."""
        spec = self.specs(dataset, self.targets()[0][1], Cell(None))[0]
        ref = spec.metric_plugin
        return ref is None or bool(ref.setting.get("higher_is_better", True))

    def plugin_identity(self, dataset: str, model: str) -> dict[str, Any]:
        """The identity of the user plug-ins of a target ({} for built-ins)."""
        spec = self.specs(dataset, model, Cell(None))[0]
        return {kind: ref.identity() for kind, ref in spec.plugins.items()}


def _plugin_of(choice: Any, kind: str, name: str) -> PluginRef:
    """The PluginRef of a resolved model / dataset choice; UserInputError for a built-in."""
    ref = getattr(choice, "plugin", None)
    if ref is None:
        raise UserInputError(f"{kind} {name!r} is built into hamgraph: it has no options")
    return ref


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a sweep file. Raises ConfigError (one line: file, key, problem)."""
    path = Path(path)
    raw = read_yaml(path)  # the grid config's YAML reader: 1e-3 is a float, duplicate keys fail
    if isinstance(raw, dict):
        raw.setdefault("name", path.stem)
    sweep = parse_model(raw, str(path), Sweep, "name, datasets, models, search, ...")
    _check_names(sweep, path)
    return sweep


def _check_names(sweep: Sweep, path: Path) -> None:
    """Datasets and models exist and fit each other; base and overrides are valid for all."""
    from hamgraph.data.registry import resolve_dataset_choice
    from hamgraph.grid import OverrideError, dataset_metric
    from hamgraph.models import resolve_model_choice
    from hamgraph.optim.factory import check_base_options, check_ham_base

    tasks: dict[str, str] = {}
    for i, value in enumerate(sweep.datasets):
        try:
            info = resolve_dataset_choice(value)
        except UserInputError as exc:
            raise ConfigError(f"{path}: datasets[{i}]: {exc}") from None
        if info.name in tasks:
            raise ConfigError(f"{path}: datasets[{i}]: two datasets are named {info.name!r}")
        tasks[info.name] = info.task
        # built-ins keep the file's spelling as their name: study names stay the same
        sweep._datasets[info.name if info.plugin is not None else str(value)] = info
        try:
            dataset_metric(info, sweep.metric)
        except UserInputError as exc:
            loc = "metric" if sweep.metric is not None else f"datasets[{i}].metric"
            raise ConfigError(f"{path}: {loc}: {exc}") from None
    for i, model in enumerate(sweep.models):
        for dataset, task in tasks.items():
            try:
                choice = resolve_model_choice(model, task)
            except UserInputError as exc:
                raise ConfigError(f"{path}: models[{i}]: {exc} (dataset {dataset!r})") from None
        if choice.name in sweep._models:
            raise ConfigError(f"{path}: models[{i}]: two models are named {choice.name!r}")
        sweep._models[choice.name if choice.plugin is not None else str(model)] = choice
    if sweep.base is not None:
        try:
            check_base_options(sweep.base.name, dict(sweep.base.options))
            check_ham_base(sweep.base.name)  # every sweep trains HAM on its base
        except UserInputError as exc:
            raise ConfigError(f"{path}: base: {exc}") from None
    for dataset, model in sweep.targets():
        try:
            specs = sweep.specs(dataset, model, Cell(None))
        except OverrideError as exc:
            key = "epochs" if exc.field == "epochs" and sweep.epochs is not None else (
                f"overrides.{exc.field}")
            raise ConfigError(f"{path}: {key}: {exc.problem}") from None
        except UserInputError as exc:
            raise ConfigError(f"{path}: {dataset} x {model}: {exc}") from None
        _check_space(sweep, path, specs[0], dataset, model)


def _check_space(sweep: Sweep, path: Path, spec: RunSpec, dataset: str, model: str) -> None:
    """Every searched value (a choice, a range's ends) is valid for the setting it sets, by the
    grid's own checks (for a plug-in's option: the plug-in loader's checks); a name the sweep
    also sets elsewhere is searched in one place only."""
    where = f"{spec.dataset} x {spec.model}"
    for name, dim in sweep.search.space.items():
        kind = setting_kind(name)
        if kind in ("model", "dataset"):
            _check_plugin_dim(sweep, path, spec, name, dim.values(),
                              dataset if kind == "dataset" else model, where)
            continue
        if name in sweep.param_overrides():
            raise ConfigError(f"{path}: search.space.{name}: also set in overrides; keep one")
        if name.startswith("base.") and sweep.base is not None and (
                name[len("base."):] in sweep.base.options):
            raise ConfigError(f"{path}: search.space.{name}: also set in base; keep one")
        for value in dim.values():
            try:
                check_setting(name, value, params=spec.params, base=spec.optimizer.base)
            except UserInputError as exc:
                raise ConfigError(f"{path}: search.space.{name}: {exc} ({where})") from None
        if dim.step is not None and dim.is_integer(name) and not isinstance(dim.step, int):
            raise ConfigError(f"{path}: search.space.{name}: {name} is an int setting, its "
                              f"step must be an int, got {dim.step!r}")
        if not dim.finite and not dim.is_integer(name):
            if name.startswith("base.") or name in ("alpha", "beta", "clamp"):
                continue
            from hamgraph.sweep.settings import param_type

            kind = type(spec.params).__name__
            if param_type(name, kind) is not float:
                raise ConfigError(f"{path}: search.space.{name}: a range needs a number "
                                  f"setting, {name} is not ({where})")


def _check_plugin_dim(sweep: Sweep, path: Path, spec: RunSpec, name: str, values: list[Any],
                      what: str, where: str) -> None:
    """A searched `model.<option>` / `dataset.<option>`: the target's model (dataset) is a
    plug-in that takes the option, with every value (both ends of a range)."""
    kind = setting_kind(name)
    option = plugin_option(name)
    if kind == "model" and option in PARAM_FIELDS:
        for place, given in (("overrides", sweep.param_overrides()),
                             ("search.space", sweep.search.space)):
            if option in given:
                raise ConfigError(
                    f"{path}: search.space.{name}: {option} is also set in {place} (a params "
                    f"field, which the model's option {option} overrides); keep one")
    choice = (sweep._models if kind == "model" else sweep._datasets).get(what)
    task = "graph" if type(spec.params).__name__ == "GraphParams" else "node"
    for value in values:
        try:
            check_plugin_setting(name, value, what=what, ref=getattr(choice, "plugin", None),
                                 params=spec.params, task=task)
        except UserInputError as exc:
            raise ConfigError(f"{path}: search.space.{name}: {exc} ({where})") from None


def _space_hash(sweep: Sweep) -> str:
    """What makes two trials comparable: the space, the base and every setting of the runs."""
    blob: dict[str, Any] = {
        "search": sweep.search.identity(),
        "epochs": sweep.epochs, "runs": sweep.runs, "seed": sweep.seed,
        "overrides": sweep.overrides, "trial_values": TRIAL_VALUES,
    }
    if sweep.base is not None:
        blob["base"] = sweep.base.to_yaml()
    text = json.dumps(blob, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def study_name(sweep: Sweep, dataset: str, model: str, role: Role = "main") -> str:
    """`<sweep>.<dataset>.<model>.<hash>`: the same command resumes, an edited space does not.
    The tuned baseline of `budget: equal` is `<...>.<hash>.baseline`.

    With user plug-ins (or a `metric:`), their identity (import path, options) joins the hash,
    so an edited option set starts a new study; built-in studies keep their names.
    """
    name = f"{sweep.name}.{dataset}.{model}.{_space_hash(sweep)}"
    extra: dict[str, Any] = {}
    if sweep._datasets or sweep._models:  # resolved by load_sweep
        extra = sweep.plugin_identity(dataset, model)
    if sweep.metric is not None:
        extra["metric_choice"] = sweep.metric
    if extra:
        text = json.dumps(extra, sort_keys=True, default=str)
        name += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return name if role == "main" else f"{name}.{role}"
