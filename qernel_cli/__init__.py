"""QERNEL: one neural wavefunction for a family of moiré Hamiltonians.

Importing the package switches JAX to 64-bit mode: energies, Ewald sums and
determinants are accumulated in float64 (models may still compute in float32).
It does so without importing JAX (``JAX_ENABLE_X64=1`` in the environment,
read when JAX is first imported; ``jax.config`` when JAX is already loaded),
so that the command line answers ``--help`` before JAX would have loaded.

It also adds ``--xla_cpu_enable_concurrency_optimized_scheduler=false`` to
``XLA_FLAGS`` (unless that flag is already set). jaxlib's CPU LAPACK kernels
(batched LU and triangular solves, behind every determinant and its
derivatives) split their batch over XLA's intra-op thread pool and wait for
the pieces while running on a thread of that same pool; when XLA's default
scheduler runs several of them at once, every pool thread ends up waiting and
the program hangs forever (seen for the VMC step of a 4-layer model with 256
walkers, and reproduced by ``tests/test_xla_workaround.py``). XLA's other
scheduler orders those kernels so that this does not happen, at no measured
cost in speed. The flag is read when the backend starts, so importing
``qernel_cli`` before the first JAX computation is enough. The same kernels
also deadlock when two CPU devices of one process run them at once, which no
flag prevents; QERNEL's jitted code therefore computes its determinants
without LAPACK (``qernel_cli.linalg``).

Float32 matrix products are computed in full float32
(``JAX_DEFAULT_MATMUL_PRECISION=highest``, again only unless the user set
it). JAX's own default lets an accelerator round their inputs to TF32 (10
mantissa bits on NVIDIA GPUs since Ampere, bfloat16 passes on TPUs): the
forward Laplacian would then differ from the second derivative of the log ψ
that the sweeps sample by ~1e-3 relative, and the float32 SPRING kernel
would lose the accuracy its centring buys. On a CPU both settings give the
same bits at the same speed (measured). ``JAX_DEFAULT_MATMUL_PRECISION=
tensorfloat32`` opts back in to the faster products.
"""

import os

_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"
if _SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {_SCHEDULER_FLAG}=false").strip()

import sys  # noqa: E402

os.environ["JAX_ENABLE_X64"] = "1"
_PRECISION_SET_BY_USER = "JAX_DEFAULT_MATMUL_PRECISION" in os.environ
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
if "jax" in sys.modules:
    sys.modules["jax"].config.update("jax_enable_x64", True)
    if not _PRECISION_SET_BY_USER and sys.modules["jax"].config.jax_default_matmul_precision is None:
        sys.modules["jax"].config.update("jax_default_matmul_precision", "highest")

__version__ = "0.1.0"
