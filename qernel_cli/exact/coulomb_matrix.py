"""Two-body Coulomb matrix elements in a :class:`~qernel_cli.exact.band_basis.BandBasis`, with the Ewald conventions.

The Ewald energy of :mod:`qernel_cli.hamiltonian.ewald` is
E = ½ Σ_{i≠j} ψ(r_i − r_j) + ½ N ξ, and ψ, the potential of a unit charge
with its neutralising background, has zero mean over the cell, so that
ψ(r) = (2π/A) Σ_{Q≠0} e^{iQ·r}/|Q| over the supercell reciprocal lattice.
Hence, in moiré units (energies E_M, U = a_M/a_B*),

    H_ee = ½ Σ_{abcd} V_abcd c†_a c†_b c_d c_c + ½ N U ξ,
    V_abcd = (2πU/A) Σ_{Q≠0} ⟨a|e^{iQ·r}|c⟩ ⟨b|e^{−iQ·r}|d⟩ / |Q|,

non-zero only where k_a + k_b and k_c + k_d are the same crystal momentum.
The sum over Q is complete (the orbitals hold finitely many plane waves), so
V is exact for these orbitals and a Fock-space energy built from it is a
variational bound on the full Hamiltonian's ground state.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Complex, Int

from qernel_cli.exact.band_basis import BandBasis, form_factors, label_sum
from qernel_cli.hamiltonian.ewald import EwaldSum


@dataclasses.dataclass(frozen=True, eq=False)
class CoulombMatrix:
    """V_abcd (E_M), stored by momentum transfer τ = label(k_a − k_c).

    Attributes:
        blocks: (L1·L2, R, R) with blocks[τ, i, j] = V_abcd for the i-th pair
            (a, c) of transfer τ and the j-th pair (b, d) of transfer −τ
            (R = M²/(L1·L2) pairs per transfer; pairs in lexicographic order).
        transfer: (M, M) τ of the pair (a, c).
        index: (M, M) position of the pair (a, c) among the pairs of its transfer.
        strength: U.
        madelung: ξ (1/a_M) of the supercell; the constant ½ N U ξ is part of H_ee.
    """

    blocks: Complex[np.ndarray, "K R R"]
    transfer: Int[np.ndarray, "M M"]
    index: Int[np.ndarray, "M M"]
    strength: float
    madelung: float

    def __call__(self, a, b, c, d) -> Complex[np.ndarray, "..."]:
        """V_abcd for broadcastable integer arrays; momentum must be conserved (not checked)."""
        return self.blocks[self.transfer[a, c], self.index[a, c], self.index[b, d]]

    def constant(self, n_electrons: int) -> float:
        """½ N U ξ (E_M): the Madelung self-energy of N charges with their background."""
        return 0.5 * n_electrons * self.strength * self.madelung


def _pairs_by_transfer(basis: BandBasis) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    labels = basis.labels
    n_k = basis.supercell.n_cells
    transfer = label_sum(labels[:, None], labels[None, :], basis.supercell, sign=-1)
    index = np.zeros_like(transfer)
    pairs = []
    for tau in range(n_k):
        a, c = np.nonzero(transfer == tau)  # lexicographic
        index[a, c] = np.arange(len(a))
        pairs.append((a, c))
    sizes = {len(a) for a, _ in pairs}
    if len(sizes) != 1:
        raise ValueError("every momentum must hold the same number of bands")
    return transfer, index, pairs


def coulomb_matrix(basis: BandBasis, strength: float) -> CoulombMatrix:
    """All V_abcd of ``basis`` for Coulomb strength U = ``strength`` (0: all zero)."""
    supercell = basis.supercell
    L = np.array([supercell.L1, supercell.L2])
    transfer, index, pairs = _pairs_by_transfer(basis)
    n_k, n_pairs = len(pairs), len(pairs[0][0])
    madelung = float(EwaldSum(supercell.cell, n_electrons=2).xi)
    blocks = np.zeros((n_k, n_pairs, n_pairs), np.complex128)
    if strength == 0:
        return CoulombMatrix(blocks, transfer, index, 0.0, madelung)

    p = basis.momentum
    # p_a − p_c = ρ_τ + L s_ac with ρ_τ in [0, L): the shifts s decide the grid's margin.
    rho = [np.mod(p[a[0]] - p[c[0]], L) for a, c in pairs]
    shifts = [(p[a] - p[c] - r) // L for (a, c), r in zip(pairs, rho)]
    margin = 2 + max(int(np.max(np.abs(s))) for s in shifts)
    n = basis.grid_size(2 * margin)
    grids_hat = np.fft.fft2(basis.coefficient_grids(n), axes=(-2, -1))
    h = np.fft.fftfreq(n, 1.0 / n).astype(np.int64)  # the integer each grid index stands for
    h1, h2 = np.meshgrid(h, h, indexing="ij")
    prefactor = 2.0 * np.pi * strength / supercell.area

    def shifted(values, shift):
        """values[i, g] → values[i, g − shift_i] (periodic grid)."""
        i1 = np.mod(np.arange(n)[None, :] - shift[:, :1], n)
        i2 = np.mod(np.arange(n)[None, :] - shift[:, 1:], n)
        return values[np.arange(len(values))[:, None, None], i1[:, :, None], i2[:, None, :]]

    for tau, (a, c) in enumerate(pairs):
        minus = label_sum(np.zeros((), np.int64), np.asarray(tau), supercell, sign=-1)
        b, d = pairs[int(minus)]
        t = (rho[tau] + rho[int(minus)]) // L  # exact: ρ_τ + ρ_−τ ≡ 0 mod L
        # Q = ρ_τ + L h for every row once rows are shifted by s_ac: ⟨a|e^{iQr}|c⟩ = F_ac(h − s_ac).
        q = basis.wavevectors(np.stack([rho[tau][0] + L[0] * h1, rho[tau][1] + L[1] * h2], axis=-1))
        q_norm = np.linalg.norm(q, axis=-1)
        inverse = np.divide(1.0, q_norm, out=np.zeros_like(q_norm), where=q_norm > 1e-12)
        rows = shifted(form_factors(grids_hat, a, c), shifts[tau]) * inverse
        # ⟨b|e^{−iQr}|d⟩ = F_bd(−t − s_bd − h): flip, then shift by −(t + s_bd).
        flip = np.mod(-np.arange(n), n)
        f_bd = form_factors(grids_hat, b, d)[:, flip][:, :, flip]
        columns = shifted(f_bd, -(t + shifts[int(minus)]))
        blocks[tau] = prefactor * (rows.reshape(n_pairs, -1) @ columns.reshape(n_pairs, -1).T)
    return CoulombMatrix(blocks, transfer, index, float(strength), madelung)
