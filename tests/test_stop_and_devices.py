"""The real CLI on several host devices, and SIGTERM in every phase (issue #21).

* ``qernel train`` on 2 and 4 forced CPU devices with the preset's model,
  walkers and optimiser and every phase of a run (pre-training, burn-in, the
  evaluation before VMC, VMC steps, the final evaluation; shortened as in the
  issue's reproduction: 20 pre-training steps, 4 evaluation blocks), then
  ``--resume`` on another device count. Before the fix, the 2-device run hung
  for good after pre-training (jaxlib's LAPACK kernels, see
  ``tests/test_lapack_deadlock.py``).
* SIGTERM during each phase of ``qernel train`` and during ``qernel sample``:
  the process ends within the grace period with exit status 130 and one
  error line, and the run directory or store is still usable.

Every process runs under a hard timeout; on expiry it is killed and the test
fails with the process's stderr.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from clitools import ERROR_PREFIX, PROGRESS_LINE, xla_flags

from qernel_cli.stores import checkpoint

GRACE_S = 30.0
"""The supervisor's default grace after SIGTERM (``qernel_cli.supervisor.Limits``)."""

ISSUE_RUN = ["--set", "pretrain.steps=20", "--set", "training.evaluate_blocks=4", "--set", "pretrain.target=bloch"]


def _env(base: dict, devices: int | None) -> dict:
    env = {k: v for k, v in base.items() if k not in ("XLA_FLAGS", "QERNEL_STOP_GRACE_S")}
    env["XLA_FLAGS"] = xla_flags(devices)
    return env


def _run(args: list, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """`python -m qernel_cli ARGS`; killed and failed (with its stderr) if it runs past ``timeout``."""
    try:
        return subprocess.run([sys.executable, "-m", "qernel_cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        stderr = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
        pytest.fail(f"`qernel {' '.join(map(str, args))}` still running after {timeout:.0f} s (killed); stderr:\n{stderr[-4000:]}")


def _summary(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout[done.stdout.index("{"):])


@pytest.mark.extended
def test_two_devices_with_the_issue_command_then_resume_on_four(tmp_path: Path, cli_env):
    out = tmp_path / "run"
    done = _run(["train", "--preset", "moire-tiny", "--steps", 2, *ISSUE_RUN, "--out", out, "--json"], _env(cli_env, 2), timeout=900)
    summary = _summary(done)
    assert summary["devices"] == 2 and summary["steps"] == 2
    assert all(np.isfinite(d["energy_per_electron_meV"]) and np.isfinite(d["start_energy_per_electron_meV"]) for d in summary["depths"])
    # stderr is a pipe: plain progress lines, one per phase, and no bars
    for phase in ("pre-training", "burn-in", "start evaluation", "VMC steps", "final evaluation"):
        assert any(line.endswith(f"] {phase}") for line in done.stderr.splitlines()), done.stderr[-3000:]
    assert any(line.startswith("pre-train 20/20") for line in done.stderr.splitlines()), done.stderr[-3000:]
    assert any(line.startswith("VMC 2/2") for line in done.stderr.splitlines()), done.stderr[-3000:]
    resumed = _summary(_run(["train", "--resume", "--out", out, "--steps", 3, "--devices", 4, "--json", "--quiet"], _env(cli_env, None), timeout=900))
    assert resumed["devices"] == 4 and resumed["steps"] == 3


@pytest.mark.extended
def test_four_devices_with_the_issue_command(tmp_path: Path, cli_env):
    summary = _summary(_run(
        ["train", "--preset", "moire-tiny", "--steps", 2, *ISSUE_RUN, "--out", tmp_path / "run", "--json", "--quiet"],
        _env(cli_env, 4), timeout=900,
    ))
    assert summary["devices"] == 4 and summary["steps"] == 2


def _stop_during(args: list, phase: str, env: dict, startup_timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    """Start `qernel ARGS`, send SIGTERM one second after it announces ``phase``, and wait for it to end.

    Returns the finished process (stdout, stderr) and the seconds from SIGTERM to its exit.
    """
    p = subprocess.Popen([sys.executable, "-m", "qernel_cli", *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    seen: list[str] = []
    reader = threading.Thread(target=lambda: [lines.put(line) for line in p.stderr] + [lines.put(None)], daemon=True)
    reader.start()

    def fail(why: str):
        p.kill()
        p.wait()
        reader.join(10)
        while not lines.empty():
            seen.append(lines.get() or "")
        pytest.fail(f"`qernel {' '.join(map(str, args))}` {why}:\n{''.join(seen)[-4000:]}")

    deadline = time.monotonic() + startup_timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            fail(f"did not reach {phase!r} within {startup_timeout:.0f} s (killed)")
        if line is None:
            fail(f"ended before {phase!r}")
        seen.append(line)
        if line.rstrip().endswith(f"] {phase}"):
            break
    time.sleep(1.0)
    p.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    try:
        p.wait(timeout=GRACE_S + 30)  # stderr is read by the thread; stdout is small
    except subprocess.TimeoutExpired:
        fail(f"did not end within {GRACE_S + 30:.0f} s of SIGTERM in {phase!r} (killed)")
    waited = time.monotonic() - t0
    out = p.stdout.read()
    reader.join(10)
    while (line := lines.get()) is not None:
        seen.append(line)
    return subprocess.CompletedProcess(p.args, p.returncode, out, "".join(seen)), waited


def _one_error(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert done.returncode == 130, (done.returncode, done.stderr[-4000:])
    errors = [line for line in done.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    others = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith((ERROR_PREFIX, "warning:")) and not PROGRESS_LINE.match(line)]
    assert len(errors) == 1 and not others, done.stderr[-4000:]
    return errors[0]


LONG = {
    # phase: overrides that make that phase last far longer than the test waits
    "pre-training": ["--set", "pretrain.steps=100000"],
    "burn-in": ["--set", "sampler.burn_in=10000000"],
    "start evaluation": ["--set", "training.evaluate_start=true", "--set", "training.evaluate_blocks=100000"],
    "VMC steps": ["--steps", 100000],
    "final evaluation": ["--steps", 1, "--set", "training.evaluate_blocks=100000"],
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(LONG))
def test_sigterm_ends_training_in_every_phase(phase, tmp_path: Path, cli_env, tiny_run_args, record_property):
    out = tmp_path / "run"
    args = ["train", "--out", out, *tiny_run_args, *LONG[phase]]
    if "--steps" not in LONG[phase]:
        args += ["--steps", 5]
    done, waited = _stop_during(args, phase, _env(cli_env, 2))
    record_property("sigterm_seconds", round(waited, 1))
    error = _one_error(done)
    assert waited < GRACE_S + 10, (phase, waited, done.stderr[-3000:])
    assert "SIGTERM" in error or "interrupted" in error
    ckpt = out / "checkpoint.npz"
    if phase in ("pre-training", "burn-in"):
        assert not ckpt.exists() and "starts over" in error
    else:
        header = checkpoint.read_header(ckpt)  # intact and loadable
        assert header["step"] >= (1 if phase == "final evaluation" else 0)
        assert "--resume" in error
    print(f"SIGTERM in {phase}: ended after {waited:.1f} s: {error}")


@pytest.mark.slow
def test_sigterm_ends_sampling(tmp_path: Path, cli_env, tiny_run, record_property):
    store = tmp_path / "s.zarr"
    args = ["sample", tiny_run, "--depth", 10, "--out", store, "--walkers", 4, "--records", 100000, "--sweeps", 1, "--burn-in", 2]
    done, waited = _stop_during(args, "sampling", _env(cli_env, None))
    record_property("sigterm_seconds", round(waited, 1))
    error = _one_error(done)
    assert waited < GRACE_S + 10
    assert "interrupted after" in error and str(store) in error
    import zarr

    assert zarr.open_group(str(store), mode="r")["depth"].shape[0] >= 1  # what was recorded is readable
    print(f"SIGTERM in sampling: ended after {waited:.1f} s: {error}")
