"""Ground states of the few-electron moiré Hamiltonian in a band basis: per momentum sector, with energy parts.

H = Σ_a ε_a c†_a c_a + ½ Σ V_abcd c†_a c†_b c_d c_c + ½ N U ξ (moiré units, E_M),
the band energies ε_a holding the kinetic and moiré-potential energy
(:mod:`.band_basis`), V the Ewald Coulomb elements (:mod:`.coulomb_matrix`).
The lowest eigenvalue of each sector comes from Lanczos (ARPACK, through
scipy) or, for small sectors, a dense eigensolver.
"""

from __future__ import annotations

import dataclasses
import numpy as np
import scipy.linalg
import scipy.sparse.linalg
from jaxtyping import Complex, Float

from qernel_cli.exact.band_basis import BandBasis, band_basis
from qernel_cli.exact.coulomb_matrix import CoulombMatrix, coulomb_matrix
from qernel_cli.exact.fock_space import (
    KBodyMap,
    Sector,
    SpinOrbitals,
    TupleClasses,
    k_body_map,
    sectors,
    tuple_classes,
)
from qernel_cli.lattice import Supercell

DENSE_LIMIT = 400
"""Sectors up to this dimension are diagonalised densely."""

LANCZOS_TOL = 1e-12
"""Relative accuracy asked of ARPACK for the lowest eigenvalue."""


def pair_matrices(space: SpinOrbitals, pairs: TupleClasses, coulomb: CoulombMatrix) -> list[Complex[np.ndarray, "n n"]]:
    """W_PQ = V_abcd δ_{σ_a σ_c} δ_{σ_b σ_d} − V_bacd δ_{σ_b σ_c} δ_{σ_a σ_d} for ascending pairs P = (a, b), Q = (c, d) of each class."""
    out = []
    for members in pairs.members:
        a, b = (space.orbital(members[:, j]) for j in (0, 1))
        sa, sb = (space.spin(members[:, j]) for j in (0, 1))
        P, Q = np.s_[:, None], np.s_[None, :]
        direct = coulomb(a[P], b[P], a[Q], b[Q]) * ((sa[P] == sa[Q]) & (sb[P] == sb[Q]))
        exchange = coulomb(b[P], a[P], a[Q], b[Q]) * ((sb[P] == sa[Q]) & (sa[P] == sb[Q]))
        out.append(direct - exchange)
    return out


def one_body_matrices(space: SpinOrbitals, singles: TupleClasses, matrix: Complex[np.ndarray, "M M"]) -> list:
    """O restricted to each class of single spin-orbitals (spin-independent one-body operator)."""
    return [matrix[np.ix_(space.orbital(m[:, 0]), space.orbital(m[:, 0]))] for m in singles.members]


@dataclasses.dataclass(frozen=True, eq=False)
class SectorHamiltonian:
    """H on one sector: a diagonal (band energies + Madelung constant) plus the pair operator."""

    sector: Sector
    diagonal: Float[np.ndarray, " n"]
    pairs: KBodyMap | None  # None for one electron
    pair_matrices: list

    def __call__(self, x: Complex[np.ndarray, "n ..."]) -> Complex[np.ndarray, "n ..."]:
        d = self.diagonal.reshape((-1,) + (1,) * (x.ndim - 1))
        return d * x + (0.0 if self.pairs is None else self.pairs.apply(self.pair_matrices, x))

    def dense(self) -> Complex[np.ndarray, "n n"]:
        return self(np.eye(self.sector.dimension, dtype=np.complex128))


def lowest_state(h: SectorHamiltonian, seed: int = 0) -> tuple[float, Complex[np.ndarray, " n"]]:
    """Lowest eigenvalue (E_M) and its normalised eigenvector."""
    n = h.sector.dimension
    if n <= DENSE_LIMIT:
        values, vectors = scipy.linalg.eigh(h.dense(), subset_by_index=(0, 0))
        return float(values[0]), vectors[:, 0]
    operator = scipy.sparse.linalg.LinearOperator((n, n), matvec=h, dtype=np.complex128)
    rng = np.random.default_rng(seed)
    start = rng.normal(size=n) + 1j * rng.normal(size=n)
    values, vectors = scipy.sparse.linalg.eigsh(operator, k=1, which="SA", v0=start, tol=LANCZOS_TOL)
    return float(values[0]), vectors[:, 0] / np.linalg.norm(vectors[:, 0])


@dataclasses.dataclass(frozen=True)
class SectorResult:
    """The lowest state of one sector (energies in E_M)."""

    momentum: int
    dimension: int
    energy: float
    kinetic: float
    potential: float
    interaction: float


@dataclasses.dataclass(frozen=True)
class ExactResult:
    """Every momentum sector's lowest state in one band basis (energies in E_M)."""

    n_bands: int
    n_orbitals: int
    sectors: tuple[SectorResult, ...]

    @property
    def ground(self) -> SectorResult:
        """The lowest sector (the first of equal ones)."""
        return min(self.sectors, key=lambda r: r.energy)


@dataclasses.dataclass(frozen=True)
class FewElectrons:
    """n_up + n_down electrons on ``supercell`` at depth v = V/E_M, phase φ (degrees) and Coulomb strength U (moiré units)."""

    supercell: Supercell
    v: float
    phi_deg: float
    strength: float
    n_up: int
    n_down: int = 0

    def __post_init__(self):
        if self.n_up < 0 or self.n_down < 0 or self.n_up + self.n_down < 1:
            raise ValueError(f"need at least one electron, got n_up={self.n_up}, n_down={self.n_down}")


class ExactProblem:
    """A :class:`FewElectrons` system in ``n_bands`` bands per momentum: its basis, Coulomb matrix and sector Hamiltonians."""

    def __init__(self, system: FewElectrons, n_bands: int, n_shells: int | None = None):
        supercell, n_up, n_down = system.supercell, system.n_up, system.n_down
        if max(n_up, n_down) > n_bands * supercell.n_cells:
            raise ValueError(f"{max(n_up, n_down)} electrons of one spin do not fit in {n_bands * supercell.n_cells} orbitals")
        self.n_up, self.n_down, self.n_bands = n_up, n_down, n_bands
        self.basis: BandBasis = band_basis(supercell, system.v, system.phi_deg, n_bands, n_shells)
        self.coulomb: CoulombMatrix = coulomb_matrix(self.basis, system.strength)
        self.space = SpinOrbitals(self.basis.labels, 2 if n_down else 1, supercell)
        self._pairs = tuple_classes(self.space, 2) if n_up + n_down >= 2 else None
        self._pair_matrices = pair_matrices(self.space, self._pairs, self.coulomb) if self._pairs else []
        self._singles = tuple_classes(self.space, 1)
        self._kinetic = one_body_matrices(self.space, self._singles, self.basis.kinetic_matrix())

    @property
    def n_electrons(self) -> int:
        return self.n_up + self.n_down

    def sectors(self) -> list[Sector]:
        return sectors(self.space, self.n_up, self.n_down)

    def _one_body_diagonal(self, sector: Sector) -> Float[np.ndarray, " n"]:
        """Band energies of each basis state plus the Madelung constant (E_M)."""
        energies = self.basis.energies[self.space.orbital(sector.states)].sum(axis=1)
        return energies + self.coulomb.constant(self.n_electrons)

    def hamiltonian(self, sector: Sector) -> SectorHamiltonian:
        pairs = k_body_map(sector, self._pairs) if self._pairs else None
        return SectorHamiltonian(sector, self._one_body_diagonal(sector), pairs, self._pair_matrices)

    def determinant_energies(self, sector: Sector) -> Float[np.ndarray, " n"]:
        """⟨s|H|s⟩ (E_M) for every basis state |s⟩ of the sector: each a single Slater determinant of band orbitals.

        The one-body diagonal and the Madelung constant, plus for the pairs
        i < j of occupied spin-orbitals the direct minus exchange element
        V_{s_i s_j s_i s_j} − δ_{σ_i σ_j} V_{s_j s_i s_i s_j} (no pair operator is built).
        """
        states, space = sector.states, self.space
        out = self._one_body_diagonal(sector).astype(np.float64)
        for i in range(states.shape[1]):
            for j in range(i + 1, states.shape[1]):
                a, b = space.orbital(states[:, i]), space.orbital(states[:, j])
                same = space.spin(states[:, i]) == space.spin(states[:, j])
                out += np.real(self.coulomb(a, b, a, b) - same * self.coulomb(b, a, a, b))
        return out

    def best_determinant(self) -> float:
        """The lowest ⟨Φ|H|Φ⟩ (E_M) over the single Slater determinants Φ of this basis's band orbitals.

        The reference of the correlation energy E_c = E_det − E_exact: the
        best one could do with one determinant of band orbitals (no orbital
        rotation, unlike Hartree–Fock).
        """
        return min(float(self.determinant_energies(s).min()) for s in self.sectors() if s.dimension)

    def solve_sector(self, sector: Sector, seed: int = 0) -> SectorResult:
        h = self.hamiltonian(sector)
        energy, x = lowest_state(h, seed)
        weights = np.abs(x) ** 2
        one_body = float(weights @ (h.diagonal - self.coulomb.constant(self.n_electrons)))
        kinetic = float(np.real(np.vdot(x, k_body_map(sector, self._singles).apply(self._kinetic, x))))
        return SectorResult(
            momentum=sector.momentum,
            dimension=sector.dimension,
            energy=energy,
            kinetic=kinetic,
            potential=one_body - kinetic,
            interaction=energy - one_body,
        )

    def solve(self, momenta: list[int] | None = None, seed: int = 0) -> ExactResult:
        """Lowest state of every sector (or of the sectors with these momentum labels)."""
        chosen = [s for s in self.sectors() if s.dimension and (momenta is None or s.momentum in momenta)]
        return ExactResult(self.n_bands, self.basis.n_orbitals, tuple(self.solve_sector(s, seed) for s in chosen))
