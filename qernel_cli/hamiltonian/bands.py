"""Non-interacting band structure of the moiré potential by plane-wave diagonalisation.

Moiré units throughout: lengths a_M, momenta 1/a_M, energies E_M = ħ²/(m* a_M²),
kinetic operator -½∇², depth v = V/E_M. The potential

    Δ(r) = -2v Σ_{j=1..3} cos(g_j·r + φ) = Σ_q Δ_q e^{iq·r},
    Δ_{+g_j} = -v e^{iφ},   Δ_{-g_j} = -v e^{-iφ},

couples plane waves e^{i(k+G)·r} whose G differ by ±g_j, so at Bloch momentum k

    H_{GG'}(k) = ½|k+G|² δ_{GG'} + Δ_{G-G'}

on a finite set of moiré reciprocal vectors G. On an L1 × L2 supercell the
allowed momenta are ``Supercell.kgrid()``; the Bloch orbitals

    φ_{k,n}(r) = e^{ik·r} Σ_G c_{k,n}(G) e^{iG·r} / √A     (A = supercell area)

are periodic on the supercell and orthonormal over it.

Diagonalisation is numpy/scipy precomputation (float64). Evaluating orbitals
and the Slater determinant is pure ``jax.numpy`` in the positions, so it can be
jitted, vmapped and pushed through folx's forward Laplacian.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg
from jaxtyping import Array, Complex, Float

from qernel_cli import linalg
from qernel_cli.lattice import MOIRE_RECIPROCAL, Supercell, points_in_disc

__all__ = [
    "RESIDUAL_TOL",
    "BandStructure",
    "Orbitals",
    "bloch_hamiltonian",
    "converged_shells",
    "evaluate_orbitals",
    "lowest_orbitals",
    "plane_wave_basis",
    "slater_log_psi",
    "slater_log_psi_spinful",
    "solve_bands",
]

RESIDUAL_TOL = 1e-11
"""Target residual ‖(H - E)c‖ (E_M, per unit depth beyond v = 1) of the automatic cutoff."""

# Moiré harmonics g_1 = b_1, g_2 = b_2, g_3 = -b_1 - b_2 in integer (m1, m2) coordinates.
_HARMONICS = np.array([[1, 0], [0, 1], [-1, -1]])

# Two single-particle energies closer than this (relative to the bandwidth scale)
# are treated as degenerate when the occupied set is chosen.
_DEGENERACY_TOL = 1e-9


def plane_wave_basis(n_shells: int) -> Float[np.ndarray, "n_G 2"]:
    """Moiré reciprocal vectors G = m1 b_1 + m2 b_2 with |G| ≤ n_shells·|b| (circular cutoff).

    Ordered by increasing |G|, then by angle in [-π, π), so G[0] = 0. ``n_shells``
    is the cutoff radius in units of the shortest reciprocal vector |b| = 4π/√3;
    n_shells = 0 gives only G = 0. The basis for n_shells is a prefix of the
    basis for n_shells + 1.
    """
    if not isinstance(n_shells, (int, np.integer)) or isinstance(n_shells, bool) or n_shells < 0:
        raise ValueError(f"n_shells must be a non-negative integer, got {n_shells!r}")
    b2 = float(MOIRE_RECIPROCAL[0] @ MOIRE_RECIPROCAL[0])
    G, _ = points_in_disc(MOIRE_RECIPROCAL, n_shells * np.sqrt(b2))
    norm2 = np.round(np.sum(G**2, axis=-1) / b2)  # |G|²/|b|² is an integer m1² + m1 m2 + m2²
    angle = np.round(np.arctan2(G[:, 1], G[:, 0]), 10)
    return G[np.lexsort((angle, norm2))]


def _integer_coordinates(G: Float[np.ndarray, "n_G 2"]) -> np.ndarray:
    """(m1, m2) with G = m1 b_1 + m2 b_2; raises if G is not on the moiré reciprocal lattice."""
    G = np.asarray(G, dtype=np.float64)
    frac = G @ np.linalg.inv(MOIRE_RECIPROCAL)
    m = np.round(frac)
    if not np.allclose(frac, m, atol=1e-8):
        raise ValueError("G must contain moiré reciprocal lattice vectors (rows of integers times b_1, b_2)")
    return m.astype(np.int64)


def _potential_matrix(G: Float[np.ndarray, "n_G 2"], v: float, phi_deg: float) -> Complex[np.ndarray, "n_G n_G"]:
    """Δ_{G-G'} on the basis G (Hermitian, k-independent)."""
    m = _integer_coordinates(G)
    diff = m[:, None, :] - m[None, :, :]
    phase = np.exp(1j * np.deg2rad(phi_deg))
    out = np.zeros((len(m), len(m)), dtype=np.complex128)
    for g in _HARMONICS:
        out[np.all(diff == g, axis=-1)] = -v * phase
        out[np.all(diff == -g, axis=-1)] = -v * np.conj(phase)
    return out


def bloch_hamiltonian(
    k: Float[np.ndarray, "2"], v: float, phi_deg: float, G: Float[np.ndarray, "n_G 2"]
) -> Complex[np.ndarray, "n_G n_G"]:
    """H_{GG'}(k) = ½|k+G|² δ_{GG'} + Δ_{G-G'} on the plane waves e^{i(k+G)·r} (moiré units)."""
    k = np.asarray(k, dtype=np.float64).reshape(2)
    G = np.asarray(G, dtype=np.float64)
    h = _potential_matrix(G, float(v), float(phi_deg))
    h[np.diag_indices(len(G))] += 0.5 * np.sum((k + G) ** 2, axis=-1)
    return h


def converged_shells(
    v: float, phi_deg: float, n_bands: int = 4, tol: float = RESIDUAL_TOL, max_shells: int = 40
) -> int:
    """Smallest cutoff (in |b|) at which the lowest ``n_bands`` Bloch states are converged.

    Criterion, at the Γ, M and K points: the truncated eigenvectors c, embedded in
    the next larger basis, have residual ‖(H - E)c‖ ≤ tol · max(1, |v|) (this is
    what a Slater determinant's local energy deviates by, up to 1/ψ factors), and
    the cutoff kinetic energy lies well above the requested bands. Deeper
    potentials need more shells (7 at v = 0.5, 8 at v = 4.44, 9 at v = 10, 11 at
    v = 30, for φ = 45° and four bands). Cached.
    """
    return _converged_shells(float(v), float(phi_deg), int(n_bands), float(tol), int(max_shells))


@functools.lru_cache(maxsize=256)
def _converged_shells(v: float, phi_deg: float, n_bands: int, tol: float, max_shells: int) -> int:
    b = MOIRE_RECIPROCAL
    k_points = np.stack([np.zeros(2), b[0] / 2.0, (2.0 * b[0] + b[1]) / 3.0])
    b_norm = float(np.linalg.norm(b[0]))
    k_max = b_norm / np.sqrt(3.0)
    threshold = tol * max(1.0, abs(float(v)))
    for n in range(2, max_shells + 1):
        inner = len(plane_wave_basis(n))
        if inner < 2 * n_bands:  # too few plane waves to hold the bands asked for
            continue
        G = plane_wave_basis(n + 1)
        residual, top = 0.0, -np.inf
        for k in k_points:
            h = bloch_hamiltonian(k, v, phi_deg, G)
            e, c = scipy.linalg.eigh(h[:inner, :inner], subset_by_index=(0, n_bands - 1), check_finite=False)
            residual = max(residual, float(np.max(np.linalg.norm(h[inner:, :inner] @ c, axis=0))))
            top = max(top, float(e[-1]))
        cutoff_kinetic = 0.5 * (n * b_norm - k_max) ** 2
        if residual <= threshold and cutoff_kinetic > 2.0 * (top + 6.0 * abs(float(v))):
            return n
    raise ValueError(f"no plane-wave cutoff up to {max_shells} shells converges v={v!r}, n_bands={n_bands!r}")


@dataclasses.dataclass(frozen=True, eq=False)
class BandStructure:
    """Bands at the supercell momenta.

    Attributes:
        k: (n_k, 2) Bloch momenta (1/a_M).
        energies: (n_k, n_bands) band energies, ascending per k (E_M).
        coefficients: (n_k, n_bands, n_G) plane-wave coefficients c_{k,n}(G), unit norm.
        G: (n_G, 2) the plane-wave basis (1/a_M).
    """

    k: Float[np.ndarray, "n_k 2"]
    energies: Float[np.ndarray, "n_k n_bands"]
    coefficients: Complex[np.ndarray, "n_k n_bands n_G"]
    G: Float[np.ndarray, "n_G 2"]


def _diagonalise(k, v, phi_deg, G, n_bands):
    potential = _potential_matrix(G, float(v), float(phi_deg))
    energies, coefficients = [], []
    for kk in np.asarray(k, dtype=np.float64):
        h = potential.copy()
        h[np.diag_indices(len(G))] += 0.5 * np.sum((kk + G) ** 2, axis=-1)
        e, c = scipy.linalg.eigh(h, subset_by_index=(0, n_bands - 1), check_finite=False)
        energies.append(e)
        coefficients.append(c.T)
    return np.array(energies), np.array(coefficients)


def solve_bands(
    supercell: Supercell, v: float, phi_deg: float, n_bands: int, n_shells: int | None = None
) -> BandStructure:
    """Lowest ``n_bands`` bands at every momentum of ``supercell.kgrid()``.

    ``n_shells``: plane-wave cutoff |G| ≤ n_shells·|b|; None picks
    :func:`converged_shells` for this depth (pass it explicitly when several
    depths must share one basis G).
    """
    if n_shells is None:
        n_shells = converged_shells(v, phi_deg, n_bands)
    G = plane_wave_basis(n_shells)
    if not 1 <= n_bands <= len(G):
        raise ValueError(f"n_bands must be between 1 and the basis size {len(G)}, got {n_bands!r}")
    k = supercell.kgrid()
    energies, coefficients = _diagonalise(k, v, phi_deg, G, n_bands)
    return BandStructure(k=k, energies=energies, coefficients=coefficients, G=G)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True, eq=False)
class Orbitals:
    """A set of occupied Bloch orbitals φ_j(r) = e^{ik_j·r} Σ_G c_j(G) e^{iG·r} / √area.

    A JAX pytree (``k``, ``G``, ``coefficients``, ``energies`` are leaves, ``area``
    is static), so it can be an argument of jitted/vmapped functions.

    Attributes:
        k: (n_orb, 2) Bloch momentum of each orbital (1/a_M).
        G: (n_G, 2) plane-wave basis (1/a_M).
        coefficients: (n_orb, n_G) complex, unit norm per orbital.
        energies: (n_orb,) single-particle energies (E_M), ascending.
        area: supercell area (a_M²).
    """

    k: Float[np.ndarray, "n_orb 2"]
    G: Float[np.ndarray, "n_G 2"]
    coefficients: Complex[np.ndarray, "n_orb n_G"]
    energies: Float[np.ndarray, " n_orb"]
    area: float = dataclasses.field(metadata=dict(static=True))

    @property
    def n_orbitals(self) -> int:
        return self.coefficients.shape[0]


def lowest_orbitals(
    supercell: Supercell, n_electrons: int, v: float, phi_deg: float, n_shells: int | None = None
) -> Orbitals:
    """The ``n_electrons`` lowest single-particle states over the supercell k-grid.

    States whose energies agree to ~1e-9 (relative) count as degenerate; inside a
    degenerate shell the order is by k-grid index, then band index, so an open
    shell is filled deterministically (every choice has the same total energy).
    ``n_shells`` as in :func:`solve_bands` (None: automatic for this depth).
    """
    if not isinstance(n_electrons, (int, np.integer)) or n_electrons < 0:
        raise ValueError(f"n_electrons must be a non-negative integer, got {n_electrons!r}")
    n_k = supercell.n_cells
    if n_shells is None:
        n_shells = converged_shells(v, phi_deg, -(-max(n_electrons, 1) // n_k) + 2)
    G = plane_wave_basis(n_shells)
    if n_electrons > len(G) * supercell.n_cells:
        raise ValueError(f"{n_electrons} electrons exceed the {len(G) * supercell.n_cells} states of the basis")
    if n_electrons == 0:
        return Orbitals(
            k=np.zeros((0, 2)), G=G, coefficients=np.zeros((0, len(G)), np.complex128),
            energies=np.zeros((0,)), area=supercell.area,
        )
    # Diagonalise a few bands per momentum, and more until every momentum's highest
    # computed band lies above the N-th lowest level (so nothing lower is missing).
    n_bands = min(len(G), -(-n_electrons // n_k) + 2)
    while True:
        bands = solve_bands(supercell, v, phi_deg, n_bands, n_shells)
        levels = np.sort(bands.energies.ravel())
        tol = _DEGENERACY_TOL * max(1.0, abs(levels[0]), abs(levels[n_electrons - 1]))
        if n_bands == len(G) or np.min(bands.energies[:, -1]) > levels[n_electrons - 1] + 2 * tol:
            break
        n_bands = min(len(G), 2 * n_bands)
    n_k, n_bands = bands.energies.shape
    energies = bands.energies.ravel()
    k_index, band_index = np.divmod(np.arange(n_k * n_bands), n_bands)
    # Group (nearly) degenerate levels into shells, then order shell, k, band.
    order = np.argsort(energies, kind="stable")
    gaps = np.diff(energies[order]) > tol
    shell = np.empty_like(order)
    shell[order] = np.concatenate([[0], np.cumsum(gaps)])
    chosen = np.lexsort((band_index, k_index, shell))[:n_electrons]
    return Orbitals(
        k=bands.k[k_index[chosen]],
        G=bands.G,
        coefficients=bands.coefficients[k_index[chosen], band_index[chosen]],
        energies=energies[chosen],
        area=supercell.area,
    )


def evaluate_orbitals(orbitals: Orbitals, positions: Float[Array, "N 2"]) -> Complex[Array, "N n_orb"]:
    """φ_j(r_i) for every electron i and orbital j (pure jnp in ``positions``)."""
    G = jnp.asarray(orbitals.G)
    k = jnp.asarray(orbitals.k)
    coefficients = jnp.asarray(orbitals.coefficients)
    # Real phases, then cos/sin: positions only ever enter real-valued primitives.
    phase_G = positions @ G.T  # (N, n_G)
    phase_k = positions @ k.T  # (N, n_orb)
    plane_waves = jax.lax.complex(jnp.cos(phase_G), jnp.sin(phase_G))
    bloch = jax.lax.complex(jnp.cos(phase_k), jnp.sin(phase_k))
    periodic = plane_waves @ coefficients.T  # (N, n_orb)
    return bloch * periodic / np.sqrt(orbitals.area)


def _log_det(matrix: Complex[Array, "n n"]) -> Complex[Array, ""]:
    """log det as log|det| + i arg det (``qernel_cli.linalg``: safe on several CPU devices)."""
    log_abs, phase = linalg.log_det(matrix)
    return jax.lax.complex(log_abs, phase)


def slater_log_psi(orbitals: Orbitals) -> Callable[[Float[Array, "N 2"]], Complex[Array, ""]]:
    """Spin-polarised Slater determinant: positions (N, 2) → log|det φ_j(r_i)| + i arg det.

    N must equal the number of orbitals.
    """

    def log_psi(positions: Float[Array, "N 2"]) -> Complex[Array, ""]:
        if positions.shape[0] != orbitals.n_orbitals:
            raise ValueError(f"{positions.shape[0]} electrons for {orbitals.n_orbitals} orbitals")
        return _log_det(evaluate_orbitals(orbitals, positions))

    return log_psi


def slater_log_psi_spinful(
    orbitals_up: Orbitals, orbitals_down: Orbitals
) -> Callable[[Float[Array, "N 2"]], Complex[Array, ""]]:
    """det_up · det_down: positions (n_up + n_down, 2), spin-up electrons first."""
    n_up, n_down = orbitals_up.n_orbitals, orbitals_down.n_orbitals

    def log_psi(positions: Float[Array, "N 2"]) -> Complex[Array, ""]:
        if positions.shape[0] != n_up + n_down:
            raise ValueError(f"{positions.shape[0]} electrons for {n_up} + {n_down} orbitals")
        up = _log_det(evaluate_orbitals(orbitals_up, positions[:n_up]))
        down = _log_det(evaluate_orbitals(orbitals_down, positions[n_up:]))
        return up + down

    return log_psi


def follow_orbitals(reference: Orbitals, supercell: Supercell, v: float, phi_deg: float, n_bands: int | None = None) -> Orbitals:
    """The Bloch states at depth ``v`` that continue each ``reference`` state.

    For every reference orbital (momentum k_j, coefficients on the same basis G)
    this takes the band at the same k_j with the largest overlap and fixes its
    arbitrary phase so that the overlap with the reference is real and positive.
    The result varies smoothly with v (away from band crossings), so orbitals at
    several depths can be interpolated.
    """
    n_bands = n_bands or min(len(reference.G), 4)
    bands = solve_bands(supercell, v, phi_deg, n_bands, None if len(reference.G) == 0 else _shells_of(reference.G))
    if bands.coefficients.shape[-1] != len(reference.G):
        raise ValueError("reference orbitals use a plane-wave basis that is not a full shell basis")
    coefficients, energies = [], []
    for k, c_ref in zip(reference.k, reference.coefficients):
        i = int(np.argmin(np.sum((bands.k - k) ** 2, axis=-1)))
        if not np.allclose(bands.k[i], k, atol=1e-9):
            raise ValueError("reference momentum is not on the supercell k-grid")
        overlaps = bands.coefficients[i].conj() @ c_ref  # (n_bands,)
        n = int(np.argmax(np.abs(overlaps)))
        phase = overlaps[n] / abs(overlaps[n])
        coefficients.append(bands.coefficients[i, n] * phase)
        energies.append(bands.energies[i, n])
    return Orbitals(
        k=np.array(reference.k), G=reference.G, coefficients=np.array(coefficients).reshape(reference.coefficients.shape),
        energies=np.array(energies), area=reference.area,
    )


def _shells_of(G: Float[np.ndarray, "n_G 2"]) -> int:
    """The n_shells whose :func:`plane_wave_basis` is exactly ``G``."""
    n = int(round(np.max(np.linalg.norm(G, axis=-1)) / np.linalg.norm(MOIRE_RECIPROCAL[0])))
    if len(plane_wave_basis(n)) != len(G) or not np.allclose(plane_wave_basis(n), G):
        raise ValueError("G is not a plane_wave_basis")
    return n
