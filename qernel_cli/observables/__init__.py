"""Observables from sampled configurations, with honest error bars (moiré units).

Public API:

* :func:`blocking` — mean, error and autocorrelation time of a correlated
  Markov-chain series (Flyvbjerg–Petersen blocking, Jonsson's automatic level).
* :func:`density_on_grid` / :func:`moire_cell_density` / :func:`fold_to_moire_cell`
  — charge density histograms (electrons per a_M²); :func:`exact_density` and
  :func:`bin_averaged_exact_density` for non-interacting Bloch determinants.
* :func:`structure_factor` (S(q) = ⟨|ρ_q|²⟩/N) on :func:`supercell_q_vectors`,
  :func:`pair_correlation` g(r), and the ν = 2/3 crystal order parameter
  :func:`crystal_order` at :func:`ordering_vectors`.
"""

from qernel_cli.observables.blocking import Blocking, Moments, blocking
from qernel_cli.observables.density import (
    Density,
    bin_averaged_exact_density,
    density_on_grid,
    exact_density,
    fold_to_moire_cell,
    moire_cell_density,
)
from qernel_cli.observables.pair_correlation import PairCorrelation, annulus_areas, pair_correlation, wigner_seitz_cell
from qernel_cli.observables.structure import (
    CrystalOrderSamples,
    OrderParameter,
    StructureFactor,
    crystal_order,
    crystal_order_per_sample,
    density_fourier,
    ordering_vectors,
    structure_factor,
    supercell_q_vectors,
)

__all__ = [
    "Blocking",
    "CrystalOrderSamples",
    "Density",
    "Moments",
    "OrderParameter",
    "PairCorrelation",
    "StructureFactor",
    "annulus_areas",
    "bin_averaged_exact_density",
    "blocking",
    "crystal_order",
    "crystal_order_per_sample",
    "density_fourier",
    "density_on_grid",
    "exact_density",
    "fold_to_moire_cell",
    "moire_cell_density",
    "ordering_vectors",
    "pair_correlation",
    "structure_factor",
    "supercell_q_vectors",
    "wigner_seitz_cell",
]
