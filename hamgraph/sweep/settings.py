"""The vocabulary of searched settings: one name per run setting, one function that applies it.

A name in a sweep's `search.space` is the same name a grid uses:

    alpha, beta                 HAM's step (the cell's `ham`; alpha < 0 is nHAM)
    clamp, mask_beta,           HAM's other settings (HamSettings); a baseline cell has no HAM,
    sign_source                 so these only vary the HAM cells
    lr, dropout, hidden, ...    fields of NodeParams / GraphParams: the grid's `overrides:`
    base.<option>               an option of the base optimizer (base.momentum, base.betas),
                                as in `base: {sgd: {momentum: 0.9}}`
    model.<option>,             an option of the sweep's plug-in model / dataset (its callable's
    dataset.<option>            keyword argument, as in `{_target_: mylab.MyGNN, width: 64}`):
                                it changes the plug-in's options, so its identity and the run
                                key; every model (dataset) of the sweep must then be a plug-in
                                that takes the option (`hamgraph.sweep.schema` checks it)

`setting_kind` resolves a name (an unknown or ambiguous one is a UserInputError listing the
valid names); `apply_setting` applies one value to a `Recipe` (what `grid.specs_for` takes),
and `check_setting` validates a value with the code the grid uses for the same setting
(`grid.apply_overrides`, `optim.factory.check_base_options`, `config.HamOptions`);
`check_plugin_setting` checks a plug-in option with the plug-in loader's own checks.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from hamgraph.errors import UserInputError
from hamgraph.specs import GraphParams, HamSettings, NodeParams, PluginRef

SettingKind = Literal["alpha_beta", "ham", "params", "base", "model", "dataset"]

ALPHA_BETA = ("alpha", "beta")
HAM_OPTIONS = tuple(f.name for f in dataclasses.fields(HamSettings) if f.name not in ALPHA_BETA)
PARAM_FIELDS = tuple(dict.fromkeys(
    f.name for cls in (NodeParams, GraphParams) for f in dataclasses.fields(cls)
))
BASE_PREFIX = "base."
PLUGIN_PREFIXES = ("model.", "dataset.")


def valid_names() -> str:
    return ", ".join([*ALPHA_BETA, *HAM_OPTIONS, *PARAM_FIELDS, f"{BASE_PREFIX}<option>",
                      *(f"{p}<option>" for p in PLUGIN_PREFIXES)])


def setting_kind(name: str) -> SettingKind:
    """What a searched name sets. Raises UserInputError (listing the valid names)."""
    if name in ALPHA_BETA:
        return "alpha_beta"
    if name in HAM_OPTIONS:
        return "ham"
    if name in PARAM_FIELDS:
        return "params"
    if name.startswith(BASE_PREFIX) and len(name) > len(BASE_PREFIX):
        return "base"
    for prefix in PLUGIN_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return "model" if prefix == "model." else "dataset"
    raise UserInputError(f"unknown setting {name!r}; valid: {valid_names()}")


def is_ham_only(name: str) -> bool:
    """A setting of HAM itself: it varies HAM cells only, never the baseline."""
    return setting_kind(name) in ("alpha_beta", "ham")


@dataclasses.dataclass
class Recipe:
    """What the RunSpecs of one cell are made from (the arguments of `grid.specs_for`)."""

    overrides: dict[str, Any]  # NodeParams / GraphParams fields
    base: str | None  # None: the protocol's base optimizer
    base_options: dict[str, Any]
    ham: HamSettings | None  # None: the baseline (HAM settings then do not apply)
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # of a plug-in
    dataset_options: dict[str, Any] = dataclasses.field(default_factory=dict)


def apply_setting(recipe: Recipe, name: str, value: Any) -> Recipe:
    """`recipe` with the searched setting `name` set to `value` (the one place that does it)."""
    kind = setting_kind(name)
    if kind == "params":
        return dataclasses.replace(recipe, overrides={**recipe.overrides, name: value})
    if kind == "base":
        option = name[len(BASE_PREFIX):]
        return dataclasses.replace(recipe, base_options={**recipe.base_options, option: value})
    if kind in ("model", "dataset"):
        field = f"{kind}_options"
        option = name.split(".", 1)[1]
        return dataclasses.replace(recipe, **{field: {**getattr(recipe, field), option: value}})
    if recipe.ham is None:  # HAM settings leave a baseline alone
        return recipe
    return dataclasses.replace(recipe, ham=dataclasses.replace(recipe.ham, **{name: value}))


def param_type(name: str, params_kind: str) -> Any:
    """The annotated type of a params field (for the sampler: int or float or a choice)."""
    cls = {"NodeParams": NodeParams, "GraphParams": GraphParams}[params_kind]
    return typing.get_type_hints(cls).get(name)


def check_setting(name: str, value: Any, *, params: Any, base: str) -> None:
    """Raise UserInputError when `value` is not valid for setting `name` (the grid's checks).

    `params`: the cell's preset params (NodeParams / GraphParams), `base`: the base optimizer.
    """
    from hamgraph.config import HamOptions
    from hamgraph.grid import OverrideError, apply_overrides
    from hamgraph.optim.factory import check_base_options

    kind = setting_kind(name)
    if kind == "params":
        try:
            apply_overrides(params, {name: value})
        except OverrideError as exc:
            raise UserInputError(exc.problem) from None
        return
    if kind == "base":
        option = name[len(BASE_PREFIX):]
        check_base_options(base, {option: value})
        _try_base_option(base, option, value)
        return
    from pydantic import ValidationError

    given = {"alpha": 1.0, "beta": 0.0, name: value}
    try:
        HamOptions.model_validate(given)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        problem = str(error["msg"]).removeprefix("Value error, ")
        raise UserInputError(f"{problem[:1].lower()}{problem[1:]}, got {value!r}") from None


def _try_base_option(base: str, option: str, value: Any) -> None:
    """Build the base optimizer on one tensor with the option: torch checks the value
    (`Invalid momentum value: -1`), as it would when the run starts."""
    import torch

    from hamgraph.optim.factory import resolve_base

    value = list(value) if isinstance(value, tuple) else value
    try:
        resolve_base(base)([torch.zeros(1, requires_grad=True)], lr=1e-3, **{option: value})
    except (ValueError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserInputError(f"{first} (got {value!r})") from None


def plugin_option(name: str) -> str:
    """The option a `model.<option>` / `dataset.<option>` name sets."""
    return name.split(".", 1)[1]


def check_plugin_setting(
    name: str, value: Any, *, what: str, ref: PluginRef | None, params: Any, task: str
) -> None:
    """Raise UserInputError when a `model.<option>` / `dataset.<option>` value cannot be used:
    the study's model / dataset (`what`, its PluginRef `ref`, None for a built-in) is built in,
    its callable does not take the option, or it fails the plug-in loader's probe with it
    (a model: built and run on the 3-node probe graph with the cell's `params`; a dataset:
    called and its graph and split checked, and it must stay a `task` dataset)."""
    from hamgraph.plugins import with_options

    kind = setting_kind(name)
    option = plugin_option(name)
    if ref is None:
        if kind == "model":
            from hamgraph.models.plugin import MODEL_FIELDS

            raise UserInputError(
                f"model {what!r} is built into hamgraph and has no options to search; its "
                f"settings are params fields, searched by their own names "
                f"({', '.join(MODEL_FIELDS)}, lr, ...)"
            )
        raise UserInputError(
            f"dataset {what!r} is built into hamgraph and has no options to search"
        )
    if option in ref.kwargs:
        raise UserInputError(f"{option} is also given in the options of {kind} {what!r}; "
                             "keep one")
    value = list(value) if isinstance(value, tuple) else value
    changed = with_options(ref, **{option: value})
    if kind == "model":
        from hamgraph.models.plugin import check_graph_model, check_node_model

        if task == "graph":
            check_graph_model(changed, params)
        else:
            check_node_model(changed, params)
        return
    from hamgraph.data.plugin import plugin_info

    info = plugin_info(what, changed)
    if info.task != task:
        raise UserInputError(f"with {option}={value!r}, dataset {what!r} is a {info.task} "
                             f"dataset, not a {task} one like the sweep's other values")
