"""Strict params -> config: one path from a ``params.yaml`` section to a typed dataclass.

Every mistake is a :class:`ConfigError` whose one-line message names the params key, the bad
value and what is allowed; a stage prints it as ``error: ...`` with no traceback. Unknown keys
are errors everywhere (a typo such as ``lerning_rate`` must never train at the default).

Supported field types: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Literal[...]``,
``X | None``, ``tuple[T, ...]`` (from a YAML list), ``list[T]``, ``dict``/``Mapping``
(checked to be a mapping), and nested config dataclasses.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from zhnlp.errors import UserError

T = TypeVar("T")

# Names that become DVC stage names, paths and command arguments: letters, digits, '_', '-', '.'
# (not first), at most 64 characters. No shell metacharacter, no '/', never '.' or '..'.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(UserError):
    """A params mistake; its message is one line naming the key, the value and what is allowed."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def choice(where: str, value: Any, allowed: typing.Iterable[Any]) -> Any:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{where}: {_show(value)} is not allowed; use one of {', '.join(map(str, allowed))}")
    return value


def check_name(where: str, name: Any) -> str:
    """A stage-generating name (a key under downloads, clue.tasks, tokenizer, ...)."""
    if not isinstance(name, str) or not SAFE_NAME.match(name):
        raise ConfigError(
            f"{where}: name {_show(name)} is not allowed; use 1-64 letters, digits, '_', '-' or '.' (not first)"
        )
    return name


def check_names(where: str, names: typing.Iterable[Any]) -> list[str]:
    return [check_name(where, n) for n in names]


def require_mapping(where: str, value: Any) -> Mapping:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values, got {_show(value)}")
    return value


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is not None and origin in (dict, Mapping, typing.get_origin(Mapping[str, Any])):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def convert(where: str, value: Any, tp: Any) -> Any:
    """``value`` checked (and, for lists and nested configs, converted) against the type ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        return choice(where, value, typing.get_args(tp))
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return convert(where, value, arg)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {_show(value)} is not allowed; expected {_type_name(tp)}")
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list):
        if isinstance(value, (list, tuple)):
            item = typing.get_args(tp)[0]
            items = [convert(f"{where}[{i}]", v, item) for i, v in enumerate(value)]
            return tuple(items) if origin is tuple else items
    elif tp in (dict, Mapping) or origin in (dict, Mapping, typing.get_origin(Mapping[str, Any])):
        if isinstance(value, Mapping):
            return dict(value)
    elif dataclasses.is_dataclass(tp):
        return from_params(tp, value, where)
    else:
        raise TypeError(f"zhnlp.config: unsupported field type {tp!r} at {where}")
    raise ConfigError(f"{where}: {_show(value)} is not allowed; expected {_type_name(tp)}")


def from_params(cls: type[T], entry: Any, where: str, **fixed: Any) -> T:
    """Build the dataclass ``cls`` from the params mapping ``entry`` found at params key ``where``.

    Unknown and missing keys, wrong types and values outside a ``Literal`` are ConfigErrors.
    ``fixed`` fills fields that do not come from params (for example a task's name). A class may
    define ``validate(self, where)`` for cross-field rules; it raises ConfigError too.
    """
    entry = require_mapping(where, entry if entry is not None else {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in fixed}
    unknown = sorted(str(k) for k in entry if k not in fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = dict(fixed)
    for name, f in fields.items():
        if name in entry:
            kwargs[name] = convert(f"{where}.{name}", entry[name], hints[name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where}: missing required key {name!r}")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if callable(check):
        check(where)
    return obj


def in_range(where: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    """``low <= value <= high`` (``< high`` when ``high_open``), else a ConfigError naming the range."""
    ok = low <= value < high if high_open else low <= value <= high
    if not ok:
        bracket = ")" if high_open else "]"
        raise ConfigError(f"{where}: {_show(value)} is not allowed; use a number in [{low}, {high}{bracket}")
