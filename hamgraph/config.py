"""Grid config files: YAML -> a validated `GridConfig` (schema only; names are resolved in grid.py).

A grid file looks like this (every key but `grid` is optional)::

    name: cora-demo          # result dir: results/<name>/ (default: the file name)
    runs: 2                  # override the protocol's number of runs of every dataset
    epochs: 50               # override the protocol's epochs
    seed: 0                  # run i uses seed `seed + i`
    overrides: {hidden: 64}  # any NodeParams / GraphParams field, applied to every run
    grid:
      dataset: [cora]
      model: [gcn, sage]
      optimizer:
        - adam                                  # the protocol's plain base optimizer
        - {ham: {alpha: 200, beta: 0.1}}        # HAM (alpha < 0 is nHAM)
        - {ham: paper-best}                     # the paper's best alpha/beta per dataset x model
        - {nham: paper-best}
        - {ham: {preset: paper-best, sign_source: previous}}   # preset + HAM options
        - {sgd: {momentum: 0.9}}                # another base optimizer, with its options
        - {ham: {alpha: 200, beta: 0.1, base: adamw}}          # HAM on another base
        - {base: torch.optim.RAdam}             # any torch.optim.Optimizer by dotted path

Every problem is a `ConfigError` whose message is one line naming the file and the key,
e.g. ``configs/x.yaml: grid.model[1]: unknown model 'gcm'; valid: gcn, gat, sage``.
"""

from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hamgraph.errors import ConfigError
from hamgraph.specs import SignSource

PAPER_BEST = "paper-best"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class StrictModel(BaseModel):
    """The base of every file schema (grids, sweeps): unknown keys and wrong types are errors
    (an int is accepted where a float is expected); values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


BaseOptionValue = float | int | bool | str | list[float | int | bool | str]


class BaseChoice(StrictModel):
    """A base optimizer: a short name (adam, adamw, sgd) or a dotted path of a
    `torch.optim.Optimizer` subclass, with options. YAML: `sgd` or `{sgd: {momentum: 0.9}}`.

    The name and the options are checked against the optimizer class by `hamgraph.grid`.
    """

    name: str
    options: dict[str, BaseOptionValue] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and len(value) == 1 and "name" not in value:
            ((name, options),) = value.items()
            return {"name": name, "options": {} if options is None else options}
        return value

    def to_yaml(self) -> Any:
        return self.name if not self.options else {self.name: dict(self.options)}


class HamOptions(StrictModel):
    """The settings inside `{ham: ...}` / `{nham: ...}`; unset options keep HamSettings defaults."""

    alpha: float | None = None
    beta: float | None = None
    preset: Literal["paper-best"] | None = None  # alpha and beta from the paper's tables
    clamp: float | None = None
    mask_beta: bool | None = None
    sign_source: SignSource | None = None
    base: BaseChoice | None = None  # None: the protocol's base optimizer

    @model_validator(mode="before")
    @classmethod
    def _preset_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value == PAPER_BEST:
                return {"preset": PAPER_BEST}
            raise ValueError(
                f"expected {PAPER_BEST!r} or a mapping with alpha and beta, got {value!r}"
            )
        if value is None:
            raise ValueError(f"expected {PAPER_BEST!r} or a mapping with alpha and beta, got null")
        return value

    @model_validator(mode="after")
    def _check(self) -> HamOptions:
        if self.preset is not None:
            if self.alpha is not None or self.beta is not None:
                raise ValueError(f"give either preset: {PAPER_BEST} or alpha and beta, not both")
        elif self.alpha is None or self.beta is None:
            missing = "alpha" if self.alpha is None else "beta"
            raise ValueError(f"missing {missing} (or use {PAPER_BEST})")
        for name in ("alpha", "beta", "clamp"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        if self.beta is not None and self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta!r}")
        if self.clamp is not None and self.clamp <= 0:
            raise ValueError(f"clamp must be > 0, got {self.clamp!r}")
        return self

    def settings_kwargs(self) -> dict[str, Any]:
        """The HamSettings options that were given (alpha/beta excluded)."""
        return {
            name: getattr(self, name)
            for name in ("clamp", "mask_beta", "sign_source")
            if getattr(self, name) is not None
        }

    def to_yaml(self) -> Any:
        given = self.model_dump(exclude_none=True, exclude={"base"})
        if self.base is not None:
            given["base"] = self.base.to_yaml()
        return PAPER_BEST if given == {"preset": PAPER_BEST} else given


_OPTIMIZER_FORMS = (
    "adam, adamw, sgd, {sgd: {momentum: 0.9}}, {base: torch.optim.RAdam}, "
    "{ham: {alpha: A, beta: B}}, {ham: paper-best}, {nham: paper-best}"
)


class OptimizerEntry(StrictModel):
    """One entry of `grid.optimizer`: a base optimizer alone (a baseline; `adam`,
    `{sgd: {momentum: 0.9}}`, `{base: torch.optim.RAdam}`) or `{ham: ...}` / `{nham: ...}`
    (whose `base:` key picks the base; default: the protocol's)."""

    ham: HamOptions | None = None
    nham: HamOptions | None = None
    base: BaseChoice | None = None

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value in ("ham", "nham"):
                raise ValueError(f"{value} needs settings, e.g. {{{value}: paper-best}}")
            return {"base": value}
        if isinstance(value, dict):
            if len(value) != 1:
                raise ValueError(
                    f"expected one key (ham, nham, base or a base optimizer name), got "
                    f"{sorted(map(str, value)) or 'none'}; valid: {_OPTIMIZER_FORMS}"
                )
            ((key, options),) = value.items()
            if key in ("ham", "nham", "base"):
                return value
            return {"base": {key: options}}  # {sgd: {momentum: 0.9}}
        raise ValueError(
            f"expected a name or a mapping, got {type(value).__name__}; valid: {_OPTIMIZER_FORMS}"
        )

    @model_validator(mode="after")
    def _nham_sign(self) -> OptimizerEntry:
        if self.nham is not None and self.nham.alpha is not None and self.nham.alpha >= 0:
            raise ValueError(
                f"nham needs alpha < 0, got {self.nham.alpha!r} (use ham for alpha >= 0)"
            )
        return self

    @property
    def kind(self) -> Literal["base", "ham", "nham"]:
        return "ham" if self.ham is not None else "nham" if self.nham is not None else "base"

    @property
    def options(self) -> HamOptions | None:
        """The HAM settings, or None for a baseline."""
        return self.ham if self.ham is not None else self.nham

    @property
    def base_choice(self) -> BaseChoice | None:
        """The base optimizer named by the entry, or None for the protocol's."""
        options = self.options
        return self.base if options is None else options.base

    def to_yaml(self) -> Any:
        options = self.options
        if options is not None:
            return {self.kind: options.to_yaml()}
        assert self.base is not None  # the schema always sets one of ham, nham, base
        return self.base.to_yaml()


# A model / dataset / metric: a built-in or entry-point name, or `{_target_: path, ...}`
# (hamgraph.plugins resolves and checks it)
Choice = str | dict[str, Any]


class GridAxes(StrictModel):
    """The axes of the grid; runs are their product (datasets x models x optimizers x runs).

    Names are checked (and duplicates found) by `hamgraph.grid.expand`, which resolves them.
    """

    dataset: list[Choice] = Field(min_length=1)
    model: list[Choice] = Field(min_length=1)
    optimizer: list[OptimizerEntry] = Field(min_length=1)



class GridConfig(StrictModel):
    """A whole grid file. `source` (the file it came from) prefixes every error message."""

    name: str | None = None  # default: the file name without .yaml
    runs: int | None = Field(default=None, ge=1)  # None: each dataset's protocol run count
    epochs: int | None = Field(default=None, ge=1)  # None: the protocol preset's epochs
    seed: int = Field(default=0, ge=0)  # run i uses seed + i
    overrides: dict[str, Any] = Field(default_factory=dict)  # params field -> value, for all runs
    track: list[Literal["tensorboard", "wandb"]] = Field(default_factory=list)  # + --track
    metric: Choice | None = None  # None: each dataset's metric
    grid: GridAxes

    _source: str = PrivateAttr(default="<config>")

    @field_validator("name")
    @classmethod
    def _dir_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(
                f"{value!r} is not usable as a directory name (letters, digits, '.', '_', '-')"
            )
        return value

    @model_validator(mode="after")
    def _epochs_once(self) -> GridConfig:
        if self.epochs is not None and "epochs" in self.overrides:
            raise ValueError("epochs is given both at the top level and in overrides; keep one")
        return self

    @property
    def source(self) -> str:
        return self._source

    @property
    def run_name(self) -> str:
        return self.name if self.name is not None else Path(self._source).stem

    def all_overrides(self) -> dict[str, Any]:
        """`overrides` plus the top-level `epochs`."""
        out = dict(self.overrides)
        if self.epochs is not None:
            out["epochs"] = self.epochs
        return out

    def error(self, loc: str, message: str) -> ConfigError:
        """A ConfigError for a key of this file: `<file>: <loc>: <message>`."""
        return ConfigError(f"{self._source}: {loc}: {message}")

    def to_yaml_dict(self) -> dict[str, Any]:
        """The config as plain YAML data (re-loadable with `load_config`)."""
        out: dict[str, Any] = {"name": self.run_name}
        if self.runs is not None:
            out["runs"] = self.runs
        if self.epochs is not None:
            out["epochs"] = self.epochs
        out["seed"] = self.seed
        if self.overrides:
            out["overrides"] = dict(self.overrides)
        if self.track:
            out["track"] = list(self.track)
        if self.metric is not None:
            out["metric"] = self.metric
        out["grid"] = {
            "dataset": list(self.grid.dataset),
            "model": list(self.grid.model),
            "optimizer": [entry.to_yaml() for entry in self.grid.optimizer],
        }
        return out


# --- YAML ------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader reading `1e-3` as a float (YAML 1.1 wants `1.0e-3`); duplicate keys are errors."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file; every failure is a one-line ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, expected a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        problem = " ".join(str(problem).split())
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None


# --- pydantic errors -> one line -------------------------------------------------------------


def format_loc(loc: tuple[int | str, ...]) -> str:
    """('grid', 'model', 1) -> 'grid.model[1]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _unwrap(annotation: Any) -> Any:
    """list[X] -> X, X | None -> X (to walk the models along an error location)."""
    while True:
        origin = typing.get_origin(annotation)
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if origin in (list, typing.Union, types.UnionType) and len(args) == 1:
            annotation = args[0]
        else:
            return annotation


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    """The model classes of a union of several models (a tagged union), else []."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return []
    members = [a for a in typing.get_args(annotation)
               if isinstance(a, type) and issubclass(a, BaseModel)]
    return members if len(members) > 1 else []


def _member_for(members: list[type[BaseModel]], tag: str, discriminator: Any) -> type | None:
    """The member of a tagged union that pydantic names `tag` in an error location."""
    for member in members:
        if member.__name__ == tag:
            return member
        if isinstance(discriminator, str) and discriminator in member.model_fields:
            if tag in typing.get_args(member.model_fields[discriminator].annotation):
                return member
    return None


def _walk(
    loc: tuple[int | str, ...], root: type[BaseModel]
) -> tuple[tuple[int | str, ...], type[BaseModel] | None]:
    """Follow an error location from `root` through the models.

    Returns the location without the tags pydantic inserts after a union of models
    (`search.grid.alpha` -> `search.alpha`) and the model the location ends at (None when it
    leaves the models, e.g. inside a dict).
    """
    model: Any = root
    out: list[int | str] = []
    i = 0
    while i < len(loc):
        part = loc[i]
        out.append(part)
        i += 1
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            model = None
            continue
        field = model.model_fields.get(part)
        if field is None:
            model = None
            continue
        model = _unwrap(field.annotation)
        members = _union_members(model)
        if members and i < len(loc) and isinstance(loc[i], str):
            chosen = _member_for(members, str(loc[i]), field.discriminator)
            if chosen is not None:
                model = chosen
                i += 1  # the tag is not a key of the file
    return tuple(out), model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _describe(error: dict[str, Any], root: type[BaseModel]) -> tuple[str, str]:
    """One pydantic error -> (location, message with the bad value)."""
    kind = error["type"]
    value = error.get("input")
    raw = tuple(error["loc"])
    if kind in ("extra_forbidden", "missing"):
        loc, parent = _walk(raw[:-1], root)
        if kind == "missing":
            return format_loc(loc), f"missing required key {raw[-1]!r}"
        valid = f"; valid: {', '.join(parent.model_fields)}" if parent is not None else ""
        return format_loc(loc), f"unknown key {raw[-1]!r}{valid}"
    loc, _ = _walk(raw, root)
    if kind == "too_short":
        return format_loc(loc), "must not be empty"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        return format_loc(loc), message
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return format_loc(loc), f"expected a mapping, got {_show(value)}"
    return format_loc(loc), f"{error['msg'][:1].lower()}{error['msg'][1:]}, got {_show(value)}"


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return f"{value!r} ({type(value).__name__})"


Model = typing.TypeVar("Model", bound=BaseModel)


def validation_error(exc: ValidationError, source: str, root: type[BaseModel]) -> ConfigError:
    """A pydantic error of a file whose schema is `root` -> one line `<file>: <key>: <problem>`.

    A misspelled key explains the "missing" error that comes with it, so it is reported first.
    """
    errors = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    loc, message = _describe(errors[0], root)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return ConfigError(f"{source}: {loc}: {message}{more}")


def parse_model(data: Any, source: str, root: type[Model], keys: str) -> Model:
    """Validate parsed YAML data against the file schema `root` (a StrictModel).

    `source` names the file in error messages, `keys` hints at the top-level keys
    ("name, grid, ...") when the data is not a mapping. Raises ConfigError (one line).
    """
    if data is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping ({keys})")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping ({keys}), got {_show(data)}")
    try:
        return root.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, source, root) from None


def parse_config(data: Any, source: str) -> GridConfig:
    """Validate parsed YAML data of a grid file; `source` names the file in error messages."""
    if data is None:
        raise ConfigError(f"{source}: the file is empty; expected a mapping with a 'grid' key")
    config = parse_model(data, source, GridConfig, "name, grid, ...")
    config._source = source
    return config


def load_config(path: str | Path) -> GridConfig:
    """Read and validate a grid file (schema only: see `hamgraph.grid.expand` for names)."""
    return parse_config(read_yaml(path), str(path))
