"""Deferred Ctrl-C: long loops finish the current step, save, then stop cleanly.

Inside ``deferred_interrupt()`` a SIGINT (Ctrl-C) or SIGTERM only sets a flag;
the loop checks :meth:`Interrupt.requested` between steps, writes its
checkpoint and raises :class:`KeyboardInterrupt`. Stores and checkpoints are
therefore never written half-way because of a keyboard interrupt. A second
Ctrl-C while the flag is already set interrupts immediately (the data on disk
stay consistent because checkpoints are atomic and stores are truncated to
the checkpoint on resume).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Interrupt:
    """Flag set by the signal handler; ``signal_name`` says which signal arrived."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[Interrupt]:
    """Defer SIGINT and SIGTERM to the next check (only in the main thread; elsewhere a no-op flag)."""
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
