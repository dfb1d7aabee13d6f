"""Charge density: histograms of sampled electrons, folding onto one moiré cell, exact band densities.

Moiré units: positions in a_M, densities in electrons per a_M². A histogram
covers a parallelogram ``cell`` (rows C_1, C_2: the supercell, or one moiré
cell) in its fractional coordinates s = (s_1, s_2) ∈ [0, 1)², r = s·cell, with
n_1 × n_2 equal bins; ``value[i, j]`` is the density in the bin
s_1 ∈ [i, i+1)/n_1, s_2 ∈ [j, j+1)/n_2, so that Σ value · bin_area = electrons
in the cell (N for the supercell, ν for one moiré cell).

Errors are standard errors over independent samples. By default every
configuration (every leading index of ``positions`` (..., N, 2)) is one
sample; ``independent_axes=k`` makes only the first k leading axes independent
(e.g. walkers) and pools the remaining ones (e.g. successive Markov-chain
records of one walker) within each sample, so their correlation cannot bias
the error bars.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

from qernel_cli.hamiltonian.bands import Orbitals, evaluate_orbitals
from qernel_cli.lattice import MOIRE_VECTORS, Supercell
from qernel_cli.observables.blocking import (
    CHUNK_ELEMENTS,
    Moments,
    as_samples,
    sample_chunks,
)

__all__ = [
    "Density",
    "bin_averaged_exact_density",
    "density_on_grid",
    "exact_density",
    "fold_to_moire_cell",
    "moire_cell_density",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Density:
    """Number density on a grid over a parallelogram.

    Attributes:
        value: (n_1, n_2) density, electrons per a_M².
        error: (n_1, n_2) standard error of ``value`` over the samples (NaN for one sample).
        cell: (2, 2) rows C_1, C_2 spanning the histogrammed parallelogram (a_M).
        n_samples: number of independent samples averaged.
    """

    value: Float[np.ndarray, "n1 n2"]
    error: Float[np.ndarray, "n1 n2"]
    cell: Float[np.ndarray, "2 2"]
    n_samples: int

    @property
    def grid(self) -> tuple[int, int]:
        """Bins along C_1 and C_2."""
        return self.value.shape

    @property
    def bin_area(self) -> float:
        """Area of one bin (a_M²)."""
        return abs(float(np.linalg.det(self.cell))) / (self.grid[0] * self.grid[1])

    def fractional_centres(self) -> Float[np.ndarray, "n1 n2 2"]:
        """Fractional coordinates (s_1, s_2) of the bin centres."""
        s1 = (np.arange(self.grid[0]) + 0.5) / self.grid[0]
        s2 = (np.arange(self.grid[1]) + 0.5) / self.grid[1]
        return np.stack(np.meshgrid(s1, s2, indexing="ij"), axis=-1)

    def centres(self) -> Float[np.ndarray, "n1 n2 2"]:
        """Cartesian coordinates of the bin centres (a_M)."""
        return self.fractional_centres() @ self.cell


def _counts(frac: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Bin counts per sample: frac (c, M, 2) in [0, 1) → (c, n_1·n_2)."""
    n1, n2 = grid
    n_bins = n1 * n2
    i = np.minimum((frac[..., 0] * n1).astype(np.int64), n1 - 1)
    j = np.minimum((frac[..., 1] * n2).astype(np.int64), n2 - 1)
    flat = np.arange(len(frac))[:, None] * n_bins + i * n2 + j
    return np.bincount(flat.ravel(), minlength=len(frac) * n_bins).reshape(len(frac), n_bins)


def _density(positions, cell: np.ndarray, grid: tuple[int, int], scale: float, independent_axes: int | None) -> Density:
    samples = as_samples(positions, independent_axes)  # (S, R, N, 2)
    S, R, N = samples.shape[:3]
    n1, n2 = grid
    if n1 < 1 or n2 < 1:
        raise ValueError(f"grid must be positive, got {grid}")
    inverse = np.linalg.inv(cell)
    moments = Moments()
    for rows, record_slices in sample_chunks(S, R, max(N, n1 * n2)):
        counts = 0
        for records in record_slices:
            frac = samples[rows, records] @ inverse
            counts = counts + _counts((frac - np.floor(frac)).reshape(len(frac), -1, 2), grid)
        moments.add(counts / R)
    bin_area = abs(float(np.linalg.det(cell))) / (n1 * n2)
    norm = 1.0 / (scale * bin_area)
    return Density(
        value=(moments.mean * norm).reshape(n1, n2),
        error=(moments.error * norm).reshape(n1, n2),
        cell=np.array(cell, dtype=np.float64),
        n_samples=moments.count,
    )


def density_on_grid(
    positions: Float[np.ndarray, "... N 2"], supercell: Supercell, grid: int, independent_axes: int | None = None
) -> Density:
    """Electron density (per a_M²) on a grid × grid histogram of the supercell.

    Positions anywhere in the plane are wrapped into the supercell first. The
    density integrates to N exactly: Σ value · bin_area = N. ``independent_axes``:
    see the module docstring.
    """
    return _density(positions, supercell.cell, (int(grid), int(grid)), 1.0, independent_axes)


def moire_cell_density(
    positions: Float[np.ndarray, "... N 2"], supercell: Supercell, grid: int, independent_axes: int | None = None
) -> Density:
    """Density averaged over the L1·L2 moiré cells, histogrammed directly on one moiré cell.

    For L1 = L2 = L its value equals
    ``fold_to_moire_cell(density_on_grid(positions, supercell, grid·L), supercell)``,
    but its errors are exact sample standard errors, and any L1, L2 work. Integrates to ν = N/(L1·L2) over the cell spanned by a_1, a_2.
    """
    return _density(positions, MOIRE_VECTORS, (int(grid), int(grid)), float(supercell.n_cells), independent_axes)


def fold_to_moire_cell(density: Density | Float[np.ndarray, "g g"], supercell: Supercell):
    """Average a supercell-grid density over its L1 × L2 moiré cells.

    The grid must be divisible by L1 (along T_1) and L2 (along T_2); the result
    is on a (g/L1) × (g/L2) grid over the moiré cell spanned by a_1, a_2. For a
    :class:`Density` the errors are combined as if the bins were independent
    (√Σ error² / L1L2; use :func:`moire_cell_density` for exact sample errors);
    a plain array is folded as values only.
    """
    values = density.value if isinstance(density, Density) else np.asarray(density, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"density must be a 2D grid, got shape {values.shape}")
    g1, g2 = values.shape
    L1, L2 = supercell.L1, supercell.L2
    if g1 % L1 or g2 % L2:
        raise ValueError(
            f"grid {g1}×{g2} cannot be folded onto the moiré cell: it must be divisible by L1={L1} and L2={L2}"
        )

    def fold(a, reduce):
        return reduce(a.reshape(L1, g1 // L1, L2, g2 // L2), axis=(0, 2))

    if not isinstance(density, Density):
        return fold(values, np.mean)
    if not np.allclose(density.cell, supercell.cell):
        raise ValueError("density was not histogrammed on this supercell")
    return Density(
        value=fold(values, np.mean),
        error=np.sqrt(fold(density.error**2, np.sum)) / supercell.n_cells,
        cell=np.array(MOIRE_VECTORS),
        n_samples=density.n_samples,
    )


def exact_density(orbitals: Orbitals | Sequence[Orbitals], points: Float[np.ndarray, "M 2"]) -> Float[np.ndarray, " M"]:
    """n(r) = Σ_j |φ_j(r)|² (per a_M²) of a Slater determinant of orbitals.

    Pass a sequence of :class:`Orbitals` (e.g. spin up, spin down) to sum them.
    Evaluated in chunks of points.
    """
    sets = [orbitals] if isinstance(orbitals, Orbitals) else list(orbitals)
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out = np.zeros(len(points))
    for orb in sets:
        chunk = max(1, CHUNK_ELEMENTS // max(1, len(orb.G) + orb.n_orbitals))
        for start in range(0, len(points), chunk):
            phi = np.asarray(evaluate_orbitals(orb, points[start : start + chunk]))
            out[start : start + chunk] += np.sum(np.abs(phi) ** 2, axis=-1)
    return out


def bin_averaged_exact_density(
    orbitals: Orbitals | Sequence[Orbitals], supercell: Supercell, grid: int, subdivisions: int = 6
) -> Float[np.ndarray, "grid grid"]:
    """Exact density averaged over each bin of :func:`density_on_grid`'s grid.

    Midpoint rule on subdivisions × subdivisions points per bin, so the result is
    directly comparable with a sampled histogram.
    """
    n = int(grid) * int(subdivisions)
    s = (np.arange(n) + 0.5) / n
    frac = np.stack(np.meshgrid(s, s, indexing="ij"), axis=-1).reshape(-1, 2)
    values = exact_density(orbitals, frac @ supercell.cell).reshape(grid, subdivisions, grid, subdivisions)
    return values.mean(axis=(1, 3))
