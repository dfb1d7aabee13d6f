"""Conditioned short-range radial pair Jastrow: a cusp-free Gaussian series in the periodic distance.

    log J(r; c) = Σ_{i<j} u_s(d_ij; c),   u_s(d; c) = Σ_k b_{s,k}(c) exp(−d²/w_k²),

with d the smooth periodic distance of ``model.jastrow`` (a_M), s the pair type
(parallel or antiparallel spins) and widths w_k = w_0·2^k (a_M). Each Gaussian
has zero slope at coincidence, so the cusp of ``CuspJastrow`` is kept exactly;
what this factor adds is the shape of the correlation hole on the scale of the
closest approach of two electrons (0.1–1 a_M), which the plane-wave pair Jastrow
resolves only with many shells and the trunk's features (harmonics of |g|) not
at all. Being a few smooth functions of d rather than one coefficient per
shell, it adds that resolution with a handful of parameters.

The coefficients b(c) come from a small MLP of the normalised conditions with a
zero-initialised output layer: the factor is 1 at initialisation.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from qernel_cli.lattice import Supercell
from qernel_cli.model.jastrow import pair_sum_jet, periodic_distance_squared, spin_pairs, torus_geometry

SMALLEST_WIDTH = 0.1
"""w_0 (a_M): the narrowest Gaussian; the others double from it."""


def gaussian_widths(count: int, smallest: float = SMALLEST_WIDTH) -> Float[np.ndarray, " count"]:
    """Widths w_k = smallest·2^k (a_M), k = 0..count−1."""
    return smallest * 2.0 ** np.arange(count)


class RadialJastrow(eqx.Module):
    """log J(r; c) of the module docstring (dimensionless, real)."""

    hidden: eqx.nn.Linear
    out: eqx.nn.Linear
    widths: tuple[float, ...] = eqx.field(static=True)
    to_fractional: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    metric: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)

    def __init__(
        self, supercell: Supercell, n_up: int, n_down: int, n_conditions: int, count: int, *, hidden: int = 16, key: PRNGKeyArray
    ):
        """``count`` Gaussians per pair type, widths ``gaussian_widths(count)``."""
        if count < 1:
            raise ValueError(f"need at least one Gaussian, got {count}")
        self.widths = tuple(float(w) for w in gaussian_widths(count))
        self.to_fractional, self.metric = torus_geometry(supercell)
        self.n_up, self.n_down = int(n_up), int(n_down)
        k1, k2 = jax.random.split(key)
        self.hidden = eqx.nn.Linear(n_conditions, hidden, key=k1, dtype=jnp.float64)
        out = eqx.nn.Linear(hidden, 2 * count, key=k2, dtype=jnp.float64)
        self.out = eqx.tree_at(lambda l: (l.weight, l.bias), out, (jnp.zeros_like(out.weight), jnp.zeros_like(out.bias)))

    def pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Electron indices (i, j) of every pair i < j and its type (0 parallel, 1 antiparallel)."""
        i, j, parallel = spin_pairs(self.n_up, self.n_down)
        return i, j, (~parallel).astype(np.int32)

    def coefficients(self, conditions: Float[Array, " n_conditions"]) -> Float[Array, "2 count"]:
        """b_{s,k}(c) for normalised conditions c (rows: parallel, antiparallel)."""
        return self.out(jnp.tanh(self.hidden(jnp.asarray(conditions, jnp.float64)))).reshape(2, len(self.widths))

    def _pair(self, delta: Float[Array, "2"], b: Float[Array, " count"]) -> Float[Array, ""]:
        d2 = periodic_distance_squared(delta, np.asarray(self.to_fractional), np.asarray(self.metric))
        return jnp.sum(b * jnp.exp(-d2 / jnp.asarray(np.square(self.widths))))

    def __call__(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Float[Array, ""]:
        i, j, kind = self.pairs()
        positions = jnp.asarray(positions, jnp.float64)
        if len(i) == 0:
            return jnp.zeros((), jnp.float64)
        b = self.coefficients(conditions)[kind]  # (pairs, count)
        return jnp.sum(jax.vmap(self._pair)(positions[i] - positions[j], b))

    def laplacian_and_gradient(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]
    ) -> tuple[Float[Array, ""], Float[Array, "n 2"]]:
        """(∇² log J, ∇ log J) in 1/a_M², 1/a_M, pair by pair (each a function of r_i − r_j only)."""
        i, j, kind = self.pairs()
        positions = jnp.asarray(positions, jnp.float64)
        if len(i) == 0:
            return jnp.zeros((), jnp.float64), jnp.zeros_like(positions)
        return pair_sum_jet(self._pair, positions, i, j, self.coefficients(conditions)[kind])
