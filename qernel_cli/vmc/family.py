"""The family of Hamiltonians seen in one training step: stratified moiré depths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


def stratified_depths(key: PRNGKeyArray, n_groups: int, v_min: float, v_max: float) -> Float[Array, " g"]:
    """One depth per stratum: v_g uniform in [v_min + g·Δ, v_min + (g+1)·Δ), Δ = (v_max − v_min)/n_groups.

    Every step thus covers the whole range, and group g always stays in its
    stratum, so its persistent walkers see only small changes of the Hamiltonian.
    """
    u = jax.random.uniform(key, (n_groups,), dtype=jnp.float64)
    width = (v_max - v_min) / n_groups
    return v_min + (jnp.arange(n_groups) + u) * width


def stratum_centres(n_groups: int, v_min: float, v_max: float) -> Float[np.ndarray, " g"]:
    """The centre of every stratum (deterministic depths, e.g. for evaluation), float64.

    A NumPy array, so that walker conditions built from it are strongly typed
    like those the jitted step returns (a weakly typed first state would make
    the step compile twice).
    """
    width = (v_max - v_min) / n_groups
    return v_min + (np.arange(n_groups, dtype=np.float64) + 0.5) * width
