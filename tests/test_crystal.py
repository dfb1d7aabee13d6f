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


def test_crystal_mixing_reproduces_the_gaussians_in_a_plane_wave_basis():
    """With single plane waves as the band states the projection is the Gaussian itself (truncated), 1 at its site."""
    from qernel_cli.lattice import points_in_disc
    from qernel_cli.vmc.crystal import crystal_mixing

    cell = Supercell(3, 3)
    sites = classical_ground_state(cell, 6, 45.0)
    q, _ = points_in_disc(cell.reciprocal, 6.0 / 0.3)  # supercell plane waves, as momenta with G = 0
    states = np.ones((1, len(q), 1), complex)
    u = crystal_mixing(q, np.zeros((1, 2)), states, sites, [0.3])[0]  # (n, M)
    r = np.random.default_rng(0).uniform(size=(50, 2)) @ cell.cell
    envelope = np.exp(1j * r @ q.T) @ u.T  # e_j(r), (50, n)
    gaussians = np.asarray(evaluate_orbitals(crystal_orbitals(cell, sites, 0.3), r))
    at_site = np.asarray(evaluate_orbitals(crystal_orbitals(cell, sites, 0.3), sites)).diagonal()
    np.testing.assert_allclose(envelope, gaussians / at_site, atol=2e-5)  # crystal_orbitals cuts its spectrum at e^{−12.5}


def test_crystal_start_puts_band_mixing_envelopes_on_the_sites():
    import jax
    import jax.numpy as jnp

    from qernel_cli.model.build import make_wavefunction
    from qernel_cli.vmc.crystal import crystal_start

    c = resolve("moire-tiny", ["model.envelope_momenta=mixed", "hamiltonian.V_min_meV=25", "hamiltonian.V_max_meV=25"])
    model = make_wavefunction(c, jax.random.PRNGKey(0))
    cell, phi = c.supercell_geometry, c.material_units.phi_deg
    sites = classical_ground_state(cell, 6, phi)
    f = (np.arange(48) + 0.5) / 48
    grid = np.stack(np.meshgrid(f, f, indexing="ij"), -1).reshape(-1, 2) @ cell.cell
    gaussians = np.asarray(evaluate_orbitals(crystal_orbitals(cell, sites, oscillator_width(model.condition_centre[0], phi)), grid))

    def overlaps(m):
        e = np.asarray(m.orbitals.blocks[0].envelope(jnp.asarray(grid), jnp.asarray(0.0)))[0]
        return np.abs(np.sum(e.conj() * gaussians, 0)) / np.linalg.norm(e, axis=0) / np.linalg.norm(gaussians, axis=0)

    assert np.all(overlaps(model) < 0.6)  # Bloch orbitals: spread over the cell
    assert np.all(overlaps(crystal_start(model, sites, phi)) > 0.98)  # two bands per momentum hold the Gaussians


def test_real_space_crystal_target_is_the_plane_wave_one_up_to_a_constant():
    """Poisson summation: the image sum of Gaussians and their plane-wave series give the same determinant up to a constant factor."""
    import jax.numpy as jnp

    from qernel_cli.lattice import points_in_disc
    from qernel_cli.vmc.crystal import CrystalTarget, crystal_log_psi

    cell = Supercell(3, 3)
    sites = classical_ground_state(cell, 6, 45.0)
    rng = np.random.default_rng(1)
    for width in (0.12, 0.3):
        configurations = sites[None] + rng.normal(size=(5, 6, 2)) * width
        target = CrystalTarget(jnp.asarray(sites), jnp.asarray(width))
        real_space = np.array([complex(crystal_log_psi(target, jnp.asarray(x), cell)) for x in configurations])
        q, _ = points_in_disc(cell.reciprocal, 8.0 / width)  # the series to e^{−32}: crystal_orbitals stops at e^{−12.5}
        plane_waves = []
        for x in configurations:
            phases = np.exp(1j * np.einsum("ijx,qx->ijq", x[:, None, :] - sites[None, :, :], q))
            plane_waves.append(np.linalg.slogdet(np.sum(np.exp(-0.5 * np.sum(q**2, -1) * width**2) * phases, axis=-1)))
        plane_waves = np.array(plane_waves)
        log_pw = np.log(np.abs(plane_waves[:, 0])) + plane_waves[:, 1].real
        np.testing.assert_allclose(real_space.real - log_pw, (real_space.real - log_pw)[0], atol=1e-7)
        sign = np.exp(1j * real_space.imag) * np.conj(plane_waves[:, 0] / np.abs(plane_waves[:, 0]))
        np.testing.assert_allclose(sign, sign[0], atol=1e-7)
