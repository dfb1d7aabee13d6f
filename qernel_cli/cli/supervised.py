"""What the commands that compute (train, sample, phasediagram) hand the supervisor: phase lines, CPU or not."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from qernel_cli.cli.application import err, warning

T = TypeVar("T")


def phase_lines(quiet: bool) -> Callable[[str], None] | None:
    """Phase lines for logs (stderr not a terminal): where the work stands; on a terminal the bars show it."""
    if quiet or err.is_terminal:
        return None
    from qernel_cli.progress import phase_line

    return lambda name: phase_line(err, name)


def computes_on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"


def with_progress(name: str, work: Callable[[Any], T], *, quiet: bool, files: str) -> T:
    """``work(progress)`` under the supervisor with a progress bar ``name``: signals, stall warnings, phase lines.

    ``files`` says, for a forced exit, what state the files are left in.
    """
    from qernel_cli.progress import task_progress
    from qernel_cli.supervisor import supervise

    with task_progress(err, name, enabled=not quiet) as progress:
        return supervise(
            lambda interrupt: work(progress), warn=warning, files=files, idle_means_stuck=computes_on_cpu(), announce=phase_lines(quiet)
        )
