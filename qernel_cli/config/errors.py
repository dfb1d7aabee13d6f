"""``ConfigError`` and the helpers that word its one-line messages."""

from __future__ import annotations

import difflib
from typing import Any

from qernel_cli.errors import QernelError


class ConfigError(QernelError, ValueError):
    """A configuration that cannot be used; the message is one line naming the field."""


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a value (one line: strings escape their line breaks), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unknown_key(path: str, name: str, known: list[str]) -> str:
    """"unknown key a.b; did you mean a.c? known: …" (the suggestion only if a known key is close)."""
    close = difflib.get_close_matches(name, known, n=1) or difflib.get_close_matches(name.lower(), known, n=1)
    hint = f"; did you mean {path[: -len(name)]}{close[0]}?" if close else ";"
    return f"unknown key {path}{hint} known: {', '.join(sorted(known))}"
