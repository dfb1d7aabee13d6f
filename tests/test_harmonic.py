"""The harmonic estimate of the deep-moiré crystal (qernel_cli.hamiltonian.harmonic)."""

import numpy as np
import pytest

from qernel_cli.config import resolve
from qernel_cli.hamiltonian.bands import solve_bands
from qernel_cli.hamiltonian.harmonic import harmonic_crystal, site_energy
from qernel_cli.hamiltonian.potential import potential_minimum
from qernel_cli.lattice import Supercell
from qernel_cli.vmc.crystal import classical_ground_state, oscillator_width


def test_one_electron_in_a_well():
    """Without Coulomb: ω = 1/s² of the oscillator width, both directions; the estimate is the band's mean energy."""
    v = 20.0
    h = harmonic_crystal(Supercell(1, 1), potential_minimum(45.0)[None], v, 45.0, 0.0)
    np.testing.assert_allclose(h.frequencies, 1.0 / oscillator_width(v, 45.0) ** 2, rtol=1e-3)
    assert h.coulomb == 0.0 and h.zero_point_shift == 0.0 and h.estimate == site_energy(v, 45.0)
    bands = np.asarray(solve_bands(Supercell(12, 12), v, 45.0, 2).energies)
    assert bands[:, 0].min() <= h.estimate <= bands[:, 0].max() < bands[:, 1].min()  # a narrow lowest band, well below the next
    assert h.harmonic > bands[:, 0].max()  # the quartic term lowers the well's energy below its harmonic value


def test_honeycomb_crystal_is_stable_and_coulomb_stiffens_it():
    c = resolve("moire-tiny")
    mu, cell = c.material_units, c.supercell_geometry
    sites = classical_ground_state(cell, 6, mu.phi_deg)
    h = harmonic_crystal(cell, sites, mu.depth_to_moire(30.0), mu.phi_deg, mu.coulomb_strength)
    assert h.displacement < 1e-6  # the honeycomb's C3 sites feel no net force
    assert np.all(np.isfinite(h.frequencies)) and h.zero_point_shift > 0
    assert h.estimate == pytest.approx(h.site_energy + h.coulomb + h.zero_point_shift)
