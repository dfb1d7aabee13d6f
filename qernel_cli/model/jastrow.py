"""Periodic two-dimensional electron–electron cusp Jastrow factor.

J = Σ_{i<j} u_s(d_ij), ψ ∝ exp(J), with d the smooth periodic distance on the
supercell torus (moiré units, a_M = 1). With fractional displacements
s_a (r = s_1 T_1 + s_2 T_2) and metric M_ab = T_a·T_b,

    d² = Σ_a M_aa σ_a² + 2 M_12 τ_1 τ_2,  σ_a = sin(π s_a)/π,  τ_a = sin(2π s_a)/(2π),

which is periodic in each s_a, equals |r|² to second order at coincidence and
is positive elsewhere for any cell (L1 ≠ L2 included), since
τ_a = σ_a cos(π s_a) and M is positive definite.

u_s(d) = -U_s L_s² / (L_s + d): u'(0) = U_s gives the 2D cusp ψ ∝ 1 + U_s r
with U_s = U for antiparallel and U/3 for parallel spins (U = a_M/a_B*, the
Coulomb strength in moiré units); u → 0 far away and is bounded; L_s > 0 is a
learnable length (a_M), one per pair type. U = 0 switches the factor off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from qernel_cli.lattice import Supercell
from qernel_cli.model.features import static_matrix


def safe_norm_from_square(d2: Float[Array, "..."]) -> Float[Array, "..."]:
    """√d² with value and derivative 0 (not NaN) at d² = 0 (double-where trick)."""
    positive = d2 > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, d2, 1.0)), 0.0)


def periodic_distance_squared(
    displacements: Float[Array, "... 2"],
    to_fractional: Float[np.ndarray, "2 2"],
    metric: Float[np.ndarray, "2 2"],
) -> Float[Array, "..."]:
    """Smooth periodic d² (a_M²) of displacement vectors (a_M); ≈ |r|² near 0."""
    s = displacements @ jnp.asarray(to_fractional)
    sigma = jnp.sin(jnp.pi * s) / jnp.pi
    tau = jnp.sin(2.0 * jnp.pi * s) / (2.0 * jnp.pi)
    metric = np.asarray(metric)
    return metric[0, 0] * sigma[..., 0] ** 2 + metric[1, 1] * sigma[..., 1] ** 2 + 2.0 * metric[0, 1] * tau[..., 0] * tau[..., 1]


def periodic_distance(displacements: Float[Array, "... 2"], supercell: Supercell) -> Float[Array, "..."]:
    """Smooth periodic distance (a_M) on the supercell torus; equals |r| near coincidence."""
    cell = supercell.cell
    to_fractional = supercell.reciprocal.T / (2.0 * np.pi)
    return safe_norm_from_square(periodic_distance_squared(displacements, to_fractional, cell @ cell.T))


def spin_pairs(n_up: int, n_down: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Electron indices (i, j) of every pair i < j (up electrons first) and whether the pair is parallel."""
    spins = np.array([0] * n_up + [1] * n_down)
    i, j = np.triu_indices(len(spins), k=1)
    return i, j, spins[i] == spins[j]


def torus_geometry(supercell: Supercell) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """(to_fractional, metric) of the supercell as static matrices, the arguments of :func:`periodic_distance_squared`."""
    cell = supercell.cell
    return static_matrix(supercell.reciprocal.T / (2.0 * np.pi)), static_matrix(cell @ cell.T)


def pair_sum_jet(
    pair: Callable[..., Float[Array, ""]], positions: Float[Array, "n 2"], i: np.ndarray, j: np.ndarray, *per_pair: Array
) -> tuple[Float[Array, ""], Float[Array, "n 2"]]:
    """(∇², ∇) of Σ_p pair(r_{i_p} − r_{j_p}, *per_pair[p]) over all positions, pair by pair.

    For f(δ) with δ = r_i − r_j: ∇_i f = ∇f, ∇_j f = −∇f, ∇²_i f + ∇²_j f = 2 ∇²f.
    """
    deltas = positions[i] - positions[j]
    gradient = jax.vmap(jax.grad(pair))(deltas, *per_pair)  # (pairs, 2)
    hessian = jax.vmap(jax.hessian(pair))(deltas, *per_pair)  # (pairs, 2, 2)
    total = jnp.zeros_like(positions).at[i].add(gradient).at[j].add(-gradient)
    return 2.0 * jnp.sum(jnp.trace(hessian, axis1=-2, axis2=-1)), total


class JastrowFactor(Protocol):
    """What the wavefunction needs of a Jastrow factor: log J(r; c) (real, dimensionless) and its closed-form jet."""

    def __call__(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Float[Array, ""]: ...

    def laplacian_and_gradient(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]
    ) -> tuple[Float[Array, ""], Float[Array, "n 2"]]:
        """(∇² log J, ∇ log J) in 1/a_M², 1/a_M for normalised conditions c."""
        ...


class CuspJastrow(eqx.Module):
    """log J = Σ_{i<j} -U_s L_s²/(L_s + d_ij): exact 2D cusps, bounded, periodic (real, dimensionless)."""

    log_length: Float[Array, "2"]
    coulomb_strength: float = eqx.field(static=True)
    to_fractional: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    metric: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)

    def __init__(self, supercell: Supercell, n_up: int, n_down: int, coulomb_strength: float, *, length: float = 0.5):
        """``length``: initial L for both pair types (a_M); index 0 parallel, 1 antiparallel."""
        if not (math.isfinite(coulomb_strength) and coulomb_strength >= 0):
            raise ValueError(f"coulomb_strength must be a finite non-negative number, got {coulomb_strength!r}")
        if not length > 0:
            raise ValueError(f"length must be positive, got {length!r}")
        self.log_length = jnp.asarray(np.full((2,), math.log(length)), dtype=jnp.float64)
        self.coulomb_strength = float(coulomb_strength)
        self.to_fractional, self.metric = torus_geometry(supercell)
        self.n_up, self.n_down = int(n_up), int(n_down)

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Electron indices (i, j) of every pair i < j and whether the pair is parallel."""
        return spin_pairs(self.n_up, self.n_down)

    def cusp_slopes(self) -> Float[np.ndarray, " pairs"]:
        """u'(0) per pair i < j: U/3 for parallel, U for antiparallel spins."""
        return np.where(self.pairs()[2], self.coulomb_strength / 3.0, self.coulomb_strength)

    def pair_function(self, d: Float[Array, "..."], parallel: bool | np.ndarray) -> Float[Array, "..."]:
        """u_s(d) for distances d (a_M)."""
        parallel = np.asarray(parallel, dtype=bool)
        slope = np.where(parallel, self.coulomb_strength / 3.0, self.coulomb_strength)
        length = jnp.exp(self.log_length)[np.where(parallel, 0, 1)]
        return -slope * length**2 / (length + d)

    def __call__(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"] | None = None) -> Float[Array, ""]:
        """log J at ``positions`` (a_M); independent of the conditions (accepted for the ``JastrowFactor`` contract)."""
        i, j, parallel = self.pairs()
        if self.coulomb_strength == 0.0 or len(i) == 0:
            return jnp.zeros((), dtype=jnp.float64)
        positions = jnp.asarray(positions, dtype=jnp.float64)
        d2 = periodic_distance_squared(positions[i] - positions[j], np.asarray(self.to_fractional), np.asarray(self.metric))
        return jnp.sum(self.pair_function(safe_norm_from_square(d2), parallel))

    def laplacian_and_gradient(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"] | None = None
    ) -> tuple[Float[Array, ""], Float[Array, "n 2"]]:
        """(∇² log J, ∇ log J) in 1/a_M², 1/a_M: pair by pair, each a function of r_i − r_j only (c not used)."""
        i, j, parallel = self.pairs()
        positions = jnp.asarray(positions, dtype=jnp.float64)
        if self.coulomb_strength == 0.0 or len(i) == 0:
            return jnp.zeros((), jnp.float64), jnp.zeros_like(positions)
        slope = jnp.asarray(np.where(parallel, self.coulomb_strength / 3.0, self.coulomb_strength))
        length = jnp.exp(self.log_length)[np.where(parallel, 0, 1)]
        to_fractional, metric = np.asarray(self.to_fractional), np.asarray(self.metric)

        def pair(delta, slope, length):
            d = safe_norm_from_square(periodic_distance_squared(delta, to_fractional, metric))
            return -slope * length**2 / (length + d)

        return pair_sum_jet(pair, positions, i, j, slope, length)
