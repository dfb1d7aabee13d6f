"""Triangular moiré lattice and its periodic supercell, in moiré units (a_M = 1).

Moiré lattice vectors a_1 = (1, 0), a_2 = (1/2, √3/2). The supercell is spanned
by T_1 = L1·a_1 and T_2 = L2·a_2; electrons live on this torus. Reciprocal
vectors b_i satisfy a_i·b_j = 2π δ_ij (B_i·T_j = 2π δ_ij for the supercell).
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Int

SQRT3 = math.sqrt(3.0)

MOIRE_VECTORS = np.array([[1.0, 0.0], [0.5, SQRT3 / 2.0]])
"""Rows a_1, a_2 of the moiré lattice (units of a_M)."""


def reciprocal_vectors(cell: Float[np.ndarray, "2 2"]) -> Float[np.ndarray, "2 2"]:
    """Rows b_j with cell[i]·b_j = 2π δ_ij (inverse length units of ``cell``)."""
    return 2.0 * np.pi * np.linalg.inv(np.asarray(cell, dtype=np.float64)).T


def lattice_waves(
    positions: Float[Array, "n 2"], vectors: Float[np.ndarray, "m 2"], basis: Float[np.ndarray, "2 2"]
) -> Complex[Array, "n m"]:
    """e^{i v·r} for every position r (a_M) and vector v (1/a_M) of the lattice with ``basis`` rows b₁, b₂.

    With v = n₁b₁ + n₂b₂ (integers), e^{i v·r} = z₁^{n₁} z₂^{n₂}, z_a = e^{i b_a·r}:
    two complex exponentials per position and tables of their powers (built by
    repeated multiplication, rounding ~|n|·ε) instead of m cosines and sines.
    Vectors off the lattice fall back to cos/sin.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    positions = jnp.asarray(positions, dtype=jnp.float64)
    coefficients = vectors @ np.linalg.inv(np.asarray(basis, dtype=np.float64))
    integers = np.round(coefficients).astype(np.int64)
    if len(vectors) == 0 or not np.allclose(coefficients, integers, atol=1e-8):
        phase = positions @ jnp.asarray(vectors).T
        return jnp.cos(phase) + 1j * jnp.sin(phase)
    phase = positions @ jnp.asarray(basis, dtype=jnp.float64).T  # (..., n, 2)
    z = jnp.cos(phase) + 1j * jnp.sin(phase)
    wave = None
    for a in range(2):
        top = int(np.max(np.abs(integers[:, a])))
        if top == 0:
            continue
        powers = jnp.cumprod(jnp.repeat(z[..., a : a + 1], top, axis=-1), axis=-1)  # z^1 … z^top
        table = jnp.concatenate([jnp.conj(powers[..., ::-1]), jnp.ones_like(powers[..., :1]), powers], axis=-1)  # z^-top … z^top
        factor = table[..., integers[:, a] + top]
        wave = factor if wave is None else wave * factor
    return jnp.ones(positions.shape[:-1] + (len(vectors),), z.dtype) if wave is None else wave


def points_in_disc(
    basis: Float[np.ndarray, "2 2"], radius: float
) -> tuple[Float[np.ndarray, "M 2"], Int[np.ndarray, "M 2"]]:
    """Every lattice point p = m_1 basis[0] + m_2 basis[1] with |p| ≤ radius, and its labels (m_1, m_2).

    The origin included; ordered by m_1, then m_2 (callers sort as they need).
    A relative tolerance of 1e-12 keeps points on the circle.
    """
    basis = np.asarray(basis, dtype=np.float64)
    # |m_1 B_1 + m_2 B_2| ≥ σ_min(B)·|m|, so this square of labels holds the disc.
    span = int(np.ceil(radius / np.linalg.svd(basis, compute_uv=False)[-1])) + 1
    m = np.arange(-span, span + 1)
    labels = np.stack(np.meshgrid(m, m, indexing="ij"), axis=-1).reshape(-1, 2)
    points = labels @ basis
    keep = np.linalg.norm(points, axis=-1) <= radius * (1 + 1e-12)
    return points[keep], labels[keep]


MOIRE_RECIPROCAL = reciprocal_vectors(MOIRE_VECTORS)
"""Rows b_1, b_2 of the moiré reciprocal lattice (units of 1/a_M), |b| = 4π/√3."""

MOIRE_G = np.stack([MOIRE_RECIPROCAL[0], MOIRE_RECIPROCAL[1], -MOIRE_RECIPROCAL[0] - MOIRE_RECIPROCAL[1]])
"""The three shortest moiré reciprocal vectors g_1, g_2, g_3 at 120° (sum zero)."""


@dataclasses.dataclass(frozen=True)
class Supercell:
    """An L1 × L2 supercell of the triangular moiré lattice (moiré units).

    Hashable, so it can be a static argument of jitted functions.
    """

    L1: int
    L2: int

    def __post_init__(self):
        for name in ("L1", "L2"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"supercell.{name} must be a positive integer, got {value!r}")

    @property
    def n_cells(self) -> int:
        """Number of moiré cells in the supercell."""
        return self.L1 * self.L2

    @property
    def cell(self) -> Float[np.ndarray, "2 2"]:
        """Rows T_1 = L1 a_1, T_2 = L2 a_2 (units of a_M)."""
        return np.array([self.L1, self.L2], dtype=np.float64)[:, None] * MOIRE_VECTORS

    @property
    def reciprocal(self) -> Float[np.ndarray, "2 2"]:
        """Rows B_1, B_2 of the supercell reciprocal lattice (units of 1/a_M)."""
        return reciprocal_vectors(self.cell)

    @property
    def area(self) -> float:
        """Supercell area (units of a_M²)."""
        return abs(float(np.linalg.det(self.cell)))

    def filling(self, n_electrons: int) -> float:
        """Filling ν = N / (L1·L2) (electrons per moiré cell)."""
        return n_electrons / self.n_cells

    def kgrid(self) -> Float[np.ndarray, "n_cells 2"]:
        """Bloch momenta allowed by periodic boundary conditions on the supercell.

        k = (n1/L1) b_1 + (n2/L2) b_2 with 0 ≤ n_i < L_i, folded into the moiré
        Brillouin zone's Wigner-Seitz cell (the shortest representative), units 1/a_M.
        """
        n1, n2 = np.meshgrid(np.arange(self.L1), np.arange(self.L2), indexing="ij")
        frac = np.stack([n1.ravel() / self.L1, n2.ravel() / self.L2], axis=-1)
        return fold_to_wigner_seitz(frac @ MOIRE_RECIPROCAL, MOIRE_RECIPROCAL)

    def fractional(self, positions: Float[Array, "... 2"]) -> Float[Array, "... 2"]:
        """Cartesian positions → fractional coordinates s with r = s·cell."""
        return positions @ jnp.asarray(self.reciprocal.T / (2.0 * np.pi))

    def wrap(self, positions: Float[Array, "... 2"]) -> Float[Array, "... 2"]:
        """Wrap positions into the supercell parallelogram (fractional in [0, 1))."""
        frac = self.fractional(positions)
        return (frac - jnp.floor(frac)) @ jnp.asarray(self.cell)

    def minimum_image(self, displacements: Float[Array, "... 2"]) -> Float[Array, "... 2"]:
        """Shortest periodic image of each displacement vector."""
        return minimum_image(displacements, self.cell)


def fold_to_wigner_seitz(
    vectors: Float[np.ndarray, "n 2"], basis: Float[np.ndarray, "2 2"]
) -> Float[np.ndarray, "n 2"]:
    """Shortest representative of each vector modulo the lattice spanned by ``basis`` rows."""
    vectors = np.asarray(vectors, dtype=np.float64)
    basis = reduce_basis(basis)
    frac = vectors @ np.linalg.inv(basis)
    reduced = (frac - np.round(frac)) @ basis
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=2)), dtype=np.float64) @ basis
    candidates = reduced[:, None, :] + shifts[None, :, :]
    best = np.argmin(np.sum(candidates**2, axis=-1), axis=1)
    return candidates[np.arange(len(vectors)), best]


def reduce_basis(cell: Float[np.ndarray, "2 2"]) -> Float[np.ndarray, "2 2"]:
    """Lagrange–Gauss reduced basis of the same 2D lattice: |b1| ≤ |b2|, 2|b1·b2| ≤ |b1|²."""
    b1, b2 = np.array(cell, dtype=np.float64)
    if b1 @ b1 > b2 @ b2:
        b1, b2 = b2, b1
    while True:
        b2 = b2 - np.round((b1 @ b2) / (b1 @ b1)) * b1
        if b2 @ b2 >= b1 @ b1:
            return np.stack([b1, b2])
        b1, b2 = b2, b1


def minimum_image(displacements: Float[Array, "... 2"], cell: Float[np.ndarray, "2 2"]) -> Float[Array, "... 2"]:
    """Shortest periodic image of displacement vectors for a 2D cell (rows lattice vectors).

    The cell is first Gauss-reduced; rounding the fractional coordinates in that
    basis and checking the nine neighbouring images is then exact.
    """
    cell = reduce_basis(cell)
    inv = jnp.asarray(np.linalg.inv(cell))
    frac = displacements @ inv
    reduced = (frac - jnp.round(frac)) @ jnp.asarray(cell)
    shifts = jnp.asarray(np.array(list(itertools.product((-1, 0, 1), repeat=2)), dtype=np.float64) @ cell)
    candidates = reduced[..., None, :] + shifts
    best = jnp.argmin(jnp.sum(candidates**2, axis=-1), axis=-1)
    return jnp.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
