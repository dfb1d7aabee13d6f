"""Envelope momenta: "fixed" keeps each orbital's Bloch momentum, "mixed" mixes the bands of every momentum."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.config import ConfigError, resolve
from qernel_cli.hamiltonian.bands import lowest_orbitals, solve_bands
from qernel_cli.lattice import MOIRE_VECTORS, Supercell
from qernel_cli.model import make_wavefunction
from qernel_cli.model.envelopes import BandMixingEnvelope, initial_envelope

CELL = Supercell(3, 3)
V = 5.0


def _envelope(mixed: bool, noise: float = 0.0):
    orbitals = lowest_orbitals(CELL, 6, V, 45.0, n_shells=3)
    states = [solve_bands(CELL, V, 45.0, 2, n_shells=3)] if mixed else None
    envelope = initial_envelope(CELL, 6, 1, 3, orbitals, band_states=states)
    if noise:
        rng = np.random.default_rng(0)
        leaf = envelope.mixing_re if mixed else envelope.coefficients_re
        envelope = jax.tree.map(lambda x: x + noise * rng.standard_normal(x.shape) if x is leaf else x, envelope)
    return envelope, orbitals.k


def test_mixed_envelopes_start_as_the_bloch_orbitals():
    fixed, _ = _envelope(False)
    mixed, _ = _envelope(True)
    assert isinstance(mixed, BandMixingEnvelope) and mixed.mixing_re.shape[-1] == 2 * CELL.n_cells
    r = jnp.asarray(np.random.default_rng(1).uniform(0, 3, (7, 2)))
    np.testing.assert_allclose(mixed(r), fixed(r), atol=1e-12)
    for a, b in zip(mixed.jet(r), fixed.jet(r)):
        np.testing.assert_allclose(a, b, atol=1e-10)
    # only the mixing matrix is trained; the band states are a constant
    assert len(jax.tree.leaves(mixed)) == 2


@pytest.mark.parametrize("mixed,noise,covariant", [(False, 0.1, True), (True, 0.0, True), (True, 0.1, False)])
def test_only_mixed_envelopes_can_leave_their_crystal_momentum(mixed, noise, covariant):
    """e_j(r + a) = e^{i k_j·a} e_j(r) for a moiré translation a, unless mixed envelopes have been changed."""
    envelope, k = _envelope(mixed, noise)
    r = jnp.asarray(np.random.default_rng(2).uniform(0, 3, (5, 2)))
    a = MOIRE_VECTORS[0] + 2 * MOIRE_VECTORS[1]
    shifted = np.asarray(envelope(r + a))[0]
    expected = np.exp(1j * (k @ a))[None, :] * np.asarray(envelope(r))[0]
    assert np.allclose(shifted, expected, atol=1e-10) == covariant


def test_mixed_momenta_start_from_the_same_wavefunction():
    def model(momenta):
        c = resolve("moire-tiny", [f"model.envelope_momenta={momenta}", "pretrain.target=bloch"])
        return make_wavefunction(c, jax.random.PRNGKey(0)), c

    (fixed, c), (mixed, _) = model("fixed"), model("mixed")
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 2)) * 3.0
    for depth in (3.0, 12.0, 27.0):  # between and at the anchors
        condition = jnp.array([c.material_units.depth_to_moire(depth)])
        assert complex(mixed(x, condition)) == pytest.approx(complex(fixed(x, condition)), abs=1e-9)


def test_mixed_momenta_are_refused_where_they_cannot_work():
    with pytest.raises(ConfigError, match="needs model.envelope"):
        resolve("moire-tiny", ["model.envelope_momenta=mixed", "model.envelope=plane-wave"])
    with pytest.raises(ConfigError, match="hold fewer states than the 6 electrons"):
        resolve("moire-tiny", ["model.envelope_momenta=mixed", "supercell.L1=2", "supercell.L2=2", "electrons.filling=3/2", "model.envelope_bands=1"])
