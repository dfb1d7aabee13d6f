import os

# One BLAS thread: the plane-wave eigensolvers are small, and on a loaded
# 2-core machine OpenBLAS threads contend badly with XLA's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
