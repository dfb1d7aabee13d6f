"""Run configuration: presets (TOML), ``--set section.key=value`` overrides, validation.

A config is a tree of frozen dataclasses; every field has a type that is
checked when the config is built, so a typo or a wrong type fails early with
one line naming the field. Physical inputs are in physical units (nm, meV,
degrees, m_e); conversion to moiré units happens in :mod:`qernel_cli.units`.

Modules: ``schema`` (the section dataclasses and :class:`Config`), ``errors``
(:class:`ConfigError` and the wording of its messages), ``coercion`` (plain
data → typed Config: :func:`from_dict`), ``validation`` (:func:`validate`),
``overrides`` (``--set``), ``presets`` (bundled presets, TOML files,
:func:`resolve`).
"""

from __future__ import annotations

from qernel_cli.config.coercion import from_dict
from qernel_cli.config.errors import ConfigError
from qernel_cli.config.overrides import apply_overrides, parse_override
from qernel_cli.config.presets import load_preset_data, preset_names, presets_dir, read_toml, resolve
from qernel_cli.config.schema import (
    Config,
    ElectronsConfig,
    HamiltonianConfig,
    MaterialConfig,
    ModelConfig,
    OptimizerConfig,
    PretrainConfig,
    SamplerConfig,
    SupercellConfig,
    TrainingConfig,
)
from qernel_cli.config.validation import validate

__all__ = [
    "Config",
    "ConfigError",
    "ElectronsConfig",
    "HamiltonianConfig",
    "MaterialConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PretrainConfig",
    "SamplerConfig",
    "SupercellConfig",
    "TrainingConfig",
    "apply_overrides",
    "from_dict",
    "load_preset_data",
    "parse_override",
    "preset_names",
    "presets_dir",
    "read_toml",
    "resolve",
    "validate",
]
