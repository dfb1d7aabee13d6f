"""Ground states for 1, 2, … bands per momentum, the resources each needs, and the extrapolation of the bounds.

Each band basis contains the previous one, so the sequence of ground-state
energies E_n (n bands per momentum) is a decreasing sequence of variational
upper bounds. Its convergence is a power law, E_n − E_∞ ≈ c n^(−α), set by the
electron–electron cusp: the missing high-momentum weight of a pair function
with a cusp ∝ r (opposite spins) costs ∝ k_c⁻² ∝ n⁻¹ in 2D, one with the
same-spin cusp ∝ r·|r| costs ∝ n⁻². The limit is estimated from the decrease
D = E_h − E_n over the upper half of the sweep (h ≈ n/2): for an n^(−α) tail
the remaining decrease is T = D/((n/h)^α − 1), with α = 2 for spin-polarised
and α = 1 for spinful systems (the slowest rate of the cusp present; measured
sweeps converge faster, so T over- rather than under-states the rest). The
estimate is E_∞ = E_n − T ± T: never tighter than the amount it extrapolates.
With fewer than four band counts, or a sweep too short for h ≥ the first
count + 1, only the bound is reported. (Shells of bands make E_n fall in
steps, so three consecutive bounds are no basis for a geometric tail.)
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from qernel_cli.exact.band_basis import momentum_label
from qernel_cli.exact.diagonalise import ExactProblem, FewElectrons, SectorResult
from qernel_cli.lattice import Supercell


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one band basis costs: orbitals, states in the largest sector, and an upper estimate of the memory (bytes)."""

    n_bands: int
    n_orbitals: int
    states: int
    memory_bytes: int


def resources(supercell: Supercell, n_up: int, n_down: int, n_bands: int) -> Resources:
    """The cost of :class:`ExactProblem` with ``n_bands`` bands, from counting (nothing is built).

    Memory: per state, the two ±1 maps of the pair operator (C(N,2) entries of
    ~24 bytes each) and ~40 Lanczos/work vectors; per remainder row, three
    dense complex blocks; plus the Coulomb matrix (M⁴/N_k elements).
    """
    n_k = supercell.n_cells
    m = n_bands * n_k
    n = n_up + n_down
    spin_orbitals = m * (2 if n_down else 1)
    states = math.comb(m, n_up) * math.comb(m, n_down) // n_k + 1
    pair_entries = math.comb(n, 2) * states
    remainders = math.comb(spin_orbitals, max(n - 2, 0))
    pairs_per_class = math.comb(spin_orbitals, 2) // n_k + 1
    memory = (
        pair_entries * 2 * 24
        + states * 40 * 16
        + 3 * 16 * remainders * pairs_per_class
        + 16 * m**4 // n_k
        + 200 * 2**20
    )
    return Resources(n_bands, m, states, int(memory))


def time_reversed(label: int, supercell: Supercell) -> int:
    """Label of −K."""
    p = np.array([label // supercell.L2, label % supercell.L2])
    return int(momentum_label(-p, supercell))


@dataclasses.dataclass(frozen=True)
class BandStep:
    """The ground state with ``n_bands`` bands per momentum (energies in E_M)."""

    n_bands: int
    n_orbitals: int
    ground: SectorResult
    sectors: tuple[SectorResult, ...]  # every momentum (−K copied from K: equal by time reversal)
    seconds: float
    determinant: float  # the best single determinant of this basis's band orbitals (reference of E_c)


@dataclasses.dataclass(frozen=True)
class Extrapolation:
    """E_∞ ± error (E_M), or None where the bounds do not allow one, and why."""

    energy: float | None
    error: float | None
    note: str


def cusp_exponent(n_down: int) -> float:
    """α of E_n − E_∞ ∝ n^(−α): 2 with same-spin pairs only, 1 where opposite spins meet (see the module docstring)."""
    return 1.0 if n_down else 2.0


def extrapolate(n_bands: list[int], bounds: list[float], alpha: float) -> Extrapolation:
    """Power-law-tail extrapolation of decreasing upper bounds E_n at consecutive band counts (see the module docstring)."""
    if len(bounds) < 4:
        return Extrapolation(None, None, "fewer than four band counts: only the variational bound")
    n = n_bands[-1]
    h = max(n_bands[1], (n + 1) // 2)  # at least the second count: the first is often far from the asymptote
    if h >= n:
        return Extrapolation(None, None, "the sweep is too short for a tail: only the variational bound")
    decrease = bounds[n_bands.index(h)] - bounds[-1]
    if decrease <= 0:
        return Extrapolation(bounds[-1], 0.0, f"bands {h + 1}–{n} lowered nothing")
    tail = decrease / ((n / h) ** alpha - 1.0)
    return Extrapolation(
        bounds[-1] - tail, tail,
        f"n^-{alpha:g} tail from the decrease over bands {h}–{n}; error = the tail itself",
    )


def sweep(
    system: FewElectrons,
    max_bands: int,
    n_shells: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[BandStep], Extrapolation]:
    """Ground states for 1 … ``max_bands`` bands per momentum, every momentum sector (−K from K)."""
    supercell = system.supercell
    steps = []
    first = -(-max(system.n_up, system.n_down) // supercell.n_cells)  # at least as many orbitals per spin as electrons
    for n_bands in range(first, max_bands + 1):
        start = time.perf_counter()
        problem = ExactProblem(system, n_bands, n_shells)
        solved: dict[int, SectorResult] = {}
        for sector in problem.sectors():
            if not sector.dimension:
                continue
            partner = time_reversed(sector.momentum, supercell)
            if partner in solved:
                solved[sector.momentum] = dataclasses.replace(solved[partner], momentum=sector.momentum)
                continue
            solved[sector.momentum] = problem.solve_sector(sector)
            if progress:
                progress(f"{n_bands} band(s), momentum {sector.momentum}: {sector.dimension} states")
        results = tuple(solved[k] for k in sorted(solved))
        ground = min(results, key=lambda r: r.energy)
        determinant = problem.best_determinant()
        steps.append(BandStep(n_bands, problem.basis.n_orbitals, ground, results, time.perf_counter() - start, determinant))
    return steps, extrapolate([s.n_bands for s in steps], [s.ground.energy for s in steps], cusp_exponent(system.n_down))
