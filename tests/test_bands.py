"""Plane-wave band structure of the moiré potential and its Bloch orbitals."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from qernel_cli.hamiltonian.bands import (
    Orbitals,
    bloch_hamiltonian,
    converged_shells,
    evaluate_orbitals,
    lowest_orbitals,
    plane_wave_basis,
    solve_bands,
)
from qernel_cli.hamiltonian.potential import moire_potential
from qernel_cli.lattice import MOIRE_RECIPROCAL, MOIRE_VECTORS, Supercell

B1, B2 = MOIRE_RECIPROCAL
B_NORM = float(np.linalg.norm(B1))


def free_levels(k, n):
    """The n lowest ½|k+G|² over a large, independently built set of G."""
    m = np.arange(-12, 13)
    G = np.stack(np.meshgrid(m, m, indexing="ij"), -1).reshape(-1, 2) @ MOIRE_RECIPROCAL
    return np.sort(0.5 * np.sum((k + G) ** 2, axis=-1))[:n]


def lowest_eigenvalues(h, n):
    return scipy.linalg.eigh(h, eigvals_only=True, subset_by_index=(0, n - 1))


def test_plane_wave_basis():
    G = plane_wave_basis(1)
    assert len(G) == 7 and np.allclose(G[0], 0.0)
    for n in range(5):
        G = plane_wave_basis(n)
        # integer combinations of b1, b2, closed under G → -G, inside the disc
        frac = G @ np.linalg.inv(MOIRE_RECIPROCAL)
        assert np.allclose(frac, np.round(frac), atol=1e-10)
        assert np.all(np.linalg.norm(G, axis=1) <= n * B_NORM * (1 + 1e-9))
        key = {tuple(x) for x in np.round(frac).astype(int)}
        assert key == {(-a, -b) for a, b in key}
        # everything inside the disc is there
        m = np.arange(-2 * n - 2, 2 * n + 3)
        all_G = np.stack(np.meshgrid(m, m, indexing="ij"), -1).reshape(-1, 2) @ MOIRE_RECIPROCAL
        assert len(G) == np.sum(np.linalg.norm(all_G, axis=1) <= n * B_NORM * (1 + 1e-9))
        # the smaller basis is a prefix of the larger one
        assert np.array_equal(plane_wave_basis(n + 1)[: len(G)], G)
        assert np.all(np.diff(np.linalg.norm(G, axis=1)) >= -1e-9)


def test_free_particle_spectrum_is_exact():
    rng = np.random.default_rng(0)
    G = plane_wave_basis(4)
    for k in rng.normal(size=(3, 2)):
        h = bloch_hamiltonian(k, 0.0, 45.0, G)
        expected = np.sort(0.5 * np.sum((k + G) ** 2, axis=-1))
        np.testing.assert_allclose(np.linalg.eigvalsh(h), expected, rtol=1e-14, atol=1e-12)
    # the lowest bands on a supercell grid are the lowest free levels at each k
    bands = solve_bands(Supercell(3, 2), 0.0, 30.0, n_bands=6)
    for k, e in zip(bands.k, bands.energies):
        np.testing.assert_allclose(e, free_levels(k, 6), rtol=1e-14, atol=1e-12)


def test_hamiltonian_is_hermitian_and_matches_the_potential():
    rng = np.random.default_rng(1)
    G = plane_wave_basis(3)
    for v, phi in [(1.3, 45.0), (4.44, -17.0), (0.7, 110.0)]:
        k = rng.normal(size=2)
        h = bloch_hamiltonian(k, v, phi, G)
        assert h.shape == (len(G), len(G)) and h.dtype == np.complex128
        np.testing.assert_array_equal(h, h.conj().T)
        # Off-diagonal elements are the Fourier components of potential.moire_potential:
        # Δ_q = (1/A_cell) ∫_cell Δ(r) e^{-iq·r} d²r (an M×M grid is exact for |q| small).
        M = 12
        s = (np.stack(np.meshgrid(np.arange(M), np.arange(M), indexing="ij"), -1).reshape(-1, 2) + 0.5) / M
        r = s @ MOIRE_VECTORS
        delta = np.asarray(moire_potential(jnp.asarray(r), 1.0, v, phi))
        potential = h - np.diag(0.5 * np.sum((k + G) ** 2, axis=-1))
        for i, j in itertools.product(range(len(G)), repeat=2):
            q = G[i] - G[j]
            fourier = np.mean(delta * np.exp(-1j * r @ q))
            assert abs(potential[i, j] - fourier) < 1e-12, (i, j)
        # the nonzero couplings are exactly the six harmonics ±g_j
        assert np.count_nonzero(np.abs(potential[0]) > 1e-14) == 6


def test_convergence_with_cutoff():
    sc = Supercell(2, 1)
    for v in [0.5, 4.44, 10.0]:
        n = converged_shells(v, 45.0, 4)
        auto = solve_bands(sc, v, 45.0, n_bands=4)
        assert len(auto.G) == len(plane_wave_basis(n))
        larger = solve_bands(sc, v, 45.0, n_bands=4, n_shells=n + 1)
        np.testing.assert_allclose(auto.energies, larger.energies, rtol=0, atol=1e-10)
        coarse = solve_bands(sc, v, 45.0, n_bands=4, n_shells=2)
        assert np.max(np.abs(coarse.energies - larger.energies)) > 1e-8  # the cutoff matters
    shells = [converged_shells(v, 45.0) for v in [0.0, 0.5, 4.44, 10.0]]
    assert shells == sorted(shells) and shells[-1] > shells[1]


def test_band_energies_are_periodic_in_k():
    rng = np.random.default_rng(2)
    v, phi = 4.44, 45.0
    G = plane_wave_basis(converged_shells(v, phi) + 1)
    for k in rng.normal(size=(2, 2)):
        e0 = lowest_eigenvalues(bloch_hamiltonian(k, v, phi, G), 5)
        for shift in [B1, B2, -B1 - 2 * B2]:
            e1 = lowest_eigenvalues(bloch_hamiltonian(k + shift, v, phi, G), 5)
            np.testing.assert_allclose(e0, e1, rtol=0, atol=1e-10)
        # a generic shift is not a symmetry
        e2 = lowest_eigenvalues(bloch_hamiltonian(k + 0.3 * B1, v, phi, G), 5)
        assert np.max(np.abs(e0 - e2)) > 1e-3


def test_eigenvectors_solve_the_bloch_hamiltonian():
    bands = solve_bands(Supercell(2, 3), 2.0, 45.0, n_bands=3)
    assert bands.coefficients.shape == (6, 3, len(bands.G))
    for k, e, c in zip(bands.k, bands.energies, bands.coefficients):
        h = bloch_hamiltonian(k, 2.0, 45.0, bands.G)
        np.testing.assert_allclose(h @ c.T, c.T * e, atol=1e-10)
        np.testing.assert_allclose(c.conj() @ c.T, np.eye(3), atol=1e-12)
        assert np.all(np.diff(e) >= 0)


def test_lowest_orbitals_pick_the_lowest_levels():
    sc = Supercell(3, 3)
    for n, v in [(6, 0.0), (6, 4.44), (9, 2.0), (13, 1.0)]:
        orb = lowest_orbitals(sc, n, v, 45.0, n_shells=6)
        bands = solve_bands(sc, v, 45.0, n_bands=n, n_shells=6)
        levels = np.sort(bands.energies.ravel())
        np.testing.assert_allclose(np.sort(orb.energies), levels[:n], atol=1e-10)
        assert orb.coefficients.shape == (n, len(orb.G)) and orb.k.shape == (n, 2)
        assert orb.area == pytest.approx(sc.area)
        # every orbital is on the supercell k-grid
        assert all(np.min(np.linalg.norm(sc.kgrid() - k, axis=1)) < 1e-12 for k in orb.k)
        # deterministic
        again = lowest_orbitals(sc, n, v, 45.0, n_shells=6)
        np.testing.assert_array_equal(again.k, orb.k)
        np.testing.assert_array_equal(again.energies, orb.energies)
    # ν = 2/3 on 3×3 is an open shell at these depths: the 6th level is degenerate with the 7th
    for v in [0.0, 4.44]:
        levels = np.sort(solve_bands(sc, v, 45.0, n_bands=2).energies.ravel())
        assert abs(levels[5] - levels[6]) < 1e-9


def test_orbitals_are_a_pytree():
    orb = lowest_orbitals(Supercell(2, 2), 3, 1.0, 45.0)
    assert isinstance(orb, Orbitals) and len(jax.tree_util.tree_leaves(orb)) == 4
    x = jnp.asarray(np.random.default_rng(3).random((3, 2)))
    jitted = jax.jit(evaluate_orbitals)(orb, x)
    np.testing.assert_allclose(jitted, evaluate_orbitals(orb, x), rtol=1e-13)


def test_orbitals_are_periodic_on_the_supercell():
    sc = Supercell(3, 2)
    orb = lowest_orbitals(sc, 7, 4.44, 45.0)
    x = jnp.asarray(np.random.default_rng(4).random((5, 2)) @ sc.cell)
    phi = evaluate_orbitals(orb, x)
    assert phi.shape == (5, 7)
    for T in [sc.cell[0], sc.cell[1], sc.cell[0] - 2 * sc.cell[1]]:
        np.testing.assert_allclose(evaluate_orbitals(orb, x + T), phi, rtol=0, atol=1e-12)
    # not periodic under a moiré-cell translation (Bloch phase e^{ik·a} ≠ 1 for k ≠ 0)
    assert np.max(np.abs(evaluate_orbitals(orb, x + MOIRE_VECTORS[0]) - phi)) > 1e-3


def test_orbitals_are_orthonormal_on_the_supercell():
    # φ_a* φ_b has wave vectors on the supercell reciprocal lattice, q = p1 B1 + p2 B2
    # with |p_i| ≤ L_i (2 max|m_i| + 1); a uniform M_i grid with M_i > max|p_i| sums exactly.
    sc = Supercell(3, 2)
    orb = lowest_orbitals(sc, 8, 2.0, 45.0, n_shells=4)
    m = np.round(orb.G @ np.linalg.inv(MOIRE_RECIPROCAL)).astype(int)
    M = [L * (2 * np.max(np.abs(m[:, i])) + 1) + 1 for i, L in enumerate((sc.L1, sc.L2))]
    s = np.stack(np.meshgrid(np.arange(M[0]) / M[0], np.arange(M[1]) / M[1], indexing="ij"), -1).reshape(-1, 2)
    phi = np.asarray(evaluate_orbitals(orb, jnp.asarray(s @ sc.cell)))
    overlap = phi.conj().T @ phi * (sc.area / len(s))
    np.testing.assert_allclose(overlap, np.eye(8), rtol=0, atol=1e-12)
