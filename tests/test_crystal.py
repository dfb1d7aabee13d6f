"""The classical-crystal pre-training target: honeycomb ground state, Gaussian orbitals, plumbing."""

import itertools

import numpy as np
import pytest
from clitools import TINY_RUN

from qernel_cli.config import resolve
from qernel_cli.hamiltonian.bands import evaluate_orbitals
from qernel_cli.hamiltonian.ewald import ewald_energy
from qernel_cli.lattice import Supercell
from qernel_cli.observables.sites import site_order
from qernel_cli.hamiltonian.potential import moire_sites
from qernel_cli.vmc.crystal import classical_ground_state, crystal_orbitals, oscillator_width


@pytest.mark.parametrize("size,n", [(3, 6), (6, 24)])
def test_two_thirds_filling_gives_the_honeycomb(size, n):
    cell = Supercell(size, size)
    sites = classical_ground_state(cell, n, 45.0)
    assert sites.shape == (n, 2)
    assert site_order(sites[None], cell, 45.0).value == pytest.approx(1.0, abs=1e-12)


def test_ground_state_is_the_lowest_of_all_arrangements():
    cell = Supercell(3, 3)
    sites = moire_sites(cell, 45.0)
    energies = sorted(float(ewald_energy(sites[list(c)], cell.cell)) for c in itertools.combinations(range(9), 6))
    found = float(ewald_energy(classical_ground_state(cell, 6, 45.0), cell.cell))
    assert found == pytest.approx(energies[0], abs=1e-10) and energies[0] < energies[3] - 1e-3  # 3 degenerate honeycombs


def test_crystal_orbitals_are_gaussians_on_the_sites():
    cell = Supercell(3, 3)
    sites = classical_ground_state(cell, 6, 45.0)
    orbitals = crystal_orbitals(cell, sites, 0.2)
    r = sites[0] + np.array([[0.0, 0.0], [0.2, 0.0], [0.0, 0.4]])
    values = np.abs(np.asarray(evaluate_orbitals(orbitals, r)))[:, 0]
    np.testing.assert_allclose(values[1:] / values[0], np.exp(-np.array([0.2, 0.4]) ** 2 / (2 * 0.2**2)), rtol=1e-4)
    # The width follows the harmonic curvature and is clipped at shallow depth.
    assert oscillator_width(0.0, 45.0) == 0.3 and 0.05 < oscillator_width(8.9, 45.0) < oscillator_width(4.4, 45.0) < 0.3


def test_crystal_pretraining_runs(tmp_path):
    from qernel_cli.workflows.train import train

    small = [*TINY_RUN, "pretrain.steps=5", "training.steps=1", "pretrain.target=crystal"]
    summary = train(resolve("moire-tiny", small), tmp_path / "x")
    assert summary["steps"] == 1 and all(np.isfinite(d["energy_per_electron_meV"]) for d in summary["depths"])
