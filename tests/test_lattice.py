"""Triangular moiré lattice and supercell geometry."""

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.lattice import MOIRE_G, MOIRE_RECIPROCAL, MOIRE_VECTORS, Supercell, lattice_waves, minimum_image, points_in_disc


def test_moire_reciprocal_vectors():
    assert np.allclose(MOIRE_VECTORS @ MOIRE_RECIPROCAL.T, 2 * np.pi * np.eye(2), atol=1e-14)
    norms = np.linalg.norm(MOIRE_G, axis=1)
    assert np.allclose(norms, 4 * np.pi / np.sqrt(3), rtol=1e-14)
    assert np.allclose(MOIRE_G.sum(axis=0), 0.0, atol=1e-13)
    for a, b in itertools.combinations(MOIRE_G, 2):
        assert np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)) == pytest.approx(-0.5, abs=1e-14)


@pytest.mark.parametrize("L1,L2", [(3, 3), (6, 6), (2, 5)])
def test_supercell_geometry(L1, L2):
    sc = Supercell(L1, L2)
    assert sc.area == pytest.approx(L1 * L2 * np.sqrt(3) / 2, rel=1e-14)
    assert np.allclose(sc.cell @ sc.reciprocal.T, 2 * np.pi * np.eye(2), atol=1e-12)
    k = sc.kgrid()
    assert k.shape == (L1 * L2, 2)
    # Every k is a Bloch momentum of the supercell: exp(i k·T) = 1.
    assert np.allclose(np.exp(1j * k @ sc.cell.T), 1.0, atol=1e-12)
    # All distinct modulo the moiré reciprocal lattice, and folded into the first BZ.
    frac = k @ np.linalg.inv(MOIRE_RECIPROCAL)
    keys = {tuple(np.round((f - np.floor(f + 1e-9)) * np.array([L1, L2])).astype(int) % [L1, L2]) for f in frac}
    assert len(keys) == L1 * L2
    assert np.all(np.linalg.norm(k, axis=1) <= 4 * np.pi / 3 + 1e-9)


def test_wrap_and_minimum_image_against_brute_force():
    sc = Supercell(3, 4)
    rng = np.random.default_rng(0)
    x = rng.normal(scale=10.0, size=(200, 2))
    w = np.asarray(sc.wrap(jnp.asarray(x)))
    frac = np.asarray(sc.fractional(jnp.asarray(w)))
    assert np.all((frac >= 0) & (frac < 1))
    # The wrapped point differs from the original by a supercell lattice vector.
    shift = (x - w) @ np.linalg.inv(sc.cell)
    assert np.allclose(shift, np.round(shift), atol=1e-9)
    d = rng.normal(scale=5.0, size=(200, 2))
    mi = np.asarray(minimum_image(jnp.asarray(d), sc.cell))
    images = np.array(list(itertools.product(range(-12, 13), repeat=2))) @ sc.cell
    brute = d[:, None, :] + images[None]
    best = brute[np.arange(len(d)), np.argmin(np.sum(brute**2, -1), axis=1)]
    assert np.allclose(np.linalg.norm(mi, axis=1), np.linalg.norm(best, axis=1), atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_supercell_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="supercell.L1"):
        Supercell(bad, 3)


@pytest.mark.parametrize("cell", [(1, 1), (3, 3), (6, 2)])
@pytest.mark.parametrize("radius", [0.0, 3.0, 7.255197456936871, 20.0])
def test_points_in_disc_are_exactly_the_lattice_points_inside(cell, radius):
    """Against a brute-force scan of a much larger square of labels; points on the circle (|g| = 4π/√3 ≈ 7.2552) count."""
    basis = Supercell(*cell).reciprocal
    points, labels = points_in_disc(basis, radius)
    np.testing.assert_allclose(points, labels @ basis)
    m = np.arange(-60, 61)
    every = np.stack(np.meshgrid(m, m, indexing="ij"), axis=-1).reshape(-1, 2)
    inside = every[np.linalg.norm(every @ basis, axis=-1) <= radius * (1 + 1e-12)]
    assert sorted(map(tuple, labels.tolist())) == sorted(map(tuple, inside.tolist()))
    assert (0, 0) in set(map(tuple, labels.tolist()))
    assert set(map(tuple, (-labels).tolist())) == set(map(tuple, labels.tolist()))


@pytest.mark.parametrize("basis_of", ["moire", "supercell"])
def test_lattice_waves_equal_cos_and_sin(basis_of):
    """e^{i v·r} from powers of two exponentials equals cos + i sin to ~|n|·ε, also for |n| ≈ 40 and for many positions."""
    sc = Supercell(6, 6)
    basis = MOIRE_RECIPROCAL if basis_of == "moire" else sc.reciprocal
    rng = np.random.default_rng(3)
    integers = rng.integers(-40, 41, size=(60, 2))
    integers[0] = (0, 0)
    vectors = integers @ basis
    positions = jnp.asarray(rng.uniform(-3, 9, size=(5, 7, 2)))  # leading batch axes, points outside the cell
    phase = np.asarray(positions) @ vectors.T
    expected = np.cos(phase) + 1j * np.sin(phase)
    waves = np.asarray(lattice_waves(positions, vectors, basis))
    assert waves.shape == (5, 7, 60)
    np.testing.assert_allclose(waves, expected, rtol=0, atol=1e-12)
    assert np.all(waves[..., 0] == 1.0)


def test_lattice_waves_off_the_lattice_fall_back_to_cos_and_sin():
    vectors = np.array([[0.3, 0.1], [1.0, 2.5]])  # not on the moiré reciprocal lattice
    positions = jnp.asarray([[0.2, 0.7], [1.5, -0.4]])
    phase = np.asarray(positions) @ vectors.T
    np.testing.assert_allclose(np.asarray(lattice_waves(positions, vectors, MOIRE_RECIPROCAL)), np.cos(phase) + 1j * np.sin(phase), atol=1e-15)
