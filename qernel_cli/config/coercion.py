"""Building a :class:`Config` from plain nested data (as read from TOML), with type checks.

Every value is checked against its field's annotation; a wrong type or an
unknown key fails with one line naming the field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Literal

from qernel_cli.config.errors import ConfigError, _short, _unknown_key
from qernel_cli.config.schema import Config


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, field: str) -> Any:
    """Check ``value`` against the annotated type ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{field}: expected one of {_type_name(tp)}, got {_short(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{field}: expected true or false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected an integer, got {_short(value)}")
        if not -(2**63) <= value < 2**63:  # TOML integers are 64-bit; so are the arrays they size
            raise ConfigError(f"{field}: {_short(value)} is out of the 64-bit integer range")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{field}: expected a number, got {_short(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{field}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            quoted = f' (write it in quotes: "{value}")' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            raise ConfigError(f"{field}: expected a string, got {_short(value)}{quoted}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {field}")  # pragma: no cover


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Type-checked keyword arguments of ``cls`` (a section, built; for :class:`Config`, the kwargs)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table, got {_short(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"[{prefix}]" if prefix else "top level"
        raise ConfigError(f"{_unknown_key(f'{prefix}.{unknown[0]}' if prefix else unknown[0], unknown[0], sorted(names))} (in {where})")
    kwargs = {}
    for name in (f.name for f in dataclasses.fields(cls) if f.name in data):  # declaration order: the same first error every run
        tp = hints[name]
        path = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], path)
        else:
            kwargs[name] = _coerce(data[name], tp, path)
    return kwargs if cls is Config else cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data (as read from TOML)."""
    return Config(**_build(Config, data, ""))
