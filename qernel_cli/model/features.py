"""Periodic one-electron input features and the token embedding.

Positions are Cartesian, in moiré units (a_M = 1), on the L1 × L2 supercell
torus. Every feature is a smooth function that is periodic on that torus, so
the network never sees an absolute position:

* supercell harmonics: sin, cos of 2π m s_a for the fractional coordinates
  s = (s_1, s_2) (r = s_1 T_1 + s_2 T_2) and m = 1..harmonics;
* moiré harmonics: cos, sin of g_j·r for the three shortest moiré reciprocal
  vectors g_j (these are supercell reciprocal vectors, so also periodic).

The features are dimensionless and O(1); they are computed in float64 and cast
to the trunk's dtype afterwards.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from qernel_cli.lattice import MOIRE_G, Supercell
from qernel_cli.model.jet import Jet, linear
from qernel_cli.model.linear import Linear, normal, split


def static_matrix(matrix: np.ndarray) -> tuple[tuple[float, ...], ...]:
    """A small float matrix as nested tuples: hashable, so it can be a static field."""
    return tuple(tuple(float(v) for v in row) for row in np.asarray(matrix, dtype=np.float64))


class PeriodicFeatures(eqx.Module):
    """Parameter-free periodic features of each electron (dimensionless)."""

    harmonics: int = eqx.field(static=True)
    to_fractional: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    moire_g: tuple[tuple[float, ...], ...] = eqx.field(static=True)

    def __init__(self, supercell: Supercell, harmonics: int):
        if harmonics < 1:
            raise ValueError(f"harmonics must be a positive integer, got {harmonics!r}")
        self.harmonics = int(harmonics)
        # s = r @ (B^T / 2π): columns are the supercell reciprocal vectors / 2π.
        self.to_fractional = static_matrix(supercell.reciprocal.T / (2.0 * np.pi))
        self.moire_g = static_matrix(MOIRE_G)

    @property
    def size(self) -> int:
        """Number of features per electron: 4·harmonics + 6."""
        return 4 * self.harmonics + 2 * len(self.moire_g)

    def __call__(self, positions: Float[Array, "n 2"]) -> Float[Array, "n f"]:
        positions = jnp.asarray(positions, dtype=jnp.float64)
        frac = positions @ jnp.asarray(self.to_fractional)  # (n, 2), dimensionless
        m = jnp.arange(1, self.harmonics + 1, dtype=positions.dtype)
        angles = 2.0 * jnp.pi * frac[:, :, None] * m  # (n, 2, harmonics)
        angles = angles.reshape(positions.shape[0], -1)
        moire = positions @ jnp.asarray(self.moire_g).T  # (n, 3)
        return jnp.concatenate([jnp.sin(angles), jnp.cos(angles), jnp.cos(moire), jnp.sin(moire)], axis=-1)

    def jet(self, positions: Float[Array, "n 2"]) -> Jet:
        """The features' jet over the 2n coordinates (float64): each electron's features depend on its own position alone."""
        n = positions.shape[0]

        def one(r):
            return self(r[None])[0]

        value = self(positions)
        own_jacobian = jax.vmap(jax.jacfwd(one))(positions)  # (n, f, 2)
        own_laplacian = jax.vmap(lambda r: jnp.trace(jax.jacfwd(jax.jacfwd(one))(r), axis1=-2, axis2=-1))(positions)
        eye = jnp.eye(n, dtype=value.dtype)
        jacobian = jnp.einsum("pi,ifa->paif", eye, own_jacobian).reshape(2 * n, n, -1)
        return Jet(value, jacobian, own_laplacian)


class TokenEmbedding(eqx.Module):
    """Linear map of the features to the token width plus a learned spin embedding."""

    linear: Linear
    spin: Float[Array, "n_spin width"]

    def __init__(self, n_features: int, width: int, *, n_spin: int = 2, dtype=jnp.float64, key: PRNGKeyArray):
        k_lin, k_spin = split(key, 2)
        self.linear = Linear(n_features, width, dtype=dtype, key=k_lin)
        self.spin = normal(k_spin, (n_spin, width), 1.0, dtype)

    def __call__(self, features: Float[Array, "n f"], spins: Int[Array, " n"]) -> Float[Array, "n width"]:
        features = features.astype(self.spin.dtype)
        return self.linear(features) + self.spin[spins]

    def jet(self, features: Jet, spins: Int[Array, " n"]) -> Jet:
        """Jet of the tokens from the features' jet (constants: the spin embedding and the bias)."""
        dtype = self.spin.dtype
        features = Jet(features.value.astype(dtype), features.jacobian.astype(dtype), features.laplacian.astype(dtype))
        shift = self.spin[spins]
        if self.linear.bias is not None:
            shift = shift + self.linear.bias
        return linear(features, lambda y: y @ self.linear.weight.T, shift)
