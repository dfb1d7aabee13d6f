"""Deferred Ctrl-C: long loops finish the current step, save, then stop cleanly.

Inside ``deferred_interrupt()`` a SIGINT (Ctrl-C) or SIGTERM only sets a flag;
the loop checks :meth:`Interrupt.requested` between steps, writes its
checkpoint and raises :class:`KeyboardInterrupt`. Stores and checkpoints are
therefore never written half-way because of a keyboard interrupt. A second
Ctrl-C while the flag is already set interrupts immediately (the data on disk
stay consistent because checkpoints are atomic and stores are truncated to
the checkpoint on resume).

Under :func:`qernel_cli.supervisor.supervise` the work runs on a worker thread
and the supervisor owns the signal handlers: ``deferred_interrupt()`` then
yields the supervisor's flag (see :func:`sharing`).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator


class Interrupt:
    """Flag set by the signal handler; ``signal_name`` says which signal arrived, ``since`` when (monotonic s)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.since = 0.0

    def requested(self) -> bool:
        return self.signal_name is not None

    def request(self, signal_name: str) -> None:
        """Ask the work to stop at its next step boundary."""
        if self.signal_name is None:
            self.since = time.monotonic()
            self.signal_name = signal_name

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.request(signal.Signals(signum).name)


_shared: Interrupt | None = None


@contextlib.contextmanager
def sharing(flag: Interrupt) -> Iterator[Interrupt]:
    """Make ``flag`` the one every ``deferred_interrupt()`` yields (the supervisor's, on its worker thread)."""
    global _shared
    previous, _shared = _shared, flag
    try:
        yield flag
    finally:
        _shared = previous


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    """Defer SIGINT and SIGTERM to the next check (main thread; under a supervisor, its flag; elsewhere a no-op flag)."""
    if _shared is not None:
        yield _shared
        return
    flag = Interrupt()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, flag._handle)
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
