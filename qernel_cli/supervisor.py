"""Long work under supervision: stop requests and stalls are noticed even while a computation blocks.

Python runs signal handlers on the main thread, between bytecodes; a main
thread blocked inside one long (or hung) XLA computation would never see
SIGTERM. :func:`supervise` therefore runs the work on a worker thread and keeps
the main thread free:

* **Stop requests.** SIGINT (Ctrl-C) and SIGTERM set the shared
  :class:`~qernel_cli.interrupt.Interrupt` flag at once; the work's loops see
  it at their next step boundary, write their checkpoint and end cleanly. If
  the work has not ended ``grace_s`` seconds later (a step that takes that
  long, a first step still compiling, or a computation that hangs), the
  process exits with one line and status 130, without touching files: the
  last checkpoint (written atomically) stays intact. A second Ctrl-C exits at
  once the same way.
* **Stalls.** The work reports progress with :func:`beat` (and names its phase
  with :func:`phase`). When no step has finished for ``stall_factor`` × the
  longest recent step of the phase (at least ``stall_min_s``; a phase's first
  step, which includes compilation, gets ``stall_first_s``), or, where
  ``idle_means_stuck`` (computations on the CPU), when the process has used
  no CPU for ``idle_s`` seconds, one warning line goes to stderr, naming the
  phase, once per stall.

Outside :func:`supervise` (library use, tests) :func:`beat` and :func:`phase`
do nothing. Defaults can be changed with the environment variables
``QERNEL_STOP_GRACE_S``, ``QERNEL_STALL_FACTOR``, ``QERNEL_STALL_MIN_S``,
``QERNEL_STALL_FIRST_S`` and ``QERNEL_STALL_IDLE_S`` (seconds, or a factor).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from qernel_cli.errors import QernelError
from qernel_cli.interrupt import Interrupt, sharing

T = TypeVar("T")

EXIT_INTERRUPTED = 130
"""Exit status of a run stopped by a signal (clean or forced)."""


class SupervisorError(QernelError):
    """A supervision setting that cannot be used."""


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise SupervisorError(f"{name}={value!r} is not a number") from None
    if not number > 0:
        raise SupervisorError(f"{name} must be positive, got {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class Limits:
    """When to give up after a stop request, and when to call a phase stalled (seconds, or a factor)."""

    grace_s: float = 30.0
    stall_factor: float = 20.0
    stall_min_s: float = 120.0
    stall_first_s: float = 900.0
    idle_s: float = 120.0

    @classmethod
    def from_env(cls) -> "Limits":
        d = cls()
        return cls(
            grace_s=_env_float("QERNEL_STOP_GRACE_S", d.grace_s),
            stall_factor=_env_float("QERNEL_STALL_FACTOR", d.stall_factor),
            stall_min_s=_env_float("QERNEL_STALL_MIN_S", d.stall_min_s),
            stall_first_s=_env_float("QERNEL_STALL_FIRST_S", d.stall_first_s),
            idle_s=_env_float("QERNEL_STALL_IDLE_S", d.idle_s),
        )


class Heartbeat:
    """The work's progress as the supervisor sees it: current phase, time of the last finished step, recent step times."""

    def __init__(self, announce: Callable[[str], None] | None = None) -> None:
        self.announce = announce
        self._lock = threading.Lock()
        self.phase = "starting"
        self.last = time.monotonic()
        self.steps: deque[float] = deque(maxlen=8)
        self.warned = False

    def enter(self, name: str) -> None:
        with self._lock:
            self.phase, self.last, self.warned = name, time.monotonic(), False
            self.steps.clear()
        if self.announce is not None:
            self.announce(name)

    def beat(self) -> None:
        with self._lock:
            now = time.monotonic()
            self.steps.append(now - self.last)
            self.last, self.warned = now, False

    def snapshot(self) -> tuple[str, float, float | None]:
        """(phase, seconds since the last step, longest recent step or None before the phase's first step)."""
        with self._lock:
            return self.phase, time.monotonic() - self.last, (max(self.steps) if self.steps else None)


_active: Heartbeat | None = None


def beat() -> None:
    """Report that one step of the supervised work has finished (no-op when not supervised)."""
    if _active is not None:
        _active.beat()


def phase(name: str) -> None:
    """Name the phase the supervised work enters (e.g. "burn-in"); its step times start anew."""
    if _active is not None:
        _active.enter(name)


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _stall_message(name: str, idle: float, longest: float | None, cpu_share: float | None) -> str:
    if longest is None:
        typical = "its first step, which includes compilation, has not finished"
    else:
        typical = f"recent steps took up to {longest:.3g} s"
    cpu = "" if cpu_share is None else f", CPU use {cpu_share:.0%} of one core meanwhile"
    return (
        f"no progress for {idle:.0f} s in {name} ({typical}{cpu}); the computation may be stuck: "
        "SIGTERM or Ctrl-C stops it, and the last checkpoint stays intact"
    )


def supervise(
    work: Callable[[Interrupt], T],
    *,
    warn: Callable[[str], None],
    files: str,
    idle_means_stuck: bool = False,
    announce: Callable[[str], None] | None = None,
    limits: Limits | None = None,
) -> T:
    """Run ``work(interrupt)`` on a worker thread while the main thread watches signals and progress.

    Args:
        work: the long work; it polls ``interrupt.requested()`` at its step boundaries.
        warn: writes one warning line (stderr).
        files: the state of the files after a forced exit, for its message
            (e.g. "the last checkpoint in RUN is intact; continue with …").
        idle_means_stuck: the work computes on this process's CPU, so a process
            using no CPU without finishing a step is stuck.
        announce: called with the name of every phase the work enters (plain progress lines).
        limits: grace and stall settings (default: :meth:`Limits.from_env`).

    Returns ``work``'s result or re-raises its exception. Called off the main
    thread it simply runs ``work`` (signals cannot be handled there).
    """
    global _active
    limits = limits or Limits.from_env()
    if threading.current_thread() is not threading.main_thread():
        return work(Interrupt())
    interrupt = Interrupt()
    heartbeat = Heartbeat(announce)
    outcome: dict[str, object] = {}
    finished = threading.Event()
    forced: list[str] = []

    def handler(signum, frame) -> None:
        if interrupt.requested():
            if signum == signal.SIGINT:
                forced.append(signal.Signals(signum).name)  # a second Ctrl-C: stop now
            return
        interrupt.request(signal.Signals(signum).name)
        warn(f"{interrupt.signal_name} received: stopping at the end of the current step (at most {limits.grace_s:g} s)")

    def run() -> None:
        try:
            with sharing(interrupt):
                outcome["value"] = work(interrupt)
        except BaseException as error:  # noqa: BLE001  (re-raised on the main thread)
            outcome["error"] = error
        finally:
            finished.set()

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    _active = heartbeat
    worker = threading.Thread(target=run, name="qernel-work", daemon=True)
    try:
        for s in previous:
            signal.signal(s, handler)
        worker.start()
        _watch(finished, interrupt, forced, heartbeat, limits, warn=warn, files=files, idle_means_stuck=idle_means_stuck)
    finally:
        _active = None
        for s, h in previous.items():
            signal.signal(s, h)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def _watch(
    finished: threading.Event,
    interrupt: Interrupt,
    forced: list[str],
    heartbeat: Heartbeat,
    limits: Limits,
    *,
    warn: Callable[[str], None],
    files: str,
    idle_means_stuck: bool,
) -> None:
    """Until ``finished``: every 0.25 s, force the exit after a second Ctrl-C or the grace time, warn once of a stall."""
    cpu_mark, wall_mark = _cpu_seconds(), time.monotonic()
    last_phase_beat = (heartbeat.phase, heartbeat.last)
    while not finished.wait(0.25):
        now = time.monotonic()
        if forced or (interrupt.requested() and now - interrupt.since > limits.grace_s):
            name = forced[0] if forced else interrupt.signal_name or "a signal"
            when = "twice" if forced else f"{now - interrupt.since:.0f} s ago"
            _force_exit(f"stopped by {name} ({when}) during {heartbeat.phase}, before the current step ended; {files}")
        name, idle, longest = heartbeat.snapshot()
        if (name, heartbeat.last) != last_phase_beat:  # a step finished: measure CPU use from here
            last_phase_beat = (name, heartbeat.last)
            cpu_mark, wall_mark = _cpu_seconds(), now
        if heartbeat.warned:
            continue
        threshold = limits.stall_first_s if longest is None else max(limits.stall_min_s, limits.stall_factor * longest)
        window = now - wall_mark
        cpu_share = (_cpu_seconds() - cpu_mark) / window if window > 0 else None
        stuck_idle = idle_means_stuck and window >= limits.idle_s and cpu_share is not None and cpu_share < 0.02
        if idle > threshold or stuck_idle:
            heartbeat.warned = True
            warn(_stall_message(name, idle, longest, cpu_share))


def _force_exit(message: str) -> None:
    """Print ``qernel: error: message`` and leave at once: the worker may be blocked for good, files are not touched."""
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001
        pass
    try:
        sys.stderr.write(f"qernel: error: {message}\n")
        sys.stderr.flush()
    finally:
        os._exit(EXIT_INTERRUPTED)
