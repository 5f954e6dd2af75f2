"""One config system for every model family and for training: typed dataclasses.

    config = from_dict(MyConfig, raw, where="model.json")   # unknown keys refused, types coerced
    raw = to_dict(config)                                     # plain JSON/YAML-ready values
    apply_override(raw, "train.learning_rate=1e-4")           # one `--set key.path=value`

Field types come from the dataclass annotations: int, float, bool, str, `X | None`, tuple[...],
list[...], dict, Literal[...] and nested dataclasses (also in lists). A wrong value raises
ConfigError naming the file (`where`) and the key, on one line.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from onehead.errors import ConfigError


def from_dict(cls, raw, where: str = "config"):
    """cls(**raw) with every value checked and coerced to its field's type."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
    values = {name: coerce(value, hints[name], f"{where}: {name}") for name, value in raw.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:  # a __post_init__ check
        raise ConfigError(f"{where}: {exc}") from None


def to_dict(config) -> dict:
    """A dataclass as plain dicts, lists and scalars (tuples become lists)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value
    return plain(config)


def coerce(value, hint, key: str):
    """value as type `hint`, or ConfigError naming `key`."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key} must not be empty")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {hint}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, key)
    if origin in (tuple, list) or hint in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key} must have {len(args)} entries, got {len(value)}")
            items = [coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item = args[0] if args else Any
            items = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or hint) is tuple else items
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return to_dict(value)  # free-form: kept in its JSON form (lists, not tuples)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        try:
            number = float(value)  # YAML reads `1e-4` as a string
        except (TypeError, ValueError):
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
        if hint is int:
            if not number.is_integer():
                raise ConfigError(f"{key} must be a whole number, got {value!r}")
            return int(number)
        return number
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    return value


def replace(config, where: str = "overrides", **changes):
    """A copy of `config` with `changes` checked and coerced like from_dict."""
    return from_dict(type(config), {**to_dict(config), **changes}, where)


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set a.b.c=value` in place (value parsed as YAML; list items by index: data.train.0.weight)."""
    import yaml

    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key.path=value")
    path, text = assignment.split("=", 1)
    keys = path.strip().split(".")
    node = raw
    for key in keys[:-1]:
        if isinstance(node, list):
            node = node[_list_index(node, key, path)]
        elif isinstance(node, dict):
            node = node.setdefault(key, {})
        else:
            raise ConfigError(f"--set {assignment!r}: {key!r} is not a section")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(node, list):
        node[_list_index(node, keys[-1], path)] = value
    elif isinstance(node, dict):
        node[keys[-1]] = value
    else:
        raise ConfigError(f"--set {assignment!r}: {'.'.join(keys[:-1])} is not a section")


def _list_index(node, key, path):
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"--set {path}: {key!r} is not an index of a list of {len(node)}")
    return int(key)
