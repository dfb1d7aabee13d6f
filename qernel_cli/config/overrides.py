"""``--set section.key=value`` overrides, checked against the :class:`Config` schema."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import typing
from typing import Any

from qernel_cli.config.errors import ConfigError, _short, _unknown_key
from qernel_cli.config.schema import Config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as a TOML value, else as a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {_short(text)}: expected section.key=value")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise ConfigError(f"override {_short(text)}: malformed key {_short(key)}")
    raw = raw.strip()
    if not raw:
        raise ConfigError(f"override {_short(text)}: missing value")
    try:
        document = tomllib.loads(f"v = {raw}")
        value = document["v"] if len(document) == 1 else raw  # "3\nother = 4" is not one TOML value
    except tomllib.TOMLDecodeError:
        value = raw
    return [p.strip() for p in parts], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested ``data`` with ``section.key=value`` overrides applied.

    Unknown sections and keys are rejected against the :class:`Config` schema,
    so a typo never silently adds a setting.
    """
    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        cls: Any = Config
        node = data
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                raise ConfigError(f"override {_short(text)}: {_unknown_key(path, part, sorted(fields))}")
            tp = typing.get_type_hints(cls)[part]
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:
                    raise ConfigError(f"override {_short(text)}: {path} is a section; set one of its keys, e.g. {path}.<key>=...")
                node = node.setdefault(part, {})
                if not isinstance(node, dict):  # the preset file has a value where a section belongs
                    raise ConfigError(f"{path}: expected a table, got {_short(node)}")
                cls = tp
            else:
                if not last:
                    raise ConfigError(f"override {_short(text)}: {path} is a value, not a section")
                if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = text.partition("=")[2].strip()  # a number typed for a text field (filling=1) means its text
                node[part] = value
    return data
