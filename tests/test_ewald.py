"""Tests of the 2D Ewald Coulomb energy (qernel_cli.hamiltonian.ewald).

Reference values used here come from outside the code under test:
- triangular Wigner crystal with background: E/N = −1.1061026/r_s Hartree
  (Bonsall & Maradudin, PRB 15, 1959 (1977));
- square lattice, one charge per cell of side a: E/N = ½·4ζ(½)β(½)/a
  (Epstein zeta of the square lattice = 4ζ(s)β(s)), with ζ from scipy and β by
  quadrature;
- pair-potential differences by brute-force direct lattice summation over a
  disc, with the analytic 1/R_max tail.
"""

from __future__ import annotations

import math
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

from qernel_cli.hamiltonian.ewald import EwaldSum, ewald_energy, reduce_cell
from qernel_cli.lattice import MOIRE_VECTORS, Supercell

TRIANGULAR_MADELUNG = -1.1061026  # E/N · r_s, Hartree·Bohr
SQRT3 = math.sqrt(3.0)

CELLS = {
    "moire3x3": Supercell(3, 3).cell,
    "rectangular": np.array([[2.0, 0.0], [0.0, 3.3]]),
    # Non-reduced and skewed: Gauss reduction gives (1.3, 0.2), (0.3, 1.1).
    "skewed": np.array([[1.3, 0.2], [2.9, 1.5]]),
}


@eqx.filter_jit
def _energies(ewald, batch):
    """Energies of a batch (B, N, 2) of configurations: one compile per module and shape."""
    return jax.vmap(ewald)(batch)


@eqx.filter_jit
def _grad(ewald, positions):
    return jax.grad(ewald)(positions)


@eqx.filter_jit
def _pair_potential(ewald, displacements):
    return ewald.pair_potential(displacements)


def _energy(ewald, positions):
    return float(_energies(ewald, jnp.asarray(positions)[None])[0])


def _random_positions(cell, n, seed):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(size=(n, 2)) @ np.asarray(cell))


def _energy_scale(cell, n):
    """Typical magnitude of the pair sums, N²/√A, for absolute tolerances."""
    return n * n / math.sqrt(abs(np.linalg.det(cell)))


# ---------------------------------------------------------------------------
# κ-independence and invariances


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("n", [2, 7])
def test_kappa_independence(name, n):
    cell = CELLS[name]
    area = abs(np.linalg.det(cell))
    rng = np.random.default_rng(n)
    batch = jnp.asarray(rng.uniform(-1.0, 2.0, size=(4, n, 2)) @ cell)  # some outside the cell
    energies = []
    for c in (3.0, 6.0, 12.0):  # κ√A spanning a factor 4: from many images to few
        ewald = EwaldSum(cell, kappa=c / math.sqrt(area))
        energies.append(np.asarray(_energies(ewald, batch)))
    scale = np.maximum(np.abs(energies[0]), _energy_scale(cell, n))
    for e in energies[1:]:
        assert np.all(np.abs(e - energies[0]) <= 1e-10 * scale), energies


@pytest.mark.parametrize("name", sorted(CELLS))
def test_xi_kappa_independence(name):
    """ξ alone (the N = 1 energy, twice) does not depend on κ either."""
    cell = CELLS[name]
    area = abs(np.linalg.det(cell))
    xis = [float(EwaldSum(cell, kappa=c / math.sqrt(area)).xi) for c in (1.0, 3.0, 6.0, 12.0, 30.0)]
    np.testing.assert_allclose(xis, xis[0], rtol=1e-11)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_kappa_changes_the_split_not_the_sum(name):
    """The pieces depend on κ (so the test above is not vacuous), their sum does not."""
    cell = CELLS[name]
    area = abs(np.linalg.det(cell))
    positions = _random_positions(cell, 5, seed=11)
    small, large = EwaldSum(cell, kappa=3.0 / math.sqrt(area)), EwaldSum(cell, kappa=12.0 / math.sqrt(area))
    assert small.n_images > large.n_images and small.n_gvectors < large.n_gvectors
    pieces = eqx.filter_jit(lambda m, x: jnp.stack([m.real_space(x), m.reciprocal_space(x)]))
    assert np.all(np.abs(np.asarray(pieces(small, positions) - pieces(large, positions))) > 1e-3)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_supercell_translation_invariance(name):
    cell = CELLS[name]
    t1, t2 = np.asarray(cell)
    ewald = EwaldSum(cell)
    positions = _random_positions(cell, 6, seed=3)
    configs = [positions]
    for shift in (t1, -t1, t2, -t2, t1 - t2, 3 * t1 + 2 * t2):
        for i in (0, 4):
            configs.append(positions.at[i].add(jnp.asarray(shift)))
    # every electron by a different lattice vector, far from the cell
    rng = np.random.default_rng(0)
    configs.append(positions + jnp.asarray(rng.integers(-20, 20, size=(6, 2)) @ np.asarray(cell)))
    # a global (non-lattice) translation
    configs.append(positions + jnp.asarray([0.37, -1.91]))
    energies = np.asarray(_energies(ewald, jnp.stack(configs)))
    np.testing.assert_allclose(energies, energies[0], rtol=0, atol=1e-11 * _energy_scale(cell, 6))
    # a non-lattice move of one electron does change the energy
    moved = positions.at[0].add(jnp.asarray(0.5 * t1))
    assert abs(_energy(ewald, moved) - energies[0]) > 1e-6


def test_permutation_invariance():
    cell = CELLS["moire3x3"]
    ewald = EwaldSum(cell)
    positions = _random_positions(cell, 6, seed=5)
    perm = np.array([3, 0, 5, 1, 4, 2])
    energies = np.asarray(_energies(ewald, jnp.stack([positions, positions[perm]])))
    assert energies[1] == pytest.approx(energies[0], rel=1e-13)


# ---------------------------------------------------------------------------
# Absolute values against known lattice sums


def _triangular_crystal(spacing, n1, n2, offset):
    """Triangular lattice of spacing a: n1 × n2 points in the cell n1·a(1,0), n2·a(½,√3/2)."""
    basis = spacing * MOIRE_VECTORS
    i, j = np.meshgrid(np.arange(n1), np.arange(n2), indexing="ij")
    points = np.stack([i.ravel(), j.ravel()], axis=-1) @ basis + offset
    cell = np.array([n1, n2])[:, None] * basis
    return points, cell


def _sqrt3_crystal(spacing, n1, n2, offset):
    """√3×√3 crystal of spacing a on 1/3 of the sites of an n1 × n2 moiré supercell (period a/√3)."""
    moire = spacing / SQRT3
    sites, cell = _triangular_crystal(moire, n1, n2, 0.0)
    frac = np.rint(sites @ np.linalg.inv(moire * MOIRE_VECTORS)).astype(int)
    keep = (frac[:, 0] - frac[:, 1]) % 3 == 0
    return sites[keep] + offset, cell


def _centred_rectangular(spacing, m1, m2, offset):
    """Triangular lattice in a rectangular m1·a × m2·√3a cell (two points per a × √3a)."""
    base = np.array([[0.0, 0.0], [0.5, 0.5 * SQRT3]]) * spacing
    i, j = np.meshgrid(np.arange(m1), np.arange(m2), indexing="ij")
    corners = np.stack([i.ravel() * spacing, j.ravel() * SQRT3 * spacing], axis=-1)
    points = (corners[:, None, :] + base[None]).reshape(-1, 2) + offset
    cell = np.array([[m1 * spacing, 0.0], [0.0, m2 * SQRT3 * spacing]])
    return points, cell


CRYSTALS = [
    ("1x1 moire, N=1", lambda a, o: _triangular_crystal(a, 1, 1, o)),
    ("2x2, N=4", lambda a, o: _triangular_crystal(a, 2, 2, o)),
    ("3x3, N=9", lambda a, o: _triangular_crystal(a, 3, 3, o)),
    ("6x6, N=36", lambda a, o: _triangular_crystal(a, 6, 6, o)),
    ("3x2 elongated, N=6", lambda a, o: _triangular_crystal(a, 3, 2, o)),
    ("6x6 moire sqrt3 crystal, N=12", lambda a, o: _sqrt3_crystal(a, 6, 6, o)),
    ("rectangular, N=2", lambda a, o: _centred_rectangular(a, 1, 1, o)),
    ("rectangular 2x3, N=12", lambda a, o: _centred_rectangular(a, 2, 3, o)),
]


@pytest.mark.parametrize("r_s", [1.7, 30.0])
@pytest.mark.parametrize("label,build", CRYSTALS, ids=[c[0] for c in CRYSTALS])
def test_triangular_wigner_crystal_madelung(label, build, r_s):
    # Nearest-neighbour spacing a from π r_s² = (√3/2) a² (lengths in Bohr).
    spacing = math.sqrt(2.0 * math.pi / SQRT3) * r_s
    points, cell = build(spacing, np.array([0.31, -0.77]) * spacing)
    n = len(points)
    assert abs(np.linalg.det(cell)) / n == pytest.approx(math.pi * r_s**2)
    energy = _energy(EwaldSum(cell, n_electrons=n), points)
    assert energy / n * r_s == pytest.approx(TRIANGULAR_MADELUNG, rel=1e-6)


def _dirichlet_beta_half():
    """β(½) = Σ_k (−1)^k/√(2k+1) = (1/√π)∫_0^∞ t^{−½} e^{−t}/(1+e^{−2t}) dt, t = u²."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.integrate.IntegrationWarning)
        value, _ = scipy.integrate.quad(lambda u: 1.0 / math.cosh(u * u), 0.0, 8.0, epsabs=1e-15, epsrel=1e-14)
    return value / math.sqrt(math.pi)


def test_square_lattice_madelung():
    zeta_half = float(scipy.special.zeta(0.5))
    beta_half = _dirichlet_beta_half()
    # the literature values, as a check on the quadrature itself
    assert zeta_half == pytest.approx(-1.4603545088095868, rel=1e-13)
    assert beta_half == pytest.approx(0.6676914571896092, rel=1e-12)
    madelung = 4.0 * zeta_half * beta_half  # Σ'_R 1/|R| with background, a = 1: −3.90026492
    for a, n_side in ((1.0, 1), (2.5, 1), (0.8, 3)):
        i, j = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
        points = a * np.stack([i.ravel(), j.ravel()], axis=-1) + np.array([0.1, 0.2])
        ewald = EwaldSum(a * n_side * np.eye(2))
        energy = _energy(ewald, points)
        assert energy / n_side**2 == pytest.approx(0.5 * madelung / a, rel=1e-10)


def _direct_pair_difference(cell, d1, d2, r_max):
    """Σ_R [1/|d1+R| − 1/|d2+R|] over a disc |R| ≤ r_max, plus the analytic tail.

    The R ↔ −R symmetric sum of 1/|R+d| has the tail Σ_{|R|>r_max} d²/(4R³) →
    π d²/(2 A r_max) (isotropic average of the second-order Taylor term).
    """
    cell = np.asarray(cell)
    area = abs(np.linalg.det(cell))
    m_max = int(r_max * np.linalg.norm(np.linalg.inv(cell), axis=0).max()) + 2
    m = np.arange(-m_max, m_max + 1)
    mm, nn = np.meshgrid(m, m, indexing="ij")
    lattice = np.stack([mm.ravel(), nn.ravel()], axis=-1) @ cell
    lattice = lattice[np.linalg.norm(lattice, axis=-1) <= r_max]
    direct = np.sum(1.0 / np.linalg.norm(lattice + d1, axis=-1)) - np.sum(1.0 / np.linalg.norm(lattice + d2, axis=-1))
    return direct + math.pi * (d1 @ d1 - d2 @ d2) / (2.0 * area * r_max)


@pytest.mark.parametrize("name", ["rectangular", "skewed"])
def test_energy_differences_against_direct_summation(name):
    """E(config 1) − E(config 2) equals brute-force lattice sums of 1/r over the pairs."""
    cell = CELLS[name]
    ewald = EwaldSum(cell)
    r_max = 120.0 * math.sqrt(abs(np.linalg.det(cell)))
    p1 = np.asarray(_random_positions(cell, 3, seed=21))
    p2 = np.asarray(_random_positions(cell, 3, seed=22))
    reference = 0.0
    for i, j in ((0, 1), (0, 2), (1, 2)):
        reference += _direct_pair_difference(cell, p1[i] - p1[j], p2[i] - p2[j], r_max)
    e1, e2 = np.asarray(_energies(ewald, jnp.asarray(np.stack([p1, p2]))))
    difference = e1 - e2
    assert difference == pytest.approx(reference, rel=2e-5, abs=2e-5 * _energy_scale(cell, 3))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_energy_matches_pair_potential_formula(name):
    """E = ½ Σ_{i≠j} ψ(r_ij) + ½Nξ (the design formula, via the direct G sum)."""
    cell = CELLS[name]
    ewald = EwaldSum(cell)
    n = 6
    positions = _random_positions(cell, n, seed=8) + jnp.asarray([5.0, -3.0])  # unwrapped
    i, j = np.where(~np.eye(n, dtype=bool))
    psi = _pair_potential(ewald, positions[i] - positions[j])
    expected = 0.5 * float(jnp.sum(psi)) + 0.5 * n * float(ewald.xi)
    assert _energy(ewald, positions) == pytest.approx(expected, rel=1e-11, abs=1e-11 * _energy_scale(cell, n))


@pytest.mark.parametrize("kappa_sqrt_area", [None, 12.0])
def test_two_electrons_at_wigner_seitz_corner(kappa_sqrt_area):
    """E(N=2) = ψ(d) + ξ also where the shortest image of d leaves the reduced parallelogram."""
    supercell = Supercell(3, 3)
    cell = supercell.cell
    kappa = None if kappa_sqrt_area is None else kappa_sqrt_area / math.sqrt(supercell.area)
    ewald = EwaldSum(cell, kappa=kappa, n_electrons=2)
    # near the Wigner–Seitz vertex (0, L/√3), fractional coordinate ≈ 2/3 along T_2
    for d in (np.array([0.0, 0.98 * 3 / SQRT3]), np.array([0.01, -0.97 * 3 / SQRT3])):
        psi = np.asarray(_pair_potential(ewald, jnp.asarray([d, np.asarray(supercell.minimum_image(jnp.asarray(d)))])))
        energy = _energy(ewald, np.stack([np.zeros(2), d]))
        assert psi[1] == pytest.approx(psi[0], rel=1e-12)
        assert energy == pytest.approx(float(psi[0] + ewald.xi), rel=1e-11)


def test_pair_potential_is_even_periodic_and_coulombic():
    cell = CELLS["skewed"]
    ewald = EwaldSum(cell)
    d = np.array([0.23, 0.41])
    t1, t2 = np.asarray(cell)
    near = [1e-3, 1e-4]
    psi = np.asarray(_pair_potential(ewald, jnp.asarray([d, -d, d + 2 * t1 - t2, [near[0], 0.0], [near[1], 0.0]])))
    assert psi[1] == pytest.approx(psi[0], rel=1e-13)
    assert psi[2] == pytest.approx(psi[0], rel=1e-12)
    # short distances: ψ(r) − 1/r tends to a constant
    assert psi[3] - 1.0 / near[0] == pytest.approx(psi[4] - 1.0 / near[1], abs=1e-2)


def test_single_electron_is_half_xi():
    for cell in CELLS.values():
        ewald = EwaldSum(cell)
        energies = np.asarray(_energies(ewald, jnp.asarray([[[0.0, 0.0]], [[0.3, -7.1]]])))
        np.testing.assert_allclose(energies, 0.5 * float(ewald.xi), rtol=1e-12)


# ---------------------------------------------------------------------------
# Transformations: grad, jit, vmap


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradient_matches_finite_differences(name):
    cell = CELLS[name]
    ewald = EwaldSum(cell)
    n = 5
    positions = _random_positions(cell, n, seed=13) + jnp.asarray([11.0, -4.0])
    grad = np.asarray(_grad(ewald, positions))
    assert np.all(np.isfinite(grad))
    assert np.sum(grad, axis=0) == pytest.approx(np.zeros(2), abs=1e-10 * np.abs(grad).max())  # Newton III
    h = 1e-5
    steps = h * np.eye(2 * n).reshape(2 * n, n, 2)
    plus = np.asarray(_energies(ewald, positions + steps))
    minus = np.asarray(_energies(ewald, positions - steps))
    fd = ((plus - minus) / (2 * h)).reshape(n, 2)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7 * np.abs(grad).max())


def test_gradient_finite_for_one_and_two_electrons():
    ewald = EwaldSum(CELLS["moire3x3"])
    g1 = _grad(ewald, jnp.asarray([[0.5, 0.5]]))
    np.testing.assert_allclose(np.asarray(g1), 0.0, atol=1e-12)
    two = jnp.asarray([[[0.0, 0.0], [1.5, 0.2]], [[0.0, 0.0], [0.1, 0.0]]])
    g2 = np.asarray(jax.vmap(lambda x: _grad(ewald, x))(two))
    assert np.all(np.isfinite(g2)) and np.abs(g2).max() > 0
    # the pair repels: at short range E falls as electron 1 moves away from electron 0
    assert g2[1, 1, 0] < 0.0 < g2[1, 0, 0]


def test_force_vanishes_in_perfect_crystal():
    points, cell = _triangular_crystal(1.0, 3, 3, np.array([0.2, 0.1]))
    grad = np.asarray(_grad(EwaldSum(cell), jnp.asarray(points)))
    np.testing.assert_allclose(grad, 0.0, atol=1e-11)


def test_vmap_jit_and_loop_agree():
    cell = Supercell(6, 6).cell
    ewald = EwaldSum(cell, n_electrons=24)
    rng = np.random.default_rng(4)
    batch = jnp.asarray(rng.uniform(size=(6, 24, 2)) @ cell)
    batched = np.asarray(jax.jit(jax.vmap(ewald))(batch))
    single = jax.jit(lambda x: ewald(x))  # the module closed over
    looped = np.array([float(single(x)) for x in batch])
    np.testing.assert_allclose(batched, looped, rtol=1e-12)
    # the module as an argument of a filter-jitted function
    np.testing.assert_allclose(np.asarray(_energies(ewald, batch)), looped, rtol=1e-12)
    # batched gradients
    grads = jax.jit(jax.vmap(jax.grad(ewald)))(batch)
    np.testing.assert_allclose(np.asarray(grads[3]), np.asarray(_grad(ewald, batch[3])), rtol=1e-10, atol=1e-12)


def test_functional_api_matches_module():
    cell = CELLS["rectangular"]
    positions = _random_positions(cell, 4, seed=2)
    reference = _energy(EwaldSum(cell), positions)
    functional = jax.jit(lambda x: jnp.stack([ewald_energy(x, cell), ewald_energy(x, cell, kappa=1.0)]))
    np.testing.assert_allclose(np.asarray(functional(positions)), reference, rtol=1e-10)


def test_units_scale_as_inverse_length():
    cell = CELLS["skewed"]
    positions = _random_positions(cell, 4, seed=9)
    e1 = _energy(EwaldSum(cell), positions)
    e2 = _energy(EwaldSum(2.5 * cell), 2.5 * positions)
    assert e2 == pytest.approx(e1 / 2.5, rel=1e-11)


# ---------------------------------------------------------------------------
# Construction


def test_reduce_cell_spans_the_same_lattice():
    cell = CELLS["skewed"]
    reduced = reduce_cell(cell)
    a, b = reduced
    assert a @ a <= b @ b + 1e-12 and 0.0 <= a @ b <= 0.5 * (a @ a) + 1e-12
    change = reduced @ np.linalg.inv(cell)  # integer and unimodular
    np.testing.assert_allclose(change, np.rint(change), atol=1e-12)
    assert abs(round(np.linalg.det(change))) == 1


def test_default_kappa_keeps_moire150_cheap():
    ewald = EwaldSum(Supercell(15, 15).cell, n_electrons=150)
    assert ewald.n_images <= 9
    assert ewald.n_gvectors <= 1000


@pytest.mark.parametrize(
    "cell", [np.zeros((2, 2)), np.array([[1.0, 0.0], [2.0, 0.0]]), np.ones(3), np.array([[np.nan, 0], [0, 1.0]])]
)
def test_bad_cells_are_rejected(cell):
    with pytest.raises(ValueError):
        EwaldSum(cell)


def test_bad_kappa_and_tol_are_rejected():
    with pytest.raises(ValueError):
        EwaldSum(np.eye(2), kappa=-1.0)
    with pytest.raises(ValueError):
        EwaldSum(np.eye(2), tol=0.0)
