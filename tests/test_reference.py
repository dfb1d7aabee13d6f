"""The Bloch-determinant reference: exact without interaction, a variational bound with it."""

import numpy as np

from qernel_cli.config import resolve
from qernel_cli.vmc.reference import bloch_reference


def test_noninteracting_reference_is_exact_and_interaction_raises_energy():
    depths = np.array([7.5, 22.5])
    free = bloch_reference(resolve("moire-tiny", ["hamiltonian.coulomb=false"]), depths, walkers=64, blocks=4)
    # Exact eigenstate: zero variance, the sum of band energies, whatever the samples.
    np.testing.assert_allclose(free["total"], free["exact_noninteracting"], rtol=1e-6)
    assert np.all(free["total_error"] < 1e-5)
    np.testing.assert_allclose(free["kinetic"] + free["potential"], free["total"], rtol=1e-10)
    coulomb = bloch_reference(resolve("moire-tiny"), depths, walkers=64, blocks=4)
    # Same orbitals, so kinetic and moiré energies agree statistically; the interaction is
    # the Ewald energy of a liquid-like determinant: negative (background) and O(e²/a).
    assert np.all(coulomb["interaction"] < -30) and np.all(coulomb["interaction"] > -80)
    assert np.all(np.abs(coulomb["kinetic"] - free["kinetic"]) < 6 * coulomb["total_error"] + 0.5)
