"""The ``qernel`` command line: train, sample, observe, phasediagram, exact, presets, info.

Importing the command modules registers their commands on ``app``, in the order
``qernel --help`` lists them; the heavy imports (JAX, zarr) stay inside the commands.
"""

from __future__ import annotations

from qernel_cli.cli.application import app, main
from qernel_cli.cli import config_commands, run_commands, analysis_commands  # noqa: F401  (registers the commands)

__all__ = ["app", "main"]
