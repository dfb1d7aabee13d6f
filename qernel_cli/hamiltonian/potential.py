"""The moiré potential Δ(r) = -2V Σ_{j=1..3} cos(g_j·r + φ)."""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from jaxtyping import Array, Float

from qernel_cli.lattice import MOIRE_G


def moire_potential(
    positions: Float[Array, "... 2"],
    a_M: float,
    V: float | Float[Array, ""],
    phi_deg: float,
) -> Float[Array, "..."]:
    """Moiré potential Δ(r) at each position.

    Args:
        positions: Cartesian positions, any length unit (the same as ``a_M``).
        a_M: moiré period in that length unit (1 in moiré units).
        V: depth; the result is in the same energy unit (meV, or E_M for V/E_M).
        phi_deg: phase φ in degrees.

    Returns:
        Δ(r), shape ``positions.shape[:-1]``. At φ = 45° the minimum is
        -6 cos(45°) V ≈ -4.243 V (at r = 0) and the maximum ≈ +5.796 V.
    """
    g = jnp.asarray(MOIRE_G / a_M)
    phases = positions @ g.T + np.deg2rad(phi_deg)
    return -2.0 * V * jnp.sum(jnp.cos(phases), axis=-1)


def total_moire_potential(
    positions: Float[Array, "n 2"], V: float | Float[Array, ""], phi_deg: float
) -> Float[Array, ""]:
    """Σ_i Δ(r_i) in moiré units (positions in a_M, V in E_M)."""
    return jnp.sum(moire_potential(positions, 1.0, V, phi_deg))
