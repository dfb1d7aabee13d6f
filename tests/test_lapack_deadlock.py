"""Two CPU devices in one process: QERNEL's determinants do not hang where jaxlib's LAPACK kernels do (issue #21).

jaxlib 0.10's batched LAPACK kernels (LU, triangular solve, …) split a batch of
≳ 2·10⁵ flops into chunks on XLA's intra-op thread pool and wait for them on a
thread of that pool. With two devices, two such kernels run at once; on a
2-core machine the pool has two threads and both wait forever. The program
below (batched complex log-determinants inside a loop, on walkers split over
two devices, as the Metropolis sweeps of evaluation and burn-in do) is the
minimal reproduction; it hangs with ``jnp.linalg.slogdet`` and finishes with
``qernel_cli.linalg.log_det``. Each case runs in a fresh interpreter (the
device count is fixed when the backend starts) with a hard timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROGRAM = """
import sys, time
import qernel_cli, jax, jax.numpy as jnp, numpy as np
qernel_cli.configure_jax()
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from qernel_cli import linalg
assert len(jax.devices()) == 2
use_lapack = sys.argv[1] == "lapack"
mesh = Mesh(np.array(jax.devices()), ("walkers",))
x = jax.random.normal(jax.random.PRNGKey(0), (4096, 6, 6)) + 0j
x = jax.device_put(x, NamedSharding(mesh, P("walkers")))
def log_abs(m):
    return jnp.linalg.slogdet(m)[1] if use_lapack else linalg.log_det(m)[0]
def body(i, carry):
    m, total = carry
    return m * 1.0001, total + jnp.sum(log_abs(m))
run = jax.jit(lambda m: jax.lax.fori_loop(0, 10, body, (m, 0.0))[1])
for i in range(20):
    jax.block_until_ready(run(x + i))
print("finished")
"""


def _run(kind: str, timeout: float) -> subprocess.CompletedProcess | None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "OPENBLAS_NUM_THREADS": "1"}
    try:
        return subprocess.run([sys.executable, "-c", PROGRAM, kind], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None  # subprocess.run kills the child on expiry


def test_qernel_determinants_finish_on_two_devices():
    done = _run("qernel", timeout=240)
    assert done is not None, "QERNEL's LAPACK-free determinants hung on two CPU devices"
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished" in done.stdout


@pytest.mark.extended
def test_jaxlib_lapack_determinants_hang_on_two_devices():
    """The upstream bug this works around (jaxlib ≤ 0.10.2 on a 2-core machine): if this starts passing, see linalg's docstring."""
    if (os.cpu_count() or 1) > 2:
        pytest.skip("the deadlock needs an intra-op pool no larger than the number of devices (2 cores)")
    done = _run("lapack", timeout=120)
    assert done is None, "jaxlib's batched LAPACK kernels no longer hang on two devices"
