"""The moiré Hamiltonian: potential, Ewald Coulomb interaction, bands, local energy.

Public API:

* :func:`moire_potential` — Δ(r) = −2V Σ_j cos(g_j·r + φ), any units.
* :func:`ewald_energy` / :class:`EwaldSum` — periodic Coulomb energy of unit
  charges with a neutralising background (inverse length units of the cell).
* :func:`local_energy` — E_L of any log-ψ function (folx forward Laplacian or
  a Hessian-trace reference), components separately, moiré units.
* :func:`lowest_orbitals` / :func:`solve_bands` — non-interacting Bloch states
  by plane-wave diagonalisation.
"""

from qernel_cli.hamiltonian.bands import (
    BandStructure,
    Orbitals,
    evaluate_orbitals,
    lowest_orbitals,
    slater_log_psi,
    slater_log_psi_spinful,
    solve_bands,
)
from qernel_cli.hamiltonian.ewald import EwaldSum, ewald_energy
from qernel_cli.hamiltonian.local_energy import LocalEnergy, kinetic_energy, laplacian_and_gradient, local_energy
from qernel_cli.hamiltonian.potential import moire_potential, total_moire_potential

__all__ = [
    "BandStructure",
    "EwaldSum",
    "LocalEnergy",
    "Orbitals",
    "evaluate_orbitals",
    "ewald_energy",
    "kinetic_energy",
    "laplacian_and_gradient",
    "local_energy",
    "lowest_orbitals",
    "moire_potential",
    "slater_log_psi",
    "slater_log_psi_spinful",
    "solve_bands",
    "total_moire_potential",
]
