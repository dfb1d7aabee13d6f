"""Conditioned plane-wave pair Jastrow: density–density correlations at chosen wave vectors.

    log J(r; c) = (1/N) Σ_s a_s(c) Σ_{q ∈ shell s} (|ρ_q|² − N),   ρ_q = Σ_j e^{−iq·r_j},

with q on the supercell reciprocal lattice (one of each ±q pair), 0 < |q| ≤
q_max, grouped into shells of equal |q|. Since |ρ_q|² − N = 2 Σ_{i<j} cos(q·r_ij),
this is a periodic two-body Jastrow u(r_ij) = (2/N) Σ_s a_s Σ_q cos(q·r_ij):
real, symmetric under exchange, smooth, and exactly periodic on the supercell.

The coefficients come from a small MLP of the normalised conditions c, with a
zero-initialised output layer, so the factor is 1 at initialisation (pre-training
is unaffected). A positive a_s at the ordering wave vectors K of a crystal
rewards configurations with a large |ρ_K|², which is how the liquid-like
determinant at shallow depth can turn into a crystal at large depth within one
family model.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, PRNGKeyArray

from qernel_cli.lattice import MOIRE_G, Supercell, lattice_waves, points_in_disc
from qernel_cli.model.features import static_matrix


def half_plane_shells(supercell: Supercell, q_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Wave vectors q (one of each ±q pair) with 0 < |q| ≤ q_max and the shell index of each."""
    q, labels = points_in_disc(supercell.reciprocal, q_max)
    upper = (labels[:, 0] > 0) | ((labels[:, 0] == 0) & (labels[:, 1] > 0))
    q = q[upper]
    norm = np.linalg.norm(q, axis=-1)
    _, shell = np.unique(np.round(norm, 8), return_inverse=True)
    return q, shell.astype(np.int32)


class PairJastrow(eqx.Module):
    """log J(r; c) of the module docstring (dimensionless, real)."""

    hidden: eqx.nn.Linear
    out: eqx.nn.Linear
    q: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    reciprocal: tuple[tuple[float, ...], ...] = eqx.field(static=True)  # the supercell's reciprocal basis (1/a_M): q lies on it
    shell: tuple[int, ...] = eqx.field(static=True)
    n_shells: int = eqx.field(static=True)

    def __init__(self, supercell: Supercell, n_conditions: int, q_max_moire: float, *, hidden: int = 16, key: PRNGKeyArray):
        """``q_max_moire``: the cutoff in units of the shortest moiré reciprocal vector |g| = 4π/√3."""
        q, shell = half_plane_shells(supercell, float(q_max_moire) * float(np.linalg.norm(MOIRE_G[0])))
        if len(q) == 0:
            raise ValueError(f"no wave vector below q_max = {q_max_moire}|g| on this supercell")
        self.q = static_matrix(q)
        self.reciprocal = static_matrix(supercell.reciprocal)
        self.shell = tuple(int(s) for s in shell)
        self.n_shells = int(shell.max()) + 1
        k1, k2 = jax.random.split(key)
        self.hidden = eqx.nn.Linear(n_conditions, hidden, key=k1, dtype=jnp.float64)
        out = eqx.nn.Linear(hidden, self.n_shells, key=k2, dtype=jnp.float64)
        self.out = eqx.tree_at(lambda l: (l.weight, l.bias), out, (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)))

    def _waves(self, positions: Float[Array, "n 2"]) -> Complex[Array, "n Q"]:
        """e^{i q·r_j} (products of powers of two exponentials: q lies on the supercell's reciprocal lattice)."""
        return lattice_waves(positions, np.asarray(self.q), np.asarray(self.reciprocal))

    def coefficients(self, conditions: Float[Array, " n_conditions"]) -> Float[Array, " shells"]:
        """a_s(c) for normalised conditions c."""
        return self.out(jnp.tanh(self.hidden(jnp.asarray(conditions, jnp.float64))))

    def __call__(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Float[Array, ""]:
        n = positions.shape[0]
        rho = jnp.sum(self._waves(positions), axis=0)  # ρ_q
        rho2 = rho.real**2 + rho.imag**2  # |ρ_q|²
        a = self.coefficients(conditions)[np.asarray(self.shell)]
        return jnp.sum(a * (rho2 - n)) / n

    def laplacian_and_gradient(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]
    ) -> tuple[Float[Array, ""], Float[Array, "n 2"]]:
        """(∇² log J, ∇ log J) in 1/a_M², 1/a_M, in closed form.

        With C_q = Σ_j cos(q·r_j), S_q = Σ_j sin(q·r_j), |ρ_q|² = C_q² + S_q²:
        ∇_i |ρ_q|² = 2q (S_q cos q·r_i − C_q sin q·r_i) and Σ_i ∇²_i |ρ_q|² = 2|q|² (n − |ρ_q|²).
        """
        n = positions.shape[0]
        q = np.asarray(self.q)
        waves = self._waves(positions)
        cos, sin = waves.real, waves.imag
        c_sum, s_sum = jnp.sum(cos, axis=0), jnp.sum(sin, axis=0)
        a = self.coefficients(conditions)[np.asarray(self.shell)] / n
        q2 = jnp.asarray(np.sum(q**2, axis=-1))
        laplacian = jnp.sum(a * 2.0 * q2 * (n - c_sum**2 - s_sum**2))
        gradient = 2.0 * ((s_sum * cos - c_sum * sin) * a) @ jnp.asarray(q)  # (n, 2)
        return laplacian, gradient
