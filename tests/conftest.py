import os

# One BLAS thread: the plane-wave eigensolvers are small, and on a loaded
# 2-core machine OpenBLAS threads contend badly with XLA's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import qernel_cli  # noqa: E402,F401  (XLA flags must be set before the first computation)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compilation caches after each test module.

    Every training run builds fresh jitted closures, so one long pytest process
    accumulates hundreds of compiled XLA programs; releasing them per module
    keeps the process's memory flat (a CI run without this crashed inside
    XLA's compiler late in the session).
    """
    yield
    jax.clear_caches()
    gc.collect()
