"""What the commands that compute (train, sample, phasediagram) hand the supervisor: phase lines, CPU or not."""

from __future__ import annotations

from typing import Callable

from qernel_cli.cli.application import err


def phase_lines(quiet: bool) -> Callable[[str], None] | None:
    """Phase lines for logs (stderr not a terminal): where the work stands; on a terminal the bars show it."""
    if quiet or err.is_terminal:
        return None
    from qernel_cli.progress import phase_line

    return lambda name: phase_line(err, name)


def computes_on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"
