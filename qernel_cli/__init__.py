"""QERNEL: one neural wavefunction for a family of moiré Hamiltonians.

Importing the package switches JAX to 64-bit mode: energies, Ewald sums and
determinants are accumulated in float64 (models may still compute in float32).
"""

import jax

jax.config.update("jax_enable_x64", True)

__version__ = "0.1.0"
