"""Observables against exact results: blocking errors, Bloch-determinant densities, S(q), g(r), crystal order.

Sampled checks use independent Metropolis walkers of exact Slater determinants;
each walker's successive records are pooled into one sample
(``independent_axes=1``), so the error bars are honest standard errors and a
χ²-per-degree-of-freedom criterion over bins / wave vectors is meaningful.
"""

import itertools
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from qernel_cli.hamiltonian.bands import lowest_orbitals, slater_log_psi
from qernel_cli.hamiltonian.potential import moire_potential
from qernel_cli.lattice import MOIRE_VECTORS, Supercell
from qernel_cli.observables import (
    Density,
    Moments,
    annulus_areas,
    bin_averaged_exact_density,
    blocking,
    crystal_order,
    crystal_order_per_sample,
    density_on_grid,
    exact_density,
    fold_to_moire_cell,
    moire_cell_density,
    ordering_vectors,
    pair_correlation,
    structure_factor,
    supercell_q_vectors,
    wigner_seitz_cell,
)
from qernel_cli.vmc.mcmc import adapt_width, initial_walkers, metropolis_sweeps

SC3 = Supercell(3, 3)
SC6 = Supercell(6, 6)


def chi2_per_dof(estimate, error, exact):
    estimate, error, exact = (np.ravel(np.asarray(a, dtype=np.float64)) for a in (estimate, error, exact))
    return float(np.mean(((estimate - exact) / error) ** 2))


def consistent(estimate, error, exact):
    """χ²/dof within 5 of its own standard deviation √(2/dof) of 1."""
    dof = np.size(estimate)
    return chi2_per_dof(estimate, error, exact) < 1.0 + 5.0 * np.sqrt(2.0 / dof)


def sample_determinant(orbitals, supercell, seed, walkers=1024, burn=15, records=12, spacing=10):
    """Metropolis samples of |det φ_j(r_i)|², shape (walkers, records, N, 2)."""
    log_psi = slater_log_psi(orbitals)

    def log_abs(x, c):
        return jnp.real(log_psi(x))

    key = jax.random.PRNGKey(seed)
    n = orbitals.n_orbitals
    w = initial_walkers(log_abs, key, supercell, jnp.zeros((1, 1)), walkers, n, 0.2)
    sweep = jax.jit(lambda w, k: metropolis_sweeps(log_abs, w, k, supercell, spacing))
    for i in range(burn):
        w, acc = sweep(w, jax.random.fold_in(key, i))
        w = adapt_width(w, acc)
    out = []
    for i in range(records):
        w, _ = sweep(w, jax.random.fold_in(key, 1000 + i))
        out.append(np.asarray(w.positions[0]))
    return np.stack(out, axis=1)


def honeycomb(supercell, empty=0):
    """Moiré sites n1 a1 + n2 a2 except the √3×√3 sublattice (n1 − n2) ≡ empty (mod 3): ν = 2/3."""
    n = np.array([(i, j) for i in range(supercell.L1) for j in range(supercell.L2) if (i - j - empty) % 3])
    return n @ MOIRE_VECTORS


@pytest.fixture(scope="module")
def free_fermions():
    """N = 7 closed shell at V = 0 on 3×3: plane waves at k = 0 and the six shortest B."""
    orbitals = lowest_orbitals(SC3, 7, 0.0, 45.0, n_shells=1)
    return orbitals, sample_determinant(orbitals, SC3, seed=0)


@pytest.fixture(scope="module")
def deep_bloch():
    """N = 6 on 3×3 at v = V/E_M = 4.44, φ = 45° (a small basis: exactness, not convergence, matters)."""
    orbitals = lowest_orbitals(SC3, 6, 4.44, 45.0, n_shells=3)
    return orbitals, sample_determinant(orbitals, SC3, seed=1)


# ---------------------------------------------------------------------------- blocking


def test_blocking_iid_error_and_scaling():
    rng = np.random.default_rng(0)
    sigma, T = 2.0, 4096
    short = blocking(sigma * rng.normal(size=T))
    long = blocking(sigma * rng.normal(size=16 * T))
    for b, t in ((short, T), (long, 16 * T)):
        assert abs(b.error / (sigma / np.sqrt(t)) - 1) < 0.12
        assert abs(b.tau - 1.0) < 0.2 and b.converged
    assert abs(short.error / long.error - 4.0) < 0.5
    assert abs(long.mean) < 5 * long.error


def test_blocking_ar1_matches_asymptotic_error():
    rng = np.random.default_rng(1)
    rho, T = 0.9, 1 << 19
    x = scipy.signal.lfilter([1.0], [1.0, -rho], np.sqrt(1 - rho**2) * rng.normal(size=T))  # unit variance
    b = blocking(x)
    exact = np.sqrt((1 + rho) / (1 - rho) / T)
    assert b.converged and b.block_size > 1
    assert abs(b.error / exact - 1) < 0.2, b.error / exact
    assert abs(b.tau / ((1 + rho) / (1 - rho)) - 1) < 0.2
    assert b.error > 3.5 * b.naive_error  # the naive error is √19 ≈ 4.4 times too small
    # elementwise over trailing axes: identical to separate analyses
    stacked = np.stack([x, rng.normal(size=T)], axis=1).reshape(T, 2, 1)
    both = blocking(stacked)
    assert both.error.shape == (2, 1)
    assert both.error[0, 0] == b.error and both.block_size[0, 0] == b.block_size
    assert both.block_size[1, 0] == 1 and both.error[1, 0] < b.error / 3


def test_blocking_short_and_degenerate_series():
    b = blocking(np.array([1.0, 2.0, 4.0]))
    assert np.isclose(b.error, np.std([1.0, 2.0, 4.0], ddof=1) / np.sqrt(3)) and not b.converged
    assert np.isclose(b.mean, 7 / 3)
    assert np.isnan(blocking(np.array([3.0])).error)
    flat = blocking(np.full(100, 1.5))
    assert flat.error == 0.0 and flat.tau == 1.0
    with pytest.raises(ValueError):
        blocking(np.zeros(0))


def test_moments_match_numpy_over_chunks():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(1000, 3)) @ rng.normal(size=(3, 3)) + 5.0
    m = Moments(vector=True)
    for chunk in np.array_split(x, 7):
        m.add(chunk)
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.covariance, np.cov(x.T), rtol=1e-10)
    np.testing.assert_allclose(m.error, x.std(0, ddof=1) / np.sqrt(1000), rtol=1e-10)


# ---------------------------------------------------------------------------- density


def test_density_normalisation_grid_and_folding():
    rng = np.random.default_rng(3)
    positions = rng.normal(scale=4.0, size=(50, 4, 6, 2))  # far outside the cell: wrapped
    d = density_on_grid(positions, SC3, 9)
    assert d.value.shape == (9, 9) and d.n_samples == 200
    assert np.isclose(np.sum(d.value) * d.bin_area, 6.0, rtol=0, atol=1e-12)
    pooled = density_on_grid(positions, SC3, 9, independent_axes=1)
    assert pooled.n_samples == 50
    np.testing.assert_allclose(pooled.value, d.value, rtol=1e-12)
    assert not np.allclose(pooled.error, d.error)
    # bin centres lie in their own bins
    frac = d.centres() @ np.linalg.inv(SC3.cell)
    np.testing.assert_allclose(frac * 9 - 0.5, np.stack(np.meshgrid(range(9), range(9), indexing="ij"), -1), atol=1e-12)
    # one configuration replicated into every moiré cell: all cells identical, the fold is any cell
    base = rng.uniform(size=(20, 2, 2)) @ MOIRE_VECTORS
    shifts = np.array(list(itertools.product(range(3), range(3)))) @ MOIRE_VECTORS
    tiled = (base[:, None] + shifts[None, :, None]).reshape(20, 18, 2)
    folded = fold_to_moire_cell(density_on_grid(tiled, SC3, 12), SC3)
    assert isinstance(folded, Density) and folded.grid == (4, 4)
    np.testing.assert_allclose(folded.value, density_on_grid(tiled, SC3, 12).value[4:8, 8:12], rtol=1e-12)
    np.testing.assert_allclose(folded.value, moire_cell_density(tiled, SC3, 4).value, rtol=1e-12)
    assert np.isclose(np.sum(folded.value) * folded.bin_area, 2.0)  # ν = 18/9
    with pytest.raises(ValueError, match="divisible"):
        fold_to_moire_cell(density_on_grid(tiled, SC3, 10), SC3)


def test_sampled_density_matches_exact_deep_potential(deep_bloch):
    orbitals, samples = deep_bloch
    d = density_on_grid(samples, SC3, 9, independent_axes=1)
    exact = bin_averaged_exact_density(orbitals, SC3, 9)
    assert np.isclose(np.sum(exact) * d.bin_area, 6.0, rtol=1e-6)
    assert consistent(d.value, d.error, exact), chi2_per_dof(d.value, d.error, exact)
    # negative control: the determinant at another depth is rejected
    wrong = bin_averaged_exact_density(lowest_orbitals(SC3, 6, 3.5, 45.0, n_shells=3), SC3, 9)
    assert not consistent(d.value, d.error, wrong)
    # the exact density has the moiré periodicity, and so has the sample within its errors
    np.testing.assert_allclose(exact, np.tile(fold_to_moire_cell(exact, SC3), (3, 3)), rtol=1e-10)
    cell = moire_cell_density(samples, SC3, 3, independent_axes=1)
    np.testing.assert_allclose(cell.value, fold_to_moire_cell(d, SC3).value, rtol=1e-12)
    assert consistent(cell.value, cell.error, fold_to_moire_cell(exact, SC3))
    # the density peaks at the deepest potential minimum, r = 0 for φ = 45°
    s = np.linspace(0, 1, 61)[:-1]
    points = np.stack(np.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2) @ MOIRE_VECTORS
    n = exact_density(orbitals, points)
    assert np.argmax(n) == 0 and np.argmin(moire_potential(points, 1.0, 4.44, 45.0)) == 0
    fine = moire_cell_density(samples, SC3, 6, independent_axes=1)
    i, j = np.unravel_index(np.argmax(fine.value), fine.grid)
    assert i in (0, 5) and j in (0, 5)  # a bin touching the corner r = 0
    assert fine.value[i, j] > 2.5 * np.mean(fine.value)


def test_free_fermion_density_is_uniform(free_fermions):
    orbitals, samples = free_fermions
    np.testing.assert_allclose(exact_density(orbitals, np.random.default_rng(4).normal(size=(50, 2))), 7 / SC3.area)
    d = density_on_grid(samples, SC3, 9, independent_axes=1)
    assert consistent(d.value, d.error, 7 / SC3.area)
    # the deep-potential density is not uniform (negative control of the criterion)
    assert not consistent(d.value, d.error, bin_averaged_exact_density(lowest_orbitals(SC3, 7, 1.0, 45.0, 3), SC3, 9))


# ---------------------------------------------------------------------------- structure


def test_results_do_not_depend_on_chunking(monkeypatch):
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(12, 9, 6, 2)) @ SC3.cell
    q, _ = supercell_q_vectors(SC3, 6.0)

    def run():
        return (
            density_on_grid(x, SC3, 9, independent_axes=1),
            structure_factor(x, q, independent_axes=1, supercell=SC3),
            pair_correlation(x, SC3, 10, independent_axes=1),
        )

    reference = run()
    for name in ("blocking", "density", "structure"):
        monkeypatch.setattr(sys.modules[f"qernel_cli.observables.{name}"], "CHUNK_ELEMENTS", 300)
    chunked = run()
    for a, b in zip(reference, chunked):
        for field in ("value", "error", "connected", "connected_error", "g"):
            if hasattr(a, field):
                np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-12, atol=1e-14)


def test_q_vectors_and_ordering_vectors():
    q, labels = supercell_q_vectors(SC3, 3.0 * np.linalg.norm(SC3.reciprocal[0]) + 1e-9)
    np.testing.assert_allclose(q, labels @ SC3.reciprocal)
    assert np.all(np.any(labels != 0, axis=1))
    assert {tuple(m) for m in labels} == {tuple(-m) for m in labels}
    # shells of the triangular lattice up to radius 3|B|: 6 + 6 + 6 + 12 + 6
    assert len(q) == 36 and np.all(np.diff(np.linalg.norm(q, axis=1)) > -1e-12)
    K = ordering_vectors(SC6)
    assert K.shape == (6, 2)
    np.testing.assert_allclose(np.linalg.norm(K, axis=1), 4 * np.pi / 3)
    phases = (K @ MOIRE_VECTORS.T) / (2 * np.pi / 3)  # K·a_i in units of 2π/3
    np.testing.assert_allclose(np.mod(phases[:3], 3), [[1, 2]] * 3, atol=1e-12)
    np.testing.assert_allclose(np.mod(phases[3:], 3), [[2, 1]] * 3, atol=1e-12)
    m = K @ SC6.cell.T / (2 * np.pi)  # on the supercell reciprocal lattice
    np.testing.assert_allclose(m, np.round(m), atol=1e-12)
    with pytest.raises(ValueError, match="divisible by 3"):
        ordering_vectors(Supercell(4, 6))


def test_uncorrelated_particles():
    rng = np.random.default_rng(5)
    positions = rng.uniform(size=(2000, 24, 2)) @ SC6.cell
    q, _ = supercell_q_vectors(SC6, 8.0)
    sq = structure_factor(positions, q)
    fast = structure_factor(positions, q, supercell=SC6)  # factorised e^{-i m1 B1·r} e^{-i m2 B2·r}
    np.testing.assert_allclose(fast.value, sq.value, rtol=1e-10)
    np.testing.assert_allclose(fast.rho_mean, sq.rho_mean, atol=1e-10)
    assert consistent(sq.value, sq.error, 1.0)
    assert consistent(sq.connected, sq.connected_error, 1.0)
    assert not consistent(sq.value, sq.error, 0.9)
    m = crystal_order(positions, SC6)
    assert m.liquid == 4 / 24 and abs(m.value - m.liquid) < 4 * m.error and m.n_samples == 2000
    # g(r) = 1 out to the Wigner–Seitz circumradius (exact annulus ∩ WS-cell areas)
    r_max = np.max(np.linalg.norm(wigner_seitz_cell(SC6.cell), axis=1))
    g = pair_correlation(positions, SC6, 25, r_max=r_max)
    assert consistent(g.g, g.error, 1.0)
    assert np.isclose(np.sum(annulus_areas(SC6.cell, g.edges)), SC6.area)
    # negative control: the naive 2πr dr normalisation fails beyond the inscribed radius
    naive = g.g * annulus_areas(SC6.cell, g.edges) / (np.pi * np.diff(g.edges**2))
    assert not consistent(naive, g.error, 1.0)
    with pytest.raises(ValueError, match="circumradius"):
        pair_correlation(positions, SC6, 10, r_max=1.01 * r_max)


def test_perfect_crystal():
    sites = [honeycomb(SC6, empty) for empty in range(3)]
    N = len(sites[0])
    assert N == 24
    K = ordering_vectors(SC6)
    for x in sites:
        sq = structure_factor(x, K)
        # |ρ_K| = |1 + e^{2πi/3}|·N/2 = N/2 for two occupied sublattices: S(K) = N/4, m² = 1
        np.testing.assert_allclose(sq.value, N / 4, rtol=1e-12)
        m = crystal_order(np.stack([x, x + MOIRE_VECTORS[0] * 3]), SC6)
        assert np.isclose(m.value, 1.0, rtol=1e-12) and m.error < 1e-12
    one_sublattice = np.array([(i, j) for i in range(6) for j in range(6) if (i - j) % 3 == 0]) @ MOIRE_VECTORS
    np.testing.assert_allclose(structure_factor(one_sublattice, K).value, len(one_sublattice), rtol=1e-12)
    # the three patterns, related by translations by a_1, have phases 2π/3 apart
    per = crystal_order_per_sample(np.stack([sites[0], sites[0] + MOIRE_VECTORS[0], sites[0] + 2 * MOIRE_VECTORS[0]]), SC6)
    np.testing.assert_allclose(per.m2, 1.0, rtol=1e-12)
    step = np.angle(np.exp(1j * np.diff(per.phase)))
    np.testing.assert_allclose(step, -2 * np.pi / 3, atol=1e-10)
    # emptying sublattice 1 instead of 0 is the translation by a_1 (wrapped into the cell)
    assert np.isclose(np.exp(1j * crystal_order_per_sample(sites[1], SC6).phase), np.exp(1j * per.phase[1]))
    # a random liquid is far from ordered (negative control)
    assert crystal_order(np.random.default_rng(6).uniform(size=(50, N, 2)) @ SC6.cell, SC6).value < 0.4
    # g(r): nothing below the nearest-neighbour distance a_M, the first peak contains it
    g = pair_correlation(sites[0], SC6, 64)
    first = np.flatnonzero(g.g > 0)[0]
    assert g.edges[first] <= 1.0 < g.edges[first + 1]
    assert np.all(g.g[:first] == 0)
    # each electron has 3 honeycomb neighbours there: 3N ordered pairs over N(N−1)·(annulus area)/A
    expected = 3 * N / (N * (N - 1) * np.pi * np.diff(g.edges[first : first + 2] ** 2)[0] / SC6.area)
    assert np.isclose(g.g[first], expected, rtol=1e-12)


def exact_free_fermion_sq(k_labels, q_labels):
    """S(q) = 1 − #{k occupied: k + q occupied}/N for a plane-wave determinant (q ≠ 0)."""
    occupied = {tuple(k) for k in k_labels}
    return np.array([1 - sum((k[0] + q[0], k[1] + q[1]) in occupied for k in occupied) / len(occupied) for q in q_labels])


def test_free_fermion_structure_factor_and_pauli_hole(free_fermions):
    orbitals, samples = free_fermions
    N = orbitals.n_orbitals
    # the orbitals are the single plane waves e^{ik·r}, k = 0 and the six shortest B
    assert np.all(np.sum(np.abs(orbitals.coefficients) > 1e-12, axis=1) == 1)
    k_frac = orbitals.k @ np.linalg.inv(SC3.reciprocal)
    k_labels = np.round(k_frac).astype(int)
    np.testing.assert_allclose(k_frac, k_labels, atol=1e-12)
    assert {tuple(k) for k in k_labels} == {(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1)}
    q, q_labels = supercell_q_vectors(SC3, 3.0 * np.linalg.norm(SC3.reciprocal[0]) + 1e-9)
    exact = exact_free_fermion_sq(k_labels, q_labels)
    assert set(np.round(exact * 7).astype(int)) == {3, 5, 6, 7}
    sq = structure_factor(samples, q, independent_axes=1)
    assert consistent(sq.value, sq.error, exact), chi2_per_dof(sq.value, sq.error, exact)
    assert consistent(sq.connected, sq.connected_error, exact)  # ⟨ρ_q⟩ = 0
    assert not consistent(sq.value, sq.error, 1.0)  # uncorrelated particles are rejected
    # g(r) against the exact pair density n²(1 − |Σ_k e^{ik·d}|²/N²) averaged over each annulus
    g = pair_correlation(samples, SC3, 15, independent_axes=1)
    s = (np.arange(300) + 0.5) / 300
    d = np.stack(np.meshgrid(s, s, indexing="ij"), -1).reshape(-1, 2) @ SC3.cell
    d = np.asarray(SC3.minimum_image(d))
    g_d = N / (N - 1) * (1 - np.abs(np.sum(np.exp(1j * d @ orbitals.k.T), axis=1)) ** 2 / N**2)
    which = np.digitize(np.linalg.norm(d, axis=1), g.edges) - 1
    exact_g = np.array([np.mean(g_d[which == b]) for b in range(len(g.r))])
    assert consistent(g.g, g.error, exact_g), chi2_per_dof(g.g, g.error, exact_g)
    assert not consistent(g.g, g.error, np.ones_like(exact_g))
    assert g.g[0] < 0.05 and exact_g[0] < 0.02  # Pauli hole: g(r → 0) → 0
