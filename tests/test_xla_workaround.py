"""The XLA CPU setting made by ``qernel_cli.configure_jax()`` keeps batched LAPACK kernels from deadlocking.

Eight independent batched complex log-determinants and their gradients in one
jitted program hang forever on a 2-core machine with XLA's default CPU
scheduler (every intra-op thread waits inside a LAPACK kernel for work that no
thread is left to run). Each case runs in a fresh interpreter because the
flag is read when the backend starts.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import qernel_cli, jax, jax.numpy as jnp
qernel_cli.configure_jax()
def total(xs):
    return sum(jnp.linalg.slogdet(x)[1].sum() for x in xs).real
xs = [jax.random.normal(jax.random.PRNGKey(i), (512, 24, 24)) + 0j for i in range(8)]
grad = jax.jit(jax.grad(total))
for _ in range(20):
    jax.block_until_ready(grad(xs))
import os; print("finished", os.environ["XLA_FLAGS"])
"""


def test_batched_determinant_gradients_do_not_hang():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished" in done.stdout
    assert "--xla_cpu_enable_concurrency_optimized_scheduler=false" in done.stdout


def test_user_setting_of_the_flag_is_kept():
    env = {**os.environ, "XLA_FLAGS": "--xla_cpu_enable_concurrency_optimized_scheduler=true"}
    code = "import qernel_cli, os; qernel_cli.configure_jax(); print(os.environ['XLA_FLAGS'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "--xla_cpu_enable_concurrency_optimized_scheduler=true"
