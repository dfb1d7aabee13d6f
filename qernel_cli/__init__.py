"""QERNEL: one neural wavefunction for a family of moiré Hamiltonians.

Importing the package has no side effects. Entry points call
:func:`configure_jax` before their first JAX computation (64-bit mode, an XLA
CPU scheduler flag that keeps batched LAPACK kernels from deadlocking, full
float32 matrix products; :mod:`qernel_cli.runtime` explains each); a program
that uses the library directly does the same::

    import qernel_cli
    qernel_cli.configure_jax()
"""

from qernel_cli.runtime import configure_jax

__all__ = ["configure_jax"]
__version__ = "0.1.0"
