"""How QERNEL sets up JAX: one explicit call at every entry point.

:func:`configure_jax` is called by the command line (``qernel``,
``python -m qernel_cli``), the benchmarks and the test suite before their
first JAX computation; a program that uses the library directly calls it
first too. Importing ``qernel_cli`` changes nothing. :func:`require_x64`
is the guard at the places where a run is assembled: without 64-bit mode
JAX would silently turn every float64 array (energies, Ewald sums,
determinants) into float32.

What :func:`configure_jax` sets, each only where the user has not set it:

* **64-bit mode.** Energies, Ewald sums and determinants are accumulated in
  float64 (models may still compute their trunk in float32).
* **XLA's CPU scheduler.** ``--xla_cpu_enable_concurrency_optimized_scheduler
  =false`` is added to ``XLA_FLAGS``. jaxlib's CPU LAPACK kernels (batched
  LU and triangular solves) split their batch over XLA's intra-op thread pool
  and wait for the pieces on a thread of that same pool; when XLA's default
  scheduler runs several at once, every pool thread ends up waiting and the
  program hangs forever (seen for the VMC step of a 4-layer model with 256
  walkers; ``tests/test_xla_workaround.py`` reproduces it). The other
  scheduler orders those kernels so that this does not happen, at no measured
  cost. The flag is read when the backend starts, hence "before the first
  computation". Two CPU devices of one process running those kernels at once
  deadlock as well, which no flag prevents, so QERNEL's jitted code computes
  its determinants without LAPACK (:mod:`qernel_cli.linalg`).
* **Full float32 products** (``JAX_DEFAULT_MATMUL_PRECISION=highest``).
  JAX's default lets an accelerator round their inputs to TF32 (10 mantissa
  bits on NVIDIA GPUs since Ampere): the forward Laplacian would then differ
  from the second derivative of the log ψ the sweeps sample by ~1e-3
  relative, and the float32 SPRING kernel would lose the accuracy its
  centring buys. On a CPU both give the same bits at the same speed
  (measured). ``JAX_DEFAULT_MATMUL_PRECISION=tensorfloat32`` opts back in.

The settings go through environment variables when JAX is not imported yet
(so that ``qernel --help`` answers before JAX would have loaded) and through
``jax.config`` when it is.
"""

from __future__ import annotations

import os
import sys

SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"


class JaxNotConfiguredError(RuntimeError):
    """A run is being assembled while JAX is in 32-bit mode (:func:`configure_jax` was not called)."""


def configure_jax() -> None:
    """Set 64-bit mode, the XLA CPU scheduler flag and full-precision float32 products (see the module)."""
    if SCHEDULER_FLAG not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {SCHEDULER_FLAG}=false").strip()
    os.environ["JAX_ENABLE_X64"] = "1"
    precision_set_by_user = "JAX_DEFAULT_MATMUL_PRECISION" in os.environ
    os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
    jax = sys.modules.get("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)
        if not precision_set_by_user and jax.config.jax_default_matmul_precision is None:
            jax.config.update("jax_default_matmul_precision", "highest")


def require_x64() -> None:
    """Raise :class:`JaxNotConfiguredError` unless JAX is in 64-bit mode."""
    import jax

    if not jax.config.jax_enable_x64:
        raise JaxNotConfiguredError(
            "JAX is in 32-bit mode: call qernel_cli.configure_jax() before the first JAX computation"
        )
