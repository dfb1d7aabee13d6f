"""The single-particle basis of exact diagonalisation: the lowest Bloch bands at every supercell momentum.

Orbital a is φ_a(r) = e^{ik_a·r} Σ_G c_a(G) e^{iG·r} / √A, an eigenstate of
−½∇² + Δ(r) (moiré units) among the plane waves |G| ≤ cutoff, with k_a one of
the L1·L2 supercell momenta. Momenta are integers: k = p_1 B_1 + p_2 B_2 with
B_i the supercell reciprocal vectors, and the moiré reciprocal vectors are
G = m_1 b_1 + m_2 b_2 = (L1 m_1) B_1 + (L2 m_2) B_2. Two momenta are the same
crystal momentum when their p agree modulo (L1, L2); :func:`momentum_label`
numbers those classes 0 … L1·L2 − 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft
from jaxtyping import Complex, Float, Int

from qernel_cli.hamiltonian.bands import converged_shells, solve_bands
from qernel_cli.lattice import MOIRE_RECIPROCAL, Supercell


def _integers(x: Float[np.ndarray, "... 2"], what: str) -> Int[np.ndarray, "... 2"]:
    rounded = np.round(x)
    if not np.allclose(x, rounded, atol=1e-8):
        raise ValueError(f"{what} are not lattice vectors")
    return rounded.astype(np.int64)


def momentum_label(p: Int[np.ndarray, "... 2"], supercell: Supercell) -> Int[np.ndarray, "..."]:
    """Crystal-momentum class of integer momenta p: (p_1 mod L1)·L2 + (p_2 mod L2)."""
    p = np.asarray(p)
    return np.mod(p[..., 0], supercell.L1) * supercell.L2 + np.mod(p[..., 1], supercell.L2)


def label_sum(a: Int[np.ndarray, "..."], b: Int[np.ndarray, "..."], supercell: Supercell, sign: int = 1):
    """Label of k_a + sign·k_b."""
    L1, L2 = supercell.L1, supercell.L2
    return np.mod(a // L2 + sign * (b // L2), L1) * L2 + np.mod(a % L2 + sign * (b % L2), L2)


@dataclasses.dataclass(frozen=True, eq=False)
class BandBasis:
    """M Bloch orbitals (moiré units: lengths a_M, energies E_M).

    Attributes:
        supercell: the torus.
        energies: (M,) band energies ε_a (E_M), ascending.
        momentum: (M, 2) integer p of k_a = p_1 B_1 + p_2 B_2 (k folded into the moiré Brillouin zone).
        band: (M,) band index of orbital a at its momentum (0: lowest).
        coefficients: (M, n_G) plane-wave coefficients c_a(G), unit norm.
        G_index: (n_G, 2) integer m of G = m_1 b_1 + m_2 b_2.
    """

    supercell: Supercell
    energies: Float[np.ndarray, " M"]
    momentum: Int[np.ndarray, "M 2"]
    band: Int[np.ndarray, " M"]
    coefficients: Complex[np.ndarray, "M n_G"]
    G_index: Int[np.ndarray, "n_G 2"]

    @property
    def n_orbitals(self) -> int:
        return len(self.energies)

    @property
    def labels(self) -> Int[np.ndarray, " M"]:
        """Crystal-momentum class of every orbital (see :func:`momentum_label`)."""
        return momentum_label(self.momentum, self.supercell)

    def wavevectors(self, p: Int[np.ndarray, "... 2"]) -> Float[np.ndarray, "... 2"]:
        """Cartesian wavevectors (1/a_M) of integer momenta p."""
        return np.asarray(p, dtype=np.float64) @ self.supercell.reciprocal

    def kinetic_matrix(self) -> Complex[np.ndarray, "M M"]:
        """⟨a|−½∇²|b⟩ (E_M); zero between different momenta."""
        k = self.wavevectors(self.momentum)  # (M, 2)
        G = self.G_index @ MOIRE_RECIPROCAL
        out = np.zeros((self.n_orbitals,) * 2, np.complex128)
        for p in np.unique(self.momentum, axis=0):
            members = np.flatnonzero(np.all(self.momentum == p, axis=1))
            kinetic = 0.5 * np.sum((k[members[0]] + G) ** 2, axis=-1)
            c = self.coefficients[members]
            out[np.ix_(members, members)] = (c.conj() * kinetic) @ c.T
        return out

    def grid_size(self, margin: int) -> int:
        """A periodic grid of moiré integer vectors on which products of two orbitals shifted by ``margin`` do not wrap."""
        extent = int(np.max(np.abs(self.G_index)))
        return scipy.fft.next_fast_len(2 * (2 * extent + margin) + 1)

    def coefficient_grids(self, size: int) -> Complex[np.ndarray, "M size size"]:
        """c_a(G) placed at (m_1 mod size, m_2 mod size)."""
        grids = np.zeros((self.n_orbitals, size, size), np.complex128)
        m = np.mod(self.G_index, size)
        grids[:, m[:, 0], m[:, 1]] = self.coefficients
        return grids


def band_basis(supercell: Supercell, v: float, phi_deg: float, n_bands: int, n_shells: int | None = None) -> BandBasis:
    """The lowest ``n_bands`` bands at each of the L1·L2 supercell momenta (M = n_bands·L1·L2 orbitals).

    Args:
        supercell: the torus.
        v: moiré depth V/E_M.
        phi_deg: moiré phase φ (degrees).
        n_bands: bands per momentum.
        n_shells: plane-wave cutoff |G| ≤ n_shells·|b|; default: converged for
            these bands (:func:`qernel_cli.hamiltonian.bands.converged_shells`).
    """
    if n_shells is None:
        n_shells = converged_shells(v, phi_deg, max(n_bands, 4))
    bands = solve_bands(supercell, v, phi_deg, n_bands, n_shells)
    n_k = len(bands.k)
    p = _integers(bands.k @ np.linalg.inv(supercell.reciprocal), "supercell momenta")
    energies = bands.energies.ravel()
    k_index, band = np.divmod(np.arange(n_k * n_bands), n_bands)
    order = np.lexsort((band, k_index, np.round(energies, 12)))
    return BandBasis(
        supercell=supercell,
        energies=energies[order],
        momentum=p[k_index[order]],
        band=band[order],
        coefficients=bands.coefficients.reshape(n_k * n_bands, -1)[order],
        G_index=_integers(bands.G @ np.linalg.inv(MOIRE_RECIPROCAL), "plane waves"),
    )


def form_factors(
    grids_hat: Complex[np.ndarray, "M n n"], a: Int[np.ndarray, " P"], c: Int[np.ndarray, " P"]
) -> Complex[np.ndarray, "P n n"]:
    """F_ac(g) = Σ_G conj(c_a(G + g)) c_c(G) at every moiré integer g of the periodic grid.

    ``grids_hat`` are the 2D FFTs of :meth:`BandBasis.coefficient_grids`.
    Then ⟨a|e^{iQ·r}|c⟩ = F_ac(g) for Q = k_a − k_c + g (and 0 for any other Q).
    """
    convolution = scipy.fft.ifft2(np.conj(grids_hat[a]) * grids_hat[c], axes=(-2, -1))
    # convolution[h] = Σ_G conj(c_a(G − h)) c_c(G) = F_ac(−h)
    n = grids_hat.shape[-1]
    flip = np.mod(-np.arange(n), n)
    return convolution[:, flip][:, :, flip]
