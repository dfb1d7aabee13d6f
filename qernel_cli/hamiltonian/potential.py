"""The moiré potential Δ(r) = -2V Σ_{j=1..3} cos(g_j·r + φ), and its minima (the moiré sites)."""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp
from jaxtyping import Array, Float

from qernel_cli.lattice import MOIRE_G, MOIRE_VECTORS, Supercell


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


def potential_minimum(phi_deg: float, grid: int = 240) -> Float[np.ndarray, "2"]:
    """Position (a_M) of the deepest minimum of Δ(r) in the moiré cell (any V > 0), refined by Newton steps."""
    s = (np.arange(grid) + 0.5) / grid
    frac = np.stack(np.meshgrid(s, s, indexing="ij"), axis=-1).reshape(-1, 2)
    points = frac @ MOIRE_VECTORS
    best = points[np.argmin(np.asarray(moire_potential(points, 1.0, 1.0, phi_deg)))]
    h = 1e-4
    for _ in range(20):  # Newton on the gradient with finite differences
        e = np.eye(2) * h
        f = lambda x: float(moire_potential(x[None], 1.0, 1.0, phi_deg)[0])  # noqa: E731
        grad = np.array([(f(best + e[i]) - f(best - e[i])) / (2 * h) for i in range(2)])
        hess = np.array([[(f(best + e[i] + e[j]) - f(best + e[i] - e[j]) - f(best - e[i] + e[j]) + f(best - e[i] - e[j])) / (4 * h * h) for j in range(2)] for i in range(2)])
        best = best - np.linalg.solve(hess, grad)
    return best


def moire_sites(supercell: Supercell, phi_deg: float) -> Float[np.ndarray, "M 2"]:
    """The deepest potential minimum of every moiré cell of the supercell (a_M)."""
    n1, n2 = np.meshgrid(np.arange(supercell.L1), np.arange(supercell.L2), indexing="ij")
    return np.stack([n1.ravel(), n2.ravel()], axis=-1) @ MOIRE_VECTORS + potential_minimum(phi_deg)
