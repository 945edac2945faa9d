"""Code named by the user: models, datasets and metrics that are not built in.

A user-facing choice of each kind resolves in one function (`hamgraph.models.resolve_model_choice`,
`hamgraph.data.registry.resolve_dataset_choice`, `hamgraph.train.metrics.resolve_metric_choice`),
always in this order:

1. a built-in short name ("gcn", "cora", "accuracy");
2. an installed entry point of the kind's group (`ENTRY_POINT_GROUPS`), found through
   `importlib.metadata` when it is asked for (never registered by an import side effect);
3. a mapping `{_target_: dotted.import.path, ...options}`.

A name that two sources define (built-in and entry point, or two distributions) is an error
naming both. This module holds what the three kinds share: reading the YAML forms into a
`PluginRef`, finding entry points, importing a target, checking options against its signature
and hashing its module's source. It imports no model and no dataset (layering).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import inspect
import re
import sys
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from hamgraph.errors import UserInputError
from hamgraph.specs import PluginRef, freeze_options

Kind = Literal["model", "dataset", "metric"]

ENTRY_POINT_GROUPS: dict[str, str] = {
    "model": "hamgraph.models",
    "dataset": "hamgraph.datasets",
    "metric": "hamgraph.metrics",
}
# hamgraph's own keys inside a `_target_` mapping (never passed to the callable)
SETTING_KEYS: dict[str, tuple[str, ...]] = {
    "model": (),
    "dataset": ("task", "metric", "runs", "split"),
    "metric": ("higher_is_better",),
}
TARGET = "_target_"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class PluginError(UserInputError):
    """A plug-in that cannot be used: not importable, not callable, bad options, wrong shape."""


@dataclass(frozen=True)
class EntryPointInfo:
    """One installed entry point: `hamgraph models` / `hamgraph datasets` list these."""

    kind: str
    name: str
    value: str  # "package.module:attribute"
    distribution: str


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown distribution"
    return f"{dist.metadata['Name']} {dist.version}"


def installed(kind: str) -> list[EntryPointInfo]:
    """Every entry point of the kind's group, in name order (nothing is imported)."""
    found = importlib.metadata.entry_points(group=ENTRY_POINT_GROUPS[kind])
    infos = {
        (ep.name, ep.value, _distribution(ep)): EntryPointInfo(kind, ep.name, ep.value,
                                                               _distribution(ep))
        for ep in found
    }  # the same distribution seen twice on sys.path counts once
    return sorted(infos.values(), key=lambda i: (i.name, i.distribution))


def format_installed(kind: str) -> str:
    """The installed plug-ins of a kind as text (`hamgraph models` / `hamgraph datasets`)."""
    found = installed(kind)
    group = ENTRY_POINT_GROUPS[kind]
    if not found:
        return f"\nno {kind} plug-ins installed (entry point group {group})\n"
    lines = [f"\n{kind} plug-ins (entry point group {group}):"]
    lines += [f"  {ep.name:<16} {ep.value}  [{ep.distribution}]" for ep in found]
    return "\n".join(lines) + "\n"


def find_entry_point(kind: str, name: str, builtins: Collection[str]) -> EntryPointInfo | None:
    """The entry point named `name` (case-insensitive), or None.

    Raises PluginError when two sources define the name: a built-in and an entry point, or
    two distributions.
    """
    key = name.strip().lower()
    matches = [ep for ep in installed(kind) if ep.name.lower() == key]
    if not matches:
        return None
    if key in builtins:
        raise PluginError(
            f"{kind} name {name!r} is defined twice: built into hamgraph and by the entry point "
            f"of {matches[0].distribution} ({matches[0].value}); uninstall one or name the "
            f"plug-in by {TARGET}"
        )
    if len({(m.value, m.distribution) for m in matches}) > 1:
        both = " and ".join(f"{m.distribution} ({m.value})" for m in matches)
        raise PluginError(f"{kind} name {name!r} is defined twice: by {both}")
    return matches[0]


def import_target(path: str) -> Any:
    """The object at `package.module.attr` (or `package.module:attr`). PluginError if none."""
    if ":" in path:
        module_name, _, attr = path.partition(":")
        parts = [module_name, *attr.split(".")] if attr else [module_name]
        split_at = [1]
    else:
        parts = path.split(".")
        split_at = list(range(len(parts) - 1, 0, -1))
    if not path or not all(parts):
        raise PluginError(f"{TARGET} {path!r} is not a dotted import path")
    last_error: Exception | None = None
    for i in split_at:
        module_name = ".".join(parts[:i])
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                # the module exists but imports something that does not
                raise PluginError(f"cannot import {path!r}: {exc}") from None
            last_error = exc
            continue
        except Exception as exc:  # the module raised while importing
            raise PluginError(
                f"cannot import {path!r}: {type(exc).__name__}: {exc}"
            ) from None
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise PluginError(
                f"cannot import {path!r}: module {module_name!r} has no attribute "
                f"{'.'.join(parts[i:])!r}"
            ) from None
        return obj
    raise PluginError(f"cannot import {path!r}: {last_error}")


def source_hash(obj: Any) -> str:
    """sha256 (first 12 hex digits) of the source file of the module that defines `obj`;
    "" when it has none (a built-in or a module without a file)."""
    module = sys.modules.get(getattr(obj, "__module__", "") or "")
    file = getattr(module, "__file__", None)
    if not file:
        return ""
    try:
        return hashlib.sha256(Path(file).read_bytes()).hexdigest()[:12]
    except OSError:
        return ""


def check_call(obj: Any, positional: int, options: dict[str, Any], what: str) -> None:
    """`obj` is callable and accepts `positional` positional arguments plus `options` by name.

    Raises PluginError naming the option the signature does not take.
    """
    if not callable(obj):
        raise PluginError(f"{what} is a {type(obj).__name__}, not a class or a function")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return  # no signature to check (some builtins): the first call will tell
    try:
        signature.bind(*([None] * positional), **options)
    except TypeError as exc:
        raise PluginError(f"{what} does not take these options: {exc}") from None


def accepted_names(obj: Any) -> set[str]:
    """The parameter names `obj` accepts by keyword (not `**kwargs`)."""
    try:
        parameters = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {
        p.name for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def safe_name(text: str) -> str:
    """A readable name usable in keys and file names: "My GNN" -> "My-GNN"."""
    name = _SAFE.sub("-", text).strip("-.")
    return name or "plugin"


def display_of(obj: Any, fallback: str) -> str:
    return str(getattr(obj, "__name__", "") or fallback.rsplit(".", 1)[-1].rsplit(":", 1)[-1])


def parse_choice(
    kind: Kind, value: Any, builtins: Collection[str]
) -> tuple[str, PluginRef | None, Any]:
    """A YAML choice of `kind` -> (readable name, PluginRef or None for a built-in, the object).

    `value`: a built-in name, an entry-point name, or `{_target_: path, ...}`. The object is
    the imported class / function (None for built-ins). Options are checked by the caller
    (each kind knows its positional arguments).
    """
    if isinstance(value, str):
        key = value.strip().lower()
        found = find_entry_point(kind, key, builtins)
        if found is None:
            return key, None, None
        try:
            obj = _load_entry_point(kind, found)
        except PluginError:
            raise
        ref = PluginRef(
            target=found.value,
            display=display_of(obj, found.value),
            entry_point=f"{found.name} ({found.distribution})",
            source_hash=source_hash(obj),
        )
        ref = _with_attribute_settings(kind, ref, obj, {})
        return safe_name(found.name), ref, obj
    if isinstance(value, dict):
        if TARGET not in value:
            raise PluginError(
                f"a {kind} mapping needs a {TARGET} key (a dotted import path), got keys "
                f"{sorted(map(str, value))}"
            )
        target = value[TARGET]
        if not isinstance(target, str):
            raise PluginError(f"{TARGET} must be a dotted import path, got {target!r}")
        found = None
        if "." not in target and ":" not in target:  # an entry point's name, with options
            found = find_entry_point(kind, target, builtins)
            if found is None:
                raise PluginError(
                    f"{TARGET} {target!r} is neither a dotted import path nor the name of an "
                    f"installed {ENTRY_POINT_GROUPS[kind]} entry point"
                )
            obj = _load_entry_point(kind, found)
            target = found.value
        else:
            obj = import_target(target)
        if not callable(obj):
            raise PluginError(
                f"{TARGET} {target!r} is a {type(obj).__name__}, not a class or a function"
            )
        rest = {str(k): v for k, v in value.items() if k != TARGET}
        display = rest.pop("display", None)
        if display is not None and not isinstance(display, str):
            raise PluginError(f"display must be a string, got {display!r}")
        settings = {k: rest.pop(k) for k in SETTING_KEYS[kind] if k in rest}
        ref = PluginRef(
            target=target,
            options=freeze_options(rest),
            settings=(),
            display=display or display_of(obj, target),
            entry_point=None if found is None else f"{found.name} ({found.distribution})",
            source_hash=source_hash(obj),
        )
        ref = _with_attribute_settings(kind, ref, obj, settings)
        name = safe_name(found.name if found is not None and display is None else ref.display)
        if found is None and name.lower() in builtins:
            raise PluginError(
                f"{TARGET} {target!r} would be named {name!r}, a built-in {kind} name; give it "
                "another display:"
            )
        return name, ref, obj
    raise PluginError(
        f"expected a {kind} name or a mapping with {TARGET}, got {type(value).__name__}"
    )


def _with_attribute_settings(
    kind: str, ref: PluginRef, obj: Any, settings: dict[str, Any]
) -> PluginRef:
    """Settings from the YAML, else from attributes of the object (a metric's
    `higher_is_better`), so that a report never imports the plug-in to read them."""
    if kind == "metric":
        direction = settings.get("higher_is_better", getattr(obj, "higher_is_better", True))
        if not isinstance(direction, bool):
            raise PluginError(f"higher_is_better must be true or false, got {direction!r}")
        settings = {**settings, "higher_is_better": direction}
    return replace(ref, settings=freeze_options(settings))


def _load_entry_point(kind: str, ep: EntryPointInfo) -> Any:
    try:
        return import_target(ep.value)
    except PluginError as exc:
        raise PluginError(
            f"the {kind} entry point {ep.name!r} of {ep.distribution} cannot be imported: {exc}"
        ) from None


def with_options(ref: PluginRef, **changes: Any) -> PluginRef:
    """`ref` with some options replaced or added (e.g. a sweep's `model.hidden`): a new
    identity (another key); target, settings and labels are kept. The caller re-checks it
    (`resolve_model_choice` / `resolve_dataset_choice` on `to_yaml(ref)`) when it must."""
    return replace(ref, options=freeze_options({**ref.kwargs, **changes}))


def to_yaml(ref: PluginRef) -> dict[str, Any]:
    """The `_target_` mapping that resolves to `ref` again."""
    out: dict[str, Any] = {TARGET: ref.target, **ref.kwargs, **ref.setting}
    if ref.display:
        out["display"] = ref.display
    return out


def load(ref: PluginRef) -> Any:
    """The class / function a PluginRef names (imported; Python caches modules)."""
    return import_target(ref.target)


def expand_user(value: Any) -> Any:
    """`~` at the start of string options expanded (at call time only: keys keep the text)."""
    if isinstance(value, str) and value.startswith("~"):
        return str(Path(value).expanduser())
    if isinstance(value, list):
        return [expand_user(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_user(v) for k, v in value.items()}
    return value


def call_kwargs(ref: PluginRef) -> dict[str, Any]:
    """The options to call the target with (`~` expanded)."""
    return {k: expand_user(v) for k, v in ref.kwargs.items()}


__all__ = [
    "ENTRY_POINT_GROUPS",
    "EntryPointInfo",
    "PluginError",
    "accepted_names",
    "call_kwargs",
    "check_call",
    "find_entry_point",
    "import_target",
    "installed",
    "load",
    "parse_choice",
    "safe_name",
    "source_hash",
    "to_yaml",
    "with_options",
]
