"""Exact diagonalisation (qernel_cli.exact) against independent constructions and exact results."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.exact.band_basis import band_basis, momentum_label
from qernel_cli.exact.coulomb_matrix import coulomb_matrix
from qernel_cli.exact.diagonalise import ExactProblem, FewElectrons
from qernel_cli.hamiltonian.bands import Orbitals, evaluate_orbitals, lowest_orbitals
from qernel_cli.hamiltonian.ewald import EwaldSum
from qernel_cli.lattice import MOIRE_RECIPROCAL, Supercell


def _plane_wave_components(basis, a):
    """{absolute integer momentum p: c_a} for orbital a."""
    L = np.array([basis.supercell.L1, basis.supercell.L2])
    p = basis.momentum[a] + L * basis.G_index
    return {tuple(x): c for x, c in zip(p, basis.coefficients[a]) if abs(c) > 0}


def _brute_force_coulomb(basis, strength):
    """V_abcd from plane-wave sums over every Q (no FFTs, no momentum blocks)."""
    m = basis.n_orbitals
    comps = [_plane_wave_components(basis, a) for a in range(m)]

    def form(a, c):  # {Q: <a|e^{iQr}|c>}
        out = {}
        for pa, ca in comps[a].items():
            for pc, cc in comps[c].items():
                q = (pa[0] - pc[0], pa[1] - pc[1])
                out[q] = out.get(q, 0) + np.conj(ca) * cc
        return out

    forms = {(a, c): form(a, c) for a in range(m) for c in range(m)}
    V = np.zeros((m,) * 4, complex)
    for a, b, c, d in itertools.product(range(m), repeat=4):
        f1, f2 = forms[a, c], forms[b, d]
        total = 0
        for q, value in f1.items():
            if q == (0, 0) or (-q[0], -q[1]) not in f2:
                continue
            total += value * f2[(-q[0], -q[1])] / np.linalg.norm(basis.wavevectors(np.array(q)))
        V[a, b, c, d] = 2 * np.pi * strength / basis.supercell.area * total
    return V


def _brute_force_hamiltonian(problem):
    """H on all N-electron bit strings from c†c†cc with explicit fermionic signs; returns its eigenvalues."""
    space, basis, n = problem.space, problem.basis, problem.n_electrons
    m = basis.n_orbitals
    V = _brute_force_coulomb(basis, problem.coulomb.strength)
    size = space.size
    states = [s for s in itertools.combinations(range(size), n)
              if sum(1 for x in s if x < m) == problem.n_up]
    index = {s: i for i, s in enumerate(states)}

    def annihilate(state, j):
        if j not in state:
            return None, 0
        return tuple(x for x in state if x != j), (-1) ** state.index(j)

    def create(state, j):
        if j in state:
            return None, 0
        new = tuple(sorted(state + (j,)))
        return new, (-1) ** new.index(j)

    H = np.zeros((len(states),) * 2, complex)
    for i, s in enumerate(states):
        H[i, i] += sum(basis.energies[x % m] for x in s) + problem.coulomb.constant(n)
        for a, b, c, d in itertools.product(range(size), repeat=4):
            if a // m != c // m or b // m != d // m:
                continue
            value = 0.5 * V[a % m, b % m, c % m, d % m]
            if value == 0:
                continue
            sign = 1
            t = s
            for op, j in ((annihilate, c), (annihilate, d), (create, b), (create, a)):
                t, sg = op(t, j)
                if t is None:
                    break
                sign *= sg
            if t is not None:
                H[index[t], i] += value * sign
    return np.linalg.eigvalsh(H)


def test_coulomb_matrix_matches_plane_wave_sums():
    basis = band_basis(Supercell(2, 1), v=1.5, phi_deg=30.0, n_bands=3, n_shells=3)
    V = _brute_force_coulomb(basis, 4.0)
    cm = coulomb_matrix(basis, 4.0)
    a, b, c, d = np.indices((basis.n_orbitals,) * 4)
    conserved = momentum_label(basis.momentum[a] + basis.momentum[b] - basis.momentum[c] - basis.momentum[d], basis.supercell) == 0
    assert np.all(np.abs(V[~conserved]) < 1e-12)
    np.testing.assert_allclose(cm(a, b, c, d)[conserved], V[conserved], atol=1e-11)
    assert np.max(np.abs(V)) > 0.1


@pytest.mark.parametrize("n_up,n_down", [(3, 0), (2, 1)])
def test_sector_spectra_equal_the_bit_string_hamiltonian(n_up, n_down):
    problem = ExactProblem(FewElectrons(Supercell(2, 1), v=1.5, phi_deg=30.0, strength=4.0, n_up=n_up, n_down=n_down), n_bands=2, n_shells=3)
    spectra = []
    for sector in problem.sectors():
        h = problem.hamiltonian(sector).dense()
        np.testing.assert_allclose(h, h.conj().T, atol=1e-12)
        spectra.append(np.linalg.eigvalsh(h))
    np.testing.assert_allclose(np.sort(np.concatenate(spectra)), _brute_force_hamiltonian(problem), atol=1e-10)


@pytest.mark.parametrize("n_up,n_down", [(3, 0), (2, 1)])
def test_determinant_energies_are_the_diagonal_of_the_hamiltonian(n_up, n_down):
    problem = ExactProblem(FewElectrons(Supercell(2, 1), v=1.5, phi_deg=30.0, strength=4.0, n_up=n_up, n_down=n_down), n_bands=2, n_shells=3)
    lowest = np.inf
    for sector in problem.sectors():
        h = problem.hamiltonian(sector)
        diagonal = np.diag(h.dense())
        np.testing.assert_allclose(problem.determinant_energies(sector), diagonal.real, atol=1e-12)
        assert np.ptp(diagonal.real - h.diagonal) > 1e-3  # the interaction moves the diagonal
        lowest = min(lowest, diagonal.real.min())
    assert problem.best_determinant() == pytest.approx(lowest, abs=1e-12)
    assert problem.solve().ground.energy < lowest - 1e-5  # correlation lowers the energy below every determinant


@pytest.mark.parametrize("n", [2, 3, 4])
def test_without_coulomb_the_ground_state_fills_the_lowest_bands(n):
    supercell = Supercell(2, 2)
    v = 2.0
    result = ExactProblem(FewElectrons(supercell, v=v, phi_deg=45.0, strength=0.0, n_up=n), n_bands=3).solve()
    exact = float(np.sum(lowest_orbitals(supercell, n, v, 45.0).energies))
    assert result.ground.energy == pytest.approx(exact, abs=1e-10)
    assert result.ground.interaction == pytest.approx(0.0, abs=1e-12)
    assert result.ground.kinetic + result.ground.potential == pytest.approx(exact, abs=1e-10)


def _rotate_label(supercell, label, turns):
    L2 = supercell.L2
    p = np.array([label // L2, label % L2])
    k = p @ supercell.reciprocal
    angle = 2 * np.pi / 3 * turns
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    q = np.round((rotation @ k) @ np.linalg.inv(supercell.reciprocal)).astype(int)
    return int(momentum_label(q, supercell))


def test_sectors_related_by_time_reversal_and_rotation_have_equal_ground_energies():
    supercell = Supercell(3, 3)
    result = ExactProblem(FewElectrons(supercell, v=3.0, phi_deg=45.0, strength=6.0, n_up=2), n_bands=2).solve()
    energy = {r.momentum: r.energy for r in result.sectors}
    assert len(energy) == 9 and np.ptp(list(energy.values())) > 1e-3  # sectors differ at all
    minus = {label: int(momentum_label(-np.array([label // 3, label % 3]), supercell)) for label in energy}
    for label in energy:
        assert energy[label] == pytest.approx(energy[minus[label]], abs=1e-9)
        # the moiré potential is C3-symmetric about the origin (g_j → g_{j+1}), the 3×3 torus too
        assert energy[label] == pytest.approx(energy[_rotate_label(supercell, label, 1)], abs=1e-9)


def test_interaction_of_a_determinant_equals_the_position_space_ewald_average():
    """⟨Φ|H_ee|Φ⟩ from V_abcd and ½NUξ equals U⟨E_Ewald⟩ over |Φ|², by importance sampling."""
    supercell = Supercell(2, 2)
    v, strength, n = 1.0, 3.0, 3
    basis = band_basis(supercell, v=v, phi_deg=45.0, n_bands=2)
    cm = coulomb_matrix(basis, strength)
    occupied = np.array([0, 2, 5])
    second_quantised = cm.constant(n) + sum(
        cm(a, b, a, b) - cm(b, a, a, b) for a, b in itertools.combinations(occupied, 2)
    )
    orbitals = Orbitals(
        k=basis.wavevectors(basis.momentum[occupied]), G=basis.G_index @ MOIRE_RECIPROCAL,
        coefficients=basis.coefficients[occupied], energies=basis.energies[occupied], area=supercell.area,
    )
    ewald = EwaldSum(supercell.cell, n_electrons=n)
    samples = 400_000
    frac = jax.random.uniform(jax.random.PRNGKey(1), (samples, n, 2), dtype=jnp.float64)
    positions = frac @ jnp.asarray(supercell.cell)

    def one(r):
        det = jnp.linalg.det(evaluate_orbitals(orbitals, r))
        return jnp.abs(det) ** 2, ewald(r)

    weight, energy = jax.jit(jax.vmap(one))(positions)
    weight, energy = np.asarray(weight), strength * np.asarray(energy)
    mean = np.sum(weight * energy) / np.sum(weight)
    error = np.sqrt(np.sum(weight**2 * (energy - mean) ** 2)) / np.sum(weight)
    assert np.real(second_quantised) == pytest.approx(mean, abs=4 * error)
    assert abs(np.imag(second_quantised)) < 1e-12
    assert error < 0.01 * abs(mean - cm.constant(n))  # the test resolves the pair part


def test_extrapolation_recovers_a_power_law_and_is_never_tighter_than_its_tail():
    from qernel_cli.exact.band_sweep import extrapolate

    n = list(range(1, 13))
    exact, alpha = -10.0, 2.0
    bounds = [exact + 3.0 * k**-alpha for k in n]
    x = extrapolate(n, bounds, alpha)
    assert x.energy == pytest.approx(exact, abs=1e-12)  # an exact n^-α tail is removed exactly
    assert x.error == pytest.approx(bounds[-1] - exact)
    # a faster true convergence (n^-3) is over-, never under-covered by the α = 2 rule
    fast = [exact + 3.0 * k**-3.0 for k in n]
    y = extrapolate(n, fast, alpha)
    assert y.energy - y.error <= exact <= y.energy + y.error
    assert y.error > fast[-1] - exact
    # a slower one (n^-1) is outside what α = 2 covers: the rule is only as honest as α
    assert extrapolate(n, [exact + 3.0 / k for k in n], 1.0).energy == pytest.approx(exact)
    assert extrapolate(n[:3], bounds[:3], alpha).energy is None
    flat = extrapolate(n[:6], [-1.0, -1.1, -1.3, -1.3, -1.3, -1.3], alpha)
    assert flat.energy == -1.3 and flat.error == 0.0


def test_qernel_exact_json_and_table(tmp_path):
    import json

    from qernel_cli.workflows.exact import exact_energies
    from qernel_cli.config import resolve

    c = resolve("moire-tiny", ["supercell.L1=2", "supercell.L2=1", "electrons.n_up=2", "electrons.filling=1"])
    result = exact_energies(c, [5.0, 20.0], max_bands=3)
    json.dumps(result)  # serialisable
    for d in result["depths"]:
        bounds = [b["energy_per_electron_meV"] for b in d["bands"]]
        assert [b["n_bands"] for b in d["bands"]] == [1, 2, 3]
        assert all(x >= y - 1e-9 for x, y in zip(bounds, bounds[1:]))  # nested bases: bounds decrease
        last = d["bands"][-1]
        parts = last["kinetic_per_electron_meV"] + last["moire_per_electron_meV"] + last["interaction_per_electron_meV"]
        assert parts == pytest.approx(last["energy_per_electron_meV"], abs=1e-9)
        assert min(last["sector_energies_per_electron_meV"].values()) == pytest.approx(last["energy_per_electron_meV"])
        assert d["determinant_per_electron_meV"] > last["energy_per_electron_meV"]
        assert d["correlation_per_electron_meV"] > 0
    # a deeper moiré potential lowers the moiré energy
    assert result["depths"][1]["bands"][-1]["moire_per_electron_meV"] < result["depths"][0]["bands"][-1]["moire_per_electron_meV"]
