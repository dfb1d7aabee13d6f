"""The supervisor: SIGTERM and Ctrl-C are honoured, and stalls reported, even while the work is blocked for good.

Each case runs a small supervised program in a fresh interpreter and sends it
real signals; the "computation" that hangs is a wait that never looks at the
stop flag, as a deadlocked XLA program would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from qernel_cli import supervisor
from qernel_cli.interrupt import Interrupt, deferred_interrupt

PROGRAM = """
import sys, threading, time
from qernel_cli import supervisor
from qernel_cli.interrupt import deferred_interrupt
mode = sys.argv[1]

def warn(message):
    print("warning: " + message, file=sys.stderr, flush=True)

def work(interrupt):
    with deferred_interrupt() as flag:
        assert flag is interrupt  # loops written for deferred_interrupt() see the supervisor's flag
    supervisor.phase("fast steps")
    print("started", flush=True)
    for _ in range(5):
        time.sleep(0.05)
        supervisor.beat()
    if mode == "cooperative":
        while not interrupt.requested():
            time.sleep(0.05)
            supervisor.beat()
        return "stopped cleanly"
    if mode == "first-step":
        supervisor.phase("compiling phase")
    threading.Event().wait()  # blocked for good, never polls the flag

print(supervisor.supervise(work, warn=warn, files="FILES INTACT", idle_means_stuck=(mode == "first-step")), flush=True)
"""

LIMITS = {
    "QERNEL_STOP_GRACE_S": "3",
    "QERNEL_STALL_FACTOR": "4",
    "QERNEL_STALL_MIN_S": "1.5",
    "QERNEL_STALL_FIRST_S": "600",
    "QERNEL_STALL_IDLE_S": "1.5",
}


def _start(mode: str) -> subprocess.Popen:
    env = {**os.environ, **LIMITS}
    p = subprocess.Popen([sys.executable, "-c", PROGRAM, mode], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "started", p.stderr.read() if p.poll() is not None else "no start"
    return p


def _finish(p: subprocess.Popen, timeout: float) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"still running {timeout} s after the signal:\n{err[-3000:]}")
    return p.returncode, out, err, time.monotonic() - t0


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("qernel: error:")]


def test_stall_warning_then_sigterm_ends_a_blocked_computation():
    p = _start("hang")
    time.sleep(3.0)  # steps of ~0.05 s: stalled after max(1.5 s, 4 × 0.05 s)
    p.send_signal(signal.SIGTERM)
    code, out, err, waited = _finish(p, timeout=30)
    assert code == supervisor.EXIT_INTERRUPTED, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert any("no progress for" in line and "fast steps" in line for line in warnings), err
    assert sum("no progress" in line for line in warnings) == 1  # once per stall
    assert any("SIGTERM received" in line for line in warnings), err
    (error,) = _errors(err)
    assert "stopped by SIGTERM" in error and "during fast steps" in error and "FILES INTACT" in error
    assert 2.5 < waited < 15, waited  # the grace (3 s), not more
    assert "Traceback" not in err


def test_idle_process_is_reported_stuck_during_a_first_step():
    """No step time to compare with yet (compilation), but a CPU-bound process using no CPU is stuck."""
    p = _start("first-step")
    time.sleep(4.0)
    p.send_signal(signal.SIGTERM)
    code, out, err, _ = _finish(p, timeout=30)
    assert code == supervisor.EXIT_INTERRUPTED
    assert any("no progress" in line and "compiling phase" in line and "first step" in line for line in err.splitlines()), err


def test_cooperative_work_stops_cleanly_at_its_next_step():
    p = _start("cooperative")
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    code, out, err, waited = _finish(p, timeout=30)
    assert code == 0, err
    assert "stopped cleanly" in out
    assert waited < 2.5 and not _errors(err)


def test_second_ctrl_c_stops_at_once():
    p = _start("hang")
    p.send_signal(signal.SIGINT)
    time.sleep(0.5)
    p.send_signal(signal.SIGINT)
    code, out, err, waited = _finish(p, timeout=30)
    assert code == supervisor.EXIT_INTERRUPTED
    (error,) = _errors(err)
    assert "stopped by SIGINT (twice)" in error
    assert waited < 2.5  # well before the 3 s grace


def test_off_the_main_thread_the_work_simply_runs():
    result = []
    thread = threading.Thread(target=lambda: result.append(supervisor.supervise(lambda i: 42, warn=print, files="")))
    thread.start()
    thread.join(30)
    assert result == [42]


def test_errors_of_the_work_reach_the_caller_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGTERM)

    def work(interrupt):
        supervisor.phase("failing")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        supervisor.supervise(work, warn=print, files="")
    assert signal.getsignal(signal.SIGTERM) is before
    supervisor.beat()  # no supervised work: a no-op
    with deferred_interrupt() as flag:
        assert isinstance(flag, Interrupt) and not flag.requested()


def test_bad_settings_are_one_line_errors(monkeypatch):
    monkeypatch.setenv("QERNEL_STOP_GRACE_S", "soon")
    with pytest.raises(supervisor.SupervisorError, match="QERNEL_STOP_GRACE_S='soon' is not a number"):
        supervisor.Limits.from_env()
    monkeypatch.setenv("QERNEL_STOP_GRACE_S", "-1")
    with pytest.raises(supervisor.SupervisorError, match="must be positive"):
        supervisor.Limits.from_env()
