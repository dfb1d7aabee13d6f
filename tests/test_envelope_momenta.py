"""Envelope momenta: "fixed" keeps each orbital's Bloch momentum, "free" spans every supercell momentum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.config import resolve
from qernel_cli.hamiltonian.bands import lowest_orbitals
from qernel_cli.lattice import MOIRE_VECTORS, Supercell
from qernel_cli.model import make_wavefunction
from qernel_cli.model.orbitals import BlochEnvelope, free_momentum_basis

CELL = Supercell(3, 3)


def _envelopes(free: bool, noise: float = 0.0):
    orbitals = lowest_orbitals(CELL, 6, 5.0, 45.0, n_shells=3)
    k, G, c = orbitals.k, orbitals.G, orbitals.coefficients
    if free:
        k, G, c = free_momentum_basis(CELL, k, G, c)
    c = c + noise * np.random.default_rng(0).standard_normal(c.shape)
    return BlochEnvelope(k, G, c, determinants=1), orbitals.k


def test_free_basis_holds_every_momentum_once_and_the_same_functions():
    fixed, _ = _envelopes(False)
    free, _ = _envelopes(True)
    assert free.G.shape[0] == CELL.n_cells * fixed.G.shape[0]
    integers = np.round(free.G @ np.linalg.inv(CELL.reciprocal)).astype(int)
    assert len({tuple(x) for x in integers}) == len(integers)
    r = jnp.asarray(np.random.default_rng(1).uniform(0, 3, (7, 2)))
    np.testing.assert_allclose(free(r), fixed(r), atol=1e-12)


@pytest.mark.parametrize("free,noise,covariant", [(False, 0.1, True), (True, 0.0, True), (True, 0.1, False)])
def test_only_free_envelopes_can_leave_their_crystal_momentum(free, noise, covariant):
    """e_j(r + a) = e^{i k_j·a} e_j(r) for a moiré translation a, unless free envelopes have been changed."""
    envelope, k = _envelopes(free, noise)
    r = jnp.asarray(np.random.default_rng(2).uniform(0, 3, (5, 2)))
    a = MOIRE_VECTORS[0] + 2 * MOIRE_VECTORS[1]
    shifted = np.asarray(envelope(r + a))[0]
    expected = np.exp(1j * (k @ a))[None, :] * np.asarray(envelope(r))[0]
    assert np.allclose(shifted, expected, atol=1e-10) == covariant


def test_free_momenta_start_from_the_same_wavefunction():
    def model(momenta):
        c = resolve("moire-tiny", [f"model.envelope_momenta={momenta}"])
        return make_wavefunction(c, jax.random.PRNGKey(0)), c

    (fixed, c), (free, _) = model("fixed"), model("free")
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 2)) * 3.0
    condition = jnp.array([c.material_units.depth_to_moire(12.0)])
    assert complex(free(x, condition)) == pytest.approx(complex(fixed(x, condition)), abs=1e-10)
