"""Data parallelism: sharded SPRING, training on 2 devices, two processes on loopback.

Each case runs in fresh interpreters: the CPU device count
(``--xla_force_host_platform_device_count``) and ``jax.distributed`` must be
set before JAX's backend starts. Models are kept tiny so that compilation,
which dominates these runs, stays short.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from clitools import xla_flags

# Runs use conftest's TINY_RUN (``tiny_run_args``): the smallest model, without the Ewald sum (which has nothing
# to do with devices), trained by SPRING (which does); its 2-device programs are shared with test_stop_and_devices.


def _env(devices: int | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_COORDINATOR_ADDRESS")}
    env["XLA_FLAGS"] = xla_flags(devices)
    return env


def _python(code: str, devices: int | None = None, timeout: int = 600) -> str:
    done = subprocess.run([sys.executable, "-c", code], env=_env(devices), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _qernel(*args: str, devices: int | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qernel_cli", *args], env=_env(devices), capture_output=True, text=True, timeout=timeout)


SHARDED_SPRING = """
import qernel_cli, jax, jax.numpy as jnp, numpy as np, json
qernel_cli.configure_jax()
from jax.sharding import PartitionSpec as P
from qernel_cli import parallel
from qernel_cli.vmc import spring
mesh = parallel.make_mesh()
rng = np.random.default_rng(0)
g, w, p = 3, 8, 50
whole = spring.as_parts(jnp.asarray(rng.normal(size=(g, w, p)) + 1j * rng.normal(size=(g, w, p))))
jac = [whole[..., :20], whole[..., 20:21], whole[..., 21:]]  # per-leaf blocks, as in training
e = jnp.asarray(rng.normal(size=(g, w)) + 0.1j * rng.normal(size=(g, w)))
prev = jnp.asarray(rng.normal(size=p))
res = spring.energy_residuals(e, 3.0)
ref = [spring.spring_direction(jac, res, prev, 0.1, 0.9)]
ref += [spring.constrain_step(jac, ref[0], 0.5, 0.05), spring.energy_gradient(jac, res)]
def f(jac, res_full, prev):
    r = spring.local_rows(res_full, "walkers")
    d = spring.spring_direction(jac, r, prev, 0.1, 0.9, "walkers")
    return d, spring.constrain_step(jac, d, 0.5, 0.05, "walkers"), spring.energy_gradient(jac, r, "walkers")
out = jax.jit(jax.shard_map(f, mesh=mesh, in_specs=(P(None, "walkers"), P(), P()), out_specs=P(), check_vma=False))(jac, res, prev)  # as make_step
print(json.dumps({"devices": len(mesh.devices), "errors": [float(jnp.max(jnp.abs(a - b))) for a, b in zip(out, ref)],
                  "scale": [float(jnp.max(jnp.abs(b))) for b in ref]}))
"""


def test_sharded_spring_equals_single_device():
    result = json.loads(_python(SHARDED_SPRING, devices=4).strip().splitlines()[-1])
    assert result["devices"] == 4
    for error, scale in zip(result["errors"], result["scale"]):
        assert scale > 1e-3
        assert error < 1e-12 * max(1.0, scale)


@pytest.mark.slow
def test_two_devices_train_like_one_and_resume_on_one(tmp_path: Path, tiny_run_args):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["train", "--preset", "moire-tiny", "--steps", "6", "--quiet", "--json", *tiny_run_args, "--set", "training.evaluate_blocks=10"]
    runs = {}
    # The 1-device runs see one CPU device: they run the programs of the session's tiny run (conftest), already compiled.
    for out, devices in ((one, 1), (two, 2)):
        done = _qernel(*common, "--devices", str(devices), "--out", str(out), devices=None if devices == 1 else 2)
        assert done.returncode == 0, done.stderr[-3000:]
        runs[devices] = json.loads(done.stdout[done.stdout.index("{"):])
    assert runs[1]["devices"] == 1 and runs[2]["devices"] == 2
    # Same seed: the same depths are drawn every step; the chains differ, the energies agree statistically.
    import zarr

    depth = [np.asarray(zarr.open_group(str(out / "train.zarr"), mode="r")["depth"][:]) for out in (one, two)]
    np.testing.assert_allclose(depth[0], depth[1], rtol=1e-12)
    for a, b in zip(runs[1]["depths"], runs[2]["depths"]):
        sigma = np.hypot(a["energy_error_meV"], b["energy_error_meV"])
        assert abs(a["energy_per_electron_meV"] - b["energy_per_electron_meV"]) < 5 * sigma + 0.05, (a, b)
    # The 2-device checkpoint continues on 1 device.
    done = _qernel("train", "--resume", "--out", str(two), "--steps", "8", "--devices", "1", "--quiet", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads(done.stdout[done.stdout.index("{"):])
    assert resumed["steps"] == 8 and resumed["devices"] == 1
    assert zarr.open_group(str(two / "train.zarr"), mode="r")["step"][:].tolist() == list(range(8))


def test_devices_must_divide_walkers_per_group(tmp_path: Path):
    done = _qernel("train", "--preset", "moire-tiny", "--devices", "3", "--set", "sampler.walkers=16", "--out", str(tmp_path / "r"), "--quiet", devices=3)
    assert done.returncode == 2
    assert "cannot be split evenly over 3 devices" in done.stderr
    assert "Traceback" not in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_loopback_train_together(tmp_path: Path, tiny_run_args):
    out = tmp_path / "run"
    port = _free_port()
    args = [sys.executable, "-m", "qernel_cli", "train", "--preset", "moire-tiny", "--steps", "3", "--quiet", "--json", *tiny_run_args,
            "--out", str(out), "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2"]
    procs = [subprocess.Popen([*args, "--process-id", str(i)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-3000:]
    summary = json.loads(outputs[0][0][outputs[0][0].index("{"):])
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["steps"] == 3
    assert "{" not in outputs[1][0]  # only process 0 reports
    # Both processes hold the same parameters after training together.
    fingerprints = [line.split()[-1] for _, err in outputs for line in err.splitlines() if line.startswith("parameter fingerprint")]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1] == summary["parameter_fingerprint"]
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "config.toml", "summary.json", "train.zarr"]


def test_whether_a_run_may_span_several_processes_is_read_without_jax(monkeypatch):
    from qernel_cli.processes import joins_other_processes

    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    assert not joins_other_processes(None, False) and not joins_other_processes(1, False)
    assert joins_other_processes(2, False) and joins_other_processes(None, True)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    assert joins_other_processes(None, False) and not joins_other_processes(1, False)  # the option wins
    monkeypatch.setenv("JAX_NUM_PROCESSES", "four")
    assert joins_other_processes(None, False)  # unreadable: counted as several, reported when JAX starts
