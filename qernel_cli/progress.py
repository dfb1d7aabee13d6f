"""Rich progress display for long work (on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def counted_progress(console: Console) -> Progress:
    """Description, bar, done/total, a free-text ``info`` field, elapsed and remaining time."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


class TrainReporter:
    """Progress bars for pre-training and VMC: step, E ± err (meV/electron), variance, acceptance, steps/s."""

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.progress: Progress | None = None
        self.task = None
        self._t0 = 0.0
        self._n0 = 0

    def _start(self, description: str, total: int, completed: int = 0) -> None:
        if not self.enabled:
            return
        self.stop()
        self.progress = counted_progress(self.console)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, completed=completed, info="")
        self._t0 = time.perf_counter()
        self._n0 = completed

    def start_pretrain(self, total: int) -> None:
        self._start("pre-train", total)

    def pretrain_step(self, i: int, infidelity: float, acceptance: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=i + 1, info=f"1−F {infidelity:.3e}  acc {acceptance:.2f}")

    def end_pretrain(self) -> None:
        self.stop()

    def start_training(self, first: int, total: int) -> None:
        self._start("VMC", total, first)

    def training_step(self, row: dict[str, Any], rejected: int) -> None:
        if self.progress is None:
            return
        done = int(row["step"]) + 1
        rate = (done - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
        e = float(np.mean(row["energy"]))
        err = float(np.sqrt(np.mean(np.square(row["energy_error"]))) / np.sqrt(len(np.atleast_1d(row["energy_error"]))))
        info = (
            f"E {e:+.4f}±{err:.4f} meV/e  var {float(np.mean(row['variance'])):.3g} meV²  "
            f"acc {float(np.mean(row['acceptance'])):.2f}  {rate:.2f} st/s"
        )
        if rejected:
            info += f"  [red]rejected {rejected}[/]"
        self.progress.update(self.task, completed=done, info=info)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def discard(self) -> None:
        """Stop without leaving the bar behind (before an error message): erased on a terminal, not printed elsewhere."""
        if self.progress is not None:
            _discard(self.progress)
            self.progress = None


@contextlib.contextmanager
def task_progress(console: Console, description: str, enabled: bool = True) -> Iterator[Callable[[int, int, dict], None]]:
    """A progress bar for a counted job; yields ``update(done, total, values)`` (values: energy meV/e, acceptance)."""
    if not enabled:
        yield lambda done, total, values: None
        return
    progress = counted_progress(console)
    task = progress.add_task(description, total=None, info="")

    def update(done: int, total: int, values: dict) -> None:
        info = "  ".join(
            f"{name} {value:+.4f} meV/e" if name == "energy" else f"{name[:3]} {value:.2f}" for name, value in values.items()
        )
        progress.update(task, completed=done, total=total, info=info)

    progress.start()
    try:
        yield update
    except BaseException:
        _discard(progress)  # an error leaves no half-finished bar above its one-line message
        raise
    progress.stop()


def _discard(progress: Progress) -> None:
    """Stop a progress display without leaving it behind: erased on a terminal, not printed elsewhere."""
    console = progress.console
    quiet = console.quiet
    progress.live.transient = True
    console.quiet = quiet or not console.is_terminal
    try:
        progress.stop()
    finally:
        console.quiet = quiet
