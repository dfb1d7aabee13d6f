"""Where configs come from: the bundled presets, TOML files, and :func:`resolve` (preset + overrides → Config)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from qernel_cli.config.coercion import from_dict
from qernel_cli.config.errors import ConfigError
from qernel_cli.config.overrides import apply_overrides
from qernel_cli.config.schema import Config
from qernel_cli.errors import os_reason


def presets_dir() -> Path:
    """Directory of the bundled preset TOML files (installed copy first, then the source tree)."""
    package = Path(__file__).resolve().parent.parent  # qernel_cli/, this module being qernel_cli/config/presets.py
    for candidate in (package / "_presets", package.parent / "presets"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("preset directory not found: the installation is incomplete")


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file with one-line errors for missing or malformed files."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {os_reason(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"malformed TOML in {path}: {err}") from None


def load_preset_data(name: str) -> dict[str, Any]:
    """Raw data of a preset by name, or of a TOML file if ``name`` is a path."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return read_toml(path)
    candidate = presets_dir() / f"{name}.toml"
    if not candidate.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return read_toml(candidate)


def resolve(preset: str, overrides: list[str] | None = None) -> Config:
    """Preset (name or TOML path) + overrides → validated :class:`Config` (the first error found: :class:`ConfigError`)."""
    data = load_preset_data(preset)
    data = apply_overrides(data, list(overrides or []))
    return from_dict(data)
