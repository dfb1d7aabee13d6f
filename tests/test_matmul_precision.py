"""``qernel_cli.configure_jax()`` makes float32 matrix products full float32 on every backend (not TF32/bfloat16 passes).

Checked on the lowered program, which is what an accelerator compiles: every
float32 ``dot_general`` of the trunk must carry HIGHEST precision. Each case
runs in a fresh interpreter because JAX reads the setting when it loads.
"""

from __future__ import annotations

import os
import subprocess
import sys

TRUNK_DOTS = """
import jax, qernel_cli
qernel_cli.configure_jax()
import jax.numpy as jnp
from qernel_cli.config import resolve
from qernel_cli.vmc.assembly import build
import equinox as eqx
run = build(resolve("moire-tiny", ["model.dtype=float32", "model.layers=1", "sampler.walkers=4"]))
x = jnp.zeros((6, 2)) + jnp.arange(6.0)[:, None] * 0.3
c = jnp.asarray([run.physics.v_min])
text = jax.jit(lambda p, x, c: eqx.combine(p, run.static).hidden(x, c)).lower(run.params, x, c).as_text()
dots = [line for line in text.splitlines() if "dot_general" in line and "xf32>" in line]
print(jax.config.jax_default_matmul_precision, len(dots), sum("precision = [HIGHEST, HIGHEST]" in line for line in dots))
"""


def _run(code: str, **env_extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "JAX_DEFAULT_MATMUL_PRECISION"} | env_extra
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.split()


def test_float32_products_of_the_trunk_are_full_precision():
    setting, dots, highest = _run(TRUNK_DOTS)
    assert setting == "highest"
    assert int(dots) > 0 and int(highest) == int(dots)


def test_user_choice_is_kept():
    setting, dots, highest = _run(TRUNK_DOTS, JAX_DEFAULT_MATMUL_PRECISION="tensorfloat32")
    assert setting == "tensorfloat32"
    assert int(dots) > 0 and int(highest) == 0


def test_set_when_jax_was_loaded_first():
    code = "import jax; import qernel_cli; qernel_cli.configure_jax(); print(jax.config.jax_default_matmul_precision)"
    assert _run(code) == ["highest"]
