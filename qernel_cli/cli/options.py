"""The options several commands share: --preset and --set."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

PresetOption = Annotated[
    str,
    typer.Option("--preset", "-p", help="Preset name (see `qernel presets`) or path to a TOML config file."),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        "-s",
        help="Override one config field, e.g. --set model.layers=4 --set hamiltonian.coulomb=false (repeatable).",
    ),
]
