"""The family of Hamiltonians seen in one training step: stratified moiré depths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


def stratified_depths(key: PRNGKeyArray, n_groups: int, v_min: float, v_max: float) -> Float[Array, " g"]:
    """One depth per stratum: v_g uniform in [v_min + g·Δ, v_min + (g+1)·Δ), Δ = (v_max − v_min)/n_groups.

    Every step thus covers the whole range, and group g always stays in its
    stratum, so its persistent walkers see only small changes of the Hamiltonian.
    """
    u = jax.random.uniform(key, (n_groups,), dtype=jnp.float64)
    width = (v_max - v_min) / n_groups
    return v_min + (jnp.arange(n_groups) + u) * width


def stratum_centres(n_groups: int, v_min: float, v_max: float) -> Float[Array, " g"]:
    """The centre of every stratum (deterministic depths, e.g. for evaluation)."""
    width = (v_max - v_min) / n_groups
    return v_min + (jnp.arange(n_groups) + 0.5) * width
