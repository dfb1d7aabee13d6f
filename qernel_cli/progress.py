"""Progress of long work on stderr (stdout stays machine-readable): rich bars on a terminal, plain lines elsewhere.

When stderr is not a terminal (``qernel train … > log 2>&1``, a batch job),
every counted job writes one plain line per ``interval_steps`` steps or
``interval_s`` seconds, whichever comes first, plus its first and last step:
what it is, done/total, the job's own values (E ± err, variance, acceptance,
…), steps/s, elapsed and estimated remaining time. The interval can be set
with ``QERNEL_PROGRESS_EVERY`` (steps) and ``QERNEL_PROGRESS_SECONDS``.
Phase changes of the supervised work (``qernel_cli.supervisor``) are written
as lines too.
"""

from __future__ import annotations

import contextlib
import os
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


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _interval(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


class LineProgress:
    """Plain progress lines for one counted job (the batch-job counterpart of a rich bar)."""

    def __init__(self, console: Console, description: str, total: int | None, completed: int = 0, unit: str = "steps"):
        self.console = console
        self.unit = unit
        self.description = description
        self.total = total
        self.start_done = completed
        self.t0 = time.perf_counter()
        self.last_line = -float("inf")
        self.last_done = completed
        self.every = int(_interval("QERNEL_PROGRESS_EVERY", 10))
        self.seconds = _interval("QERNEL_PROGRESS_SECONDS", 30.0)
        self.pending: tuple[int, str] | None = None

    def update(self, done: int, info: str, total: int | None = None) -> None:
        self.total = total if total is not None else self.total
        now = time.perf_counter()
        first = self.last_done == self.start_done and done > self.start_done
        due = done - self.last_done >= self.every or now - self.last_line >= self.seconds
        last = self.total is not None and done >= self.total
        if first or due or last:
            self._write(done, info, now)
        else:
            self.pending = (done, info)

    def _write(self, done: int, info: str, now: float) -> None:
        elapsed = now - self.t0
        rate = (done - self.start_done) / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total else ""
        remaining = ""
        if self.total and rate > 0:
            remaining = f"  remaining {_clock((self.total - done) / rate)}"
        self.console.print(
            f"{self.description} {done}{of}  {info}  {rate:.3g} {self.unit}/s  elapsed {_clock(elapsed)}{remaining}",
            soft_wrap=True, highlight=False, markup=False,
        )
        self.last_line, self.last_done, self.pending = now, done, None

    def stop(self) -> None:
        """Write the last unreported step, if any."""
        if self.pending is not None:
            self._write(*self.pending, time.perf_counter())


def _plain(info: str) -> str:
    """``info`` without rich markup (for plain lines)."""
    from rich.text import Text

    return Text.from_markup(info).plain


class TrainReporter:
    """Progress of pre-training and VMC: step, E ± err (meV/electron), variance, acceptance, steps/s.

    Rich bars when ``console`` is a terminal, plain lines otherwise.
    """

    def __init__(self, console: Console | None = None, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.enabled = enabled
        self.progress: Progress | None = None
        self.lines: LineProgress | None = None
        self.task = None
        self._t0 = 0.0
        self._n0 = 0

    def _start(self, description: str, total: int, completed: int = 0) -> None:
        if not self.enabled:
            return
        self.stop()
        self._t0 = time.perf_counter()
        self._n0 = completed
        if not self.console.is_terminal:
            self.lines = LineProgress(self.console, description, total, completed)
            return
        self.progress = counted_progress(self.console)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, completed=completed, info="")

    def _update(self, done: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, info=info)
        elif self.lines is not None:
            self.lines.update(done, _plain(info))

    def start_pretrain(self, total: int) -> None:
        self._start("pre-train", total)

    def pretrain_step(self, i: int, infidelity: float, acceptance: float) -> None:
        self._update(i + 1, f"1−F {infidelity:.3e}  acc {acceptance:.2f}")

    def end_pretrain(self) -> None:
        self.stop()

    def start_training(self, first: int, total: int) -> None:
        self._start("VMC", total, first)

    def training_step(self, row: dict[str, Any], rejected: int) -> None:
        if self.progress is None and self.lines is None:
            return
        done = int(row["step"]) + 1
        rate = (done - self._n0) / max(time.perf_counter() - self._t0, 1e-9)
        e = float(np.mean(row["energy"]))
        err = float(np.sqrt(np.mean(np.square(row["energy_error"]))) / np.sqrt(len(np.atleast_1d(row["energy_error"]))))
        info = (
            f"E {e:+.4f}±{err:.4f} meV/e  var {float(np.mean(row['variance'])):.3g} meV²  "
            f"acc {float(np.mean(row['acceptance'])):.2f}"
        )
        if self.progress is not None:
            info += f"  {rate:.2f} st/s"
        if rejected:
            info += f"  [red]rejected {rejected}[/]"
        self._update(done, info)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        if self.lines is not None:
            self.lines.stop()
            self.lines = None

    def discard(self) -> None:
        """Stop without leaving the bar behind (before an error message): erased on a terminal, not printed elsewhere."""
        if self.progress is not None:
            _discard(self.progress)
            self.progress = None
        self.lines = None


def phase_line(console: Console, name: str) -> None:
    """``[HH:MM:SS] name`` on ``console``: where long work stands, in a log file."""
    console.print(f"[{time.strftime('%H:%M:%S')}] {name}", soft_wrap=True, highlight=False, markup=False)


@contextlib.contextmanager
def task_progress(console: Console, description: str, enabled: bool = True) -> Iterator[Callable[[int, int, dict], None]]:
    """Progress of a counted job; yields ``update(done, total, values)`` (values: energy meV/e, acceptance).

    A rich bar on a terminal, plain lines otherwise (see :class:`LineProgress`).
    """
    if not enabled:
        yield lambda done, total, values: None
        return

    def info(values: dict) -> str:
        return "  ".join(
            f"{name} {value:+.4f} meV/e" if name == "energy" else f"{name[:3]} {value:.2f}" for name, value in values.items()
        )

    if not console.is_terminal:
        lines = LineProgress(console, description, None, unit="records")
        yield lambda done, total, values: lines.update(done, info(values), total)
        lines.stop()
        return
    progress = counted_progress(console)
    task = progress.add_task(description, total=None, info="")

    def update(done: int, total: int, values: dict) -> None:
        progress.update(task, completed=done, total=total, info=info(values))

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
