"""2D Ewald Coulomb energy of point charges with a uniform neutralising background.

Charges e = 1 on a torus spanned by the rows T_1, T_2 of ``cell`` (area A),
Ewald splitting parameter κ (inverse length):

    ψ(r) = Σ_R erfc(κ|r+R|)/|r+R| + (2π/A) Σ_{G≠0} cos(G·r) erfc(G/2κ)/G − 2√π/(κA)
    ξ    = Σ_{R≠0} erfc(κR)/R + (2π/A) Σ_{G≠0} erfc(G/2κ)/G − 2κ/√π − 2√π/(κA)
    E    = ½ Σ_{i≠j} ψ(r_i − r_j) + ½ N ξ,

independent of κ. Lengths are in any unit; energies come out in (that unit)⁻¹:
multiply by e²/(4πε₀ε) (by U in moiré units) to get an energy.

Per configuration, E is regrouped as

    E = Σ_{i<j} Σ_R erfc(κ|d_ij+R|)/|d_ij+R|                (real space)
      + (π/A) Σ_{G≠0} erfc(G/2κ)/G |ρ_G|²,  ρ_G = Σ_i e^{iG·r_i}   (reciprocal)
      + N (½ Σ_{R≠0} erfc(κR)/R − κ/√π) − N² √π/(κA)          (constants),

using Σ_{i≠j} cos(G·r_ij) = |ρ_G|² − N. The cell is first Lagrange–Gauss
reduced to rows a, b (same lattice). Displacements d_ij are reduced to the
parallelogram of fractional coordinates [−½, ½]² and the image set {R} holds every
R whose translate of that parallelogram comes within the real-space cutoff x/κ,
erfc(x) = tol. Writing G = m B_1 + n B_2, e^{iG·r} = e^{2πi m s_1} e^{2πi n s_2}
with s the fractional coordinates, so ρ on the whole (m, n) grid is one small
matrix product: O(N·(M_1+M_2)) sin/cos plus an O(N·M_1·M_2) matmul, instead of
O(N·N_G) sin/cos. Everything that depends on the cell alone is precomputed in
float64 numpy when an :class:`EwaldSum` is built.
"""

from __future__ import annotations

import math
from typing import Final

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.special
from jax.scipy.special import erfc
from jaxtyping import Array, Float

from qernel_cli.lattice import reciprocal_vectors

__all__ = ["EwaldSum", "ewald_energy", "reduce_cell"]

SQRT_PI: Final = math.sqrt(math.pi)

# Cost model used only to choose the default κ, in units of one real-space term
# (norm + erfc + divide for one pair and one image, ~6 ns), fitted to timings of
# jit(vmap(EwaldSum)) with XLA on CPU:
_PAIR_OVERHEAD: Final = 0.3  # fractional reduction of one pair displacement
_PHASE_COST: Final = 1.7  # one sin + cos per electron and grid row/column
_GRID_COST: Final = 0.37  # the 2×2 real multiply-adds per electron and (m, n) grid point
_DEFAULT_COST_ELECTRONS: Final = 150  # N assumed by the default κ if none is given


def reduce_cell(cell: Float[np.ndarray, "2 2"]) -> Float[np.ndarray, "2 2"]:
    """Lagrange–Gauss reduced basis of the lattice spanned by the rows of ``cell``.

    Returns rows a, b spanning the same lattice with |a| ≤ |b| and
    0 ≤ a·b ≤ |a|²/2, so the triangle 0, a, b is non-obtuse and
    :func:`qernel_cli.lattice.minimum_image` is exact for it.
    """
    cell = np.asarray(cell, dtype=np.float64)
    if cell.shape != (2, 2) or not np.all(np.isfinite(cell)):
        raise ValueError(f"cell must be a finite (2, 2) array of lattice vectors (rows), got {cell!r}")
    a, b = cell[0].copy(), cell[1].copy()
    if not abs(a[0] * b[1] - a[1] * b[0]) > 1e-12 * (a @ a + b @ b):
        raise ValueError(f"cell vectors are (nearly) linearly dependent: {cell!r}")
    if a @ a > b @ b:
        a, b = b, a
    while True:
        b = b - np.round((a @ b) / (a @ a)) * a
        if b @ b >= a @ a:
            break
        a, b = b, a
    if a @ b < 0:
        b = -b
    return np.stack([a, b])


def _lattice_points(basis: Float[np.ndarray, "2 2"], radius: float) -> Float[np.ndarray, "n 2"]:
    """All points m·basis[0] + n·basis[1] with |point| ≤ radius, sorted by length."""
    dual = np.linalg.inv(basis).T  # dual[i]·basis[j] = δ_ij, so |m_i| ≤ radius·|dual[i]|
    m_max = [int(math.ceil(radius * np.linalg.norm(dual[i]))) + 1 for i in range(2)]
    m, n = np.meshgrid(np.arange(-m_max[0], m_max[0] + 1), np.arange(-m_max[1], m_max[1] + 1), indexing="ij")
    points = np.stack([m.ravel(), n.ravel()], axis=-1).astype(np.float64) @ basis
    lengths = np.linalg.norm(points, axis=-1)
    keep = lengths <= radius
    order = np.argsort(lengths[keep], kind="stable")
    return points[keep][order]


def _distance_to_parallelogram(points: Float[np.ndarray, "n 2"], basis: Float[np.ndarray, "2 2"]) -> Float[np.ndarray, " n"]:
    """Euclidean distance from each point to {s_1 a + s_2 b : s ∈ [−½, ½]²} (0 inside)."""
    frac = points @ np.linalg.inv(basis)
    inside = np.all(np.abs(frac) <= 0.5, axis=-1)
    corners = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]) @ basis
    dist = np.full(len(points), np.inf)
    for k in range(4):
        p, q = corners[k], corners[(k + 1) % 4]
        t = np.clip(((points - p) @ (q - p)) / ((q - p) @ (q - p)), 0.0, 1.0)
        dist = np.minimum(dist, np.linalg.norm(points - p - t[:, None] * (q - p), axis=-1))
    return np.where(inside, 0.0, dist)


def _image_vectors(reduced: Float[np.ndarray, "2 2"], r_cut: float) -> Float[np.ndarray, "n_R 2"]:
    """Images R with |d + R| < r_cut for some d in the reduced parallelogram (R = 0 first)."""
    half_diagonal = 0.5 * max(np.linalg.norm(reduced[0] + reduced[1]), np.linalg.norm(reduced[0] - reduced[1]))
    candidates = _lattice_points(reduced, r_cut + half_diagonal)
    return candidates[_distance_to_parallelogram(candidates, reduced) < r_cut]


def _reciprocal_grid(
    reciprocal: Float[np.ndarray, "2 2"], g_cut: float
) -> tuple[Float[np.ndarray, "M1 M2 2"], Float[np.ndarray, "M1 M2"]]:
    """Half-plane grid G = m B_1 + n B_2, 0 ≤ m ≤ M_1, |n| ≤ M_2, and a mask of the kept G.

    Kept: 0 < |G| ≤ g_cut and (m > 0 or n > 0), i.e. one of each pair ±G.
    """
    dual = np.linalg.inv(reciprocal).T
    m_max, n_max = (int(math.floor(g_cut * np.linalg.norm(dual[i]) + 1e-9)) for i in range(2))
    m, n = np.meshgrid(np.arange(0, m_max + 1), np.arange(-n_max, n_max + 1), indexing="ij")
    g = m[..., None] * reciprocal[0] + n[..., None] * reciprocal[1]
    keep = ((m > 0) | ((m == 0) & (n > 0))) & (np.linalg.norm(g, axis=-1) <= g_cut)
    return g, keep


def _cutoff_argument(tol: float) -> float:
    """x with erfc(x) = tol: the real-space cutoff is x/κ and the reciprocal one 2κx."""
    if not (0.0 < tol < 1.0):
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
    return float(scipy.special.erfcinv(tol))


def _estimated_cost(reduced: Float[np.ndarray, "2 2"], kappa: float, x: float, n: int) -> float:
    """Relative cost of one energy evaluation for N = n electrons (see the _*_COST constants)."""
    n_r = len(_image_vectors(reduced, x / kappa))
    g, _ = _reciprocal_grid(reciprocal_vectors(reduced), 2.0 * kappa * x)
    rows, cols = g.shape[:2]
    pairs = 0.5 * n * (n - 1)
    return pairs * (_PAIR_OVERHEAD + n_r) + n * (_PHASE_COST * (rows + cols) + _GRID_COST * rows * cols)


def _default_kappa(reduced: Float[np.ndarray, "2 2"], area: float, x: float, n_electrons: int) -> float:
    """κ minimising the estimated cost over a geometric grid of κ√A ∈ [1, 40]."""
    grid = np.geomspace(1.0, 40.0, 81) / math.sqrt(area)
    costs = [_estimated_cost(reduced, k, x, n_electrons) for k in grid]
    return float(grid[int(np.argmin(costs))])


def _cyclic_shifts(v: Float[Array, " n"], n_shifts: int) -> Float[Array, "n_shifts n"]:
    """Rows v rolled left by k = 1..n_shifts: out[k−1, i] = v[(i + k) mod n].

    Built by tiling and reshaping (row k starts k·(n+1) into the tiled vector),
    which XLA fuses and differentiates cheaply.
    """
    n = v.shape[0]
    tiled = jnp.tile(v, n_shifts + 1)[1 : 1 + n_shifts * (n + 1)]
    return tiled.reshape(n_shifts, n + 1)[:, :n]


class EwaldSum(eqx.Module):
    """Ewald Coulomb energy on a fixed 2D torus (charges e = 1, neutralising background).

    Build once per cell (construction enumerates lattice and reciprocal vectors in
    numpy); calling it is jit-able, vmappable over walkers and differentiable.
    Jit it as ``eqx.filter_jit``, ``jax.jit(jax.vmap(ewald))`` or
    ``jax.jit(lambda x: ewald(x))`` (plain ``jax.jit(ewald)`` tries to hash the
    array leaves, as for any equinox module). Example::

        ewald = EwaldSum(Supercell(15, 15).cell, n_electrons=150)
        energies = jax.jit(jax.vmap(ewald))(walkers)  # (B, 150, 2) → (B,), units 1/a_M

    Attributes:
        images: real-space lattice images R (length units), R = 0 first.
        weight_grid: (2π/A)·erfc(|G|/2κ)/|G| at G = m B_1 + n B_2, m = 0..M_1,
            n = −M_2..M_2, zero where G is dropped (one of each ±G kept).
        gvectors: the kept G (inverse length), for :meth:`pair_potential`.
        gweights: their weights (as in ``weight_grid``).
        basis: reduced cell, rows a, b (length units).
        inverse_basis: its inverse (fractional s = r @ inverse_basis).
        kappa: splitting parameter κ (inverse length).
        area: cell area A (length²).
        xi: the self/Madelung constant ξ (inverse length); E(N = 1) = ξ/2.
        self_energy: ½ Σ_{R≠0} erfc(κR)/R − κ/√π (inverse length).
        background: −√π/(κA) (inverse length).
    """

    images: Float[Array, "n_R 2"]
    weight_grid: Float[Array, "M1 M2"]
    gvectors: Float[Array, "n_G 2"]
    gweights: Float[Array, " n_G"]
    basis: Float[Array, "2 2"]
    inverse_basis: Float[Array, "2 2"]
    kappa: Float[Array, ""]
    area: Float[Array, ""]
    xi: Float[Array, ""]
    self_energy: Float[Array, ""]
    background: Float[Array, ""]

    def __init__(
        self,
        cell: Float[np.ndarray, "2 2"],
        kappa: float | None = None,
        tol: float = 1e-12,
        n_electrons: int | None = None,
    ):
        """Precompute the cell-dependent parts.

        Args:
            cell: (2, 2) array whose rows are the lattice vectors T_1, T_2 (any
                length unit; need not be reduced).
            kappa: splitting parameter κ (inverse length). Default: the κ that
                minimises an estimated evaluation cost for ``n_electrons``.
            tol: terms with erfc(·) < tol are dropped (1e-12 gives ~1e-12
                relative energies in float64).
            n_electrons: expected electron count, only used to choose the default
                κ (default 150). Any N may be evaluated regardless.
        """
        reduced = reduce_cell(cell)
        area = abs(float(np.linalg.det(reduced)))
        x = _cutoff_argument(tol)
        if kappa is None:
            n_cost = _DEFAULT_COST_ELECTRONS if n_electrons is None else int(n_electrons)
            kappa = _default_kappa(reduced, area, x, max(n_cost, 2))
        kappa = float(kappa)
        if not (math.isfinite(kappa) and kappa > 0):
            raise ValueError(f"kappa must be a positive finite number, got {kappa!r}")

        images = _image_vectors(reduced, x / kappa)
        g, keep = _reciprocal_grid(reciprocal_vectors(reduced), 2.0 * kappa * x)
        glen = np.where(keep, np.linalg.norm(g, axis=-1), 1.0)
        weight_grid = np.where(keep, (2.0 * np.pi / area) * scipy.special.erfc(glen / (2.0 * kappa)) / glen, 0.0)

        self_lattice = _lattice_points(reduced, x / kappa)[1:]  # R ≠ 0 with erfc(κR) ≥ tol
        rlen = np.linalg.norm(self_lattice, axis=-1)
        real_self = float(np.sum(scipy.special.erfc(kappa * rlen) / rlen))
        background = -SQRT_PI / (kappa * area)

        self.images = jnp.asarray(images)
        self.weight_grid = jnp.asarray(weight_grid)
        self.gvectors = jnp.asarray(g[keep])
        self.gweights = jnp.asarray(weight_grid[keep])
        self.basis = jnp.asarray(reduced)
        self.inverse_basis = jnp.asarray(np.linalg.inv(reduced))
        # Scalars are array leaves, not static fields, so that cells differing only
        # in scale or κ (same array shapes) share one compiled function.
        self.kappa = jnp.asarray(kappa)
        self.area = jnp.asarray(area)
        self.xi = jnp.asarray(real_self + 2.0 * float(np.sum(weight_grid)) - 2.0 * kappa / SQRT_PI + 2.0 * background)
        self.self_energy = jnp.asarray(0.5 * real_self - kappa / SQRT_PI)
        self.background = jnp.asarray(background)

    @property
    def n_images(self) -> int:
        """Number of real-space images R (including R = 0)."""
        return int(self.images.shape[0])

    @property
    def n_gvectors(self) -> int:
        """Number of reciprocal vectors G ≠ 0 in the sum, counting ±G once."""
        return int(self.gvectors.shape[0])

    def _image_sum(self, dx: Float[Array, "*shape"], dy: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
        """Σ_R erfc(κ|d+R|)/|d+R| over the stored images (d reduced, d + R ≠ 0)."""

        def term(image):
            r = jnp.sqrt((dx + image[0]) ** 2 + (dy + image[1]) ** 2)
            return erfc(self.kappa * r) / r

        if self.n_images == 1:  # R = 0 only
            return term(self.images[0])
        # A scan over images keeps each step one fused elementwise kernel (faster and
        # quicker to compile on CPU than broadcasting or unrolling).
        total, _ = jax.lax.scan(lambda acc, image: (acc + term(image), None), jnp.zeros_like(dx), self.images)
        return total

    def _to_cartesian(self, ds1: Float[Array, "*shape"], ds2: Float[Array, "*shape"]):
        """Fractional displacements → Cartesian (dx, dy), reduced into [−½, ½]² first."""
        ds1 = ds1 - jnp.round(ds1)
        ds2 = ds2 - jnp.round(ds2)
        b = self.basis
        return ds1 * b[0, 0] + ds2 * b[1, 0], ds1 * b[0, 1] + ds2 * b[1, 1]

    def pair_potential(self, displacements: Float[Array, "... 2"]) -> Float[Array, "..."]:
        """Periodic pair potential ψ(r) (inverse length); diverges as 1/r at r → 0 (mod cell).

        Direct O(N_G) evaluation per displacement; for reference and plots, not the
        energy hot path.
        """
        frac = displacements @ self.inverse_basis
        dx, dy = self._to_cartesian(frac[..., 0], frac[..., 1])
        phases = dx[..., None] * self.gvectors[:, 0] + dy[..., None] * self.gvectors[:, 1]
        recip = 2.0 * jnp.sum(self.gweights * jnp.cos(phases), axis=-1)
        return self._image_sum(dx, dy) + recip + 2.0 * self.background

    def real_space(self, positions: Float[Array, "n 2"]) -> Float[Array, ""]:
        """Σ_{i<j} Σ_R erfc(κ|r_ij+R|)/|r_ij+R| (inverse length).

        Pairs are enumerated as (i, i+k mod N), k = 1..⌊N/2⌋ (weight ½ for k = N/2
        at even N): every unordered pair once, never i = j, and only slices and
        elementwise operations (no gather, whose scatter-add transpose is slow).
        """
        n = positions.shape[0]
        if n < 2:
            return jnp.zeros((), positions.dtype)
        n_shifts = n // 2
        weights = np.ones((n_shifts, 1))
        if n % 2 == 0:
            weights[-1] = 0.5
        binv = self.inverse_basis
        s1 = positions[:, 0] * binv[0, 0] + positions[:, 1] * binv[1, 0]
        s2 = positions[:, 0] * binv[0, 1] + positions[:, 1] * binv[1, 1]
        dx, dy = self._to_cartesian(_cyclic_shifts(s1, n_shifts) - s1, _cyclic_shifts(s2, n_shifts) - s2)
        return jnp.sum(weights * self._image_sum(dx, dy))

    def reciprocal_space(self, positions: Float[Array, "n 2"]) -> Float[Array, ""]:
        """(π/A) Σ_{G≠0} erfc(G/2κ)/G |ρ_G|², ρ_G = Σ_i exp(iG·r_i) (inverse length).

        Includes the i = j terms; they cancel against the G-part of ½Nξ.
        """
        rows, cols = self.weight_grid.shape
        frac = positions @ self.inverse_basis
        frac = frac - jnp.floor(frac)  # exact phases for unwrapped positions
        t1 = (2.0 * np.pi) * frac[:, 0:1] * np.arange(rows)
        t2 = (2.0 * np.pi) * frac[:, 1:2] * np.arange(-(cols // 2), cols // 2 + 1)
        left = jnp.concatenate([jnp.cos(t1), jnp.sin(t1)], axis=-1)  # (N, 2·rows)
        right = jnp.concatenate([jnp.cos(t2), jnp.sin(t2)], axis=-1)  # (N, 2·cols)
        q = left.T @ right
        re = q[:rows, :cols] - q[rows:, cols:]
        im = q[:rows, cols:] + q[rows:, :cols]
        return jnp.sum(self.weight_grid * (re**2 + im**2))

    def constant(self, n: int) -> Float[Array, ""]:
        """Configuration-independent part N·self_energy + N²·background (inverse length)."""
        return n * self.self_energy + n * n * self.background

    def __call__(self, positions: Float[Array, "n 2"]) -> Float[Array, ""]:
        """Total Ewald energy E = ½ Σ_{i≠j} ψ(r_ij) + ½Nξ (inverse length units).

        Args:
            positions: (N, 2) Cartesian positions, same length unit as the cell;
                need not be wrapped into the cell. N ≥ 1.
        """
        if positions.ndim != 2 or positions.shape[-1] != 2:
            raise ValueError(f"positions must have shape (N, 2), got {positions.shape}")
        n = positions.shape[0]
        return self.real_space(positions) + self.reciprocal_space(positions) + self.constant(n)


def ewald_energy(
    positions: Float[Array, "n 2"],
    cell: Float[np.ndarray, "2 2"],
    kappa: float | None = None,
) -> Float[Array, ""]:
    """Ewald energy of unit point charges at ``positions`` on the torus ``cell``.

    Convenience wrapper: builds an :class:`EwaldSum` (the expensive, numpy part)
    on every call. For repeated evaluation build one ``EwaldSum(cell)`` and call
    it. ``cell`` must be concrete (not traced); ``positions`` may be traced.
    Energy in inverse length units of ``cell``.
    """
    return EwaldSum(cell, kappa=kappa, n_electrons=positions.shape[0])(positions)
