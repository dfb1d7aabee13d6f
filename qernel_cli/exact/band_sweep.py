"""Ground states for 1, 2, … bands per momentum, the resources each needs, and the extrapolation of the bounds.

Each band basis contains the previous one, so the sequence of ground-state
energies is a decreasing sequence of variational upper bounds. Its limit is
estimated from the last three bounds by a geometric tail: with decrements
d₁ = E_{n−2} − E_{n−1} and d₂ = E_{n−1} − E_n and ratio q = d₂/d₁ < 1, the
remaining decrease is d₂ q/(1 − q); that estimate is also its own error
(E_∞ = E_n − tail ± tail), so an extrapolation is never tighter than the
amount it extrapolates. Without three bounds or with q ≥ 1 only the bound
is reported.
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


@dataclasses.dataclass(frozen=True)
class Extrapolation:
    """E_∞ ± error (E_M), or None where the bounds do not allow one, and why."""

    energy: float | None
    error: float | None
    note: str


def extrapolate(bounds: list[float]) -> Extrapolation:
    """Geometric-tail extrapolation of decreasing upper bounds (see the module docstring)."""
    if len(bounds) < 3:
        return Extrapolation(None, None, "fewer than three band counts: only the variational bound")
    e1, e2, e3 = bounds[-3:]
    d1, d2 = e1 - e2, e2 - e3
    if d2 <= 0:
        return Extrapolation(e3, 0.0, "the last band added lowered nothing")
    if d1 <= 0 or d2 >= d1:
        return Extrapolation(None, None, "the bounds are not yet decreasing geometrically: only the variational bound")
    tail = d2 * (d2 / d1) / (1.0 - d2 / d1)
    return Extrapolation(e3 - tail, tail, "geometric tail of the last three bounds, error = the tail itself")


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
        steps.append(BandStep(n_bands, problem.basis.n_orbitals, ground, results, time.perf_counter() - start))
    return steps, extrapolate([s.ground.energy for s in steps])
