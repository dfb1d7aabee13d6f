"""Local energy: forward Laplacian vs Hessian trace, and the zero-variance test on Bloch determinants."""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.hamiltonian.bands import (
    lowest_orbitals,
    slater_log_psi,
    slater_log_psi_spinful,
)
from qernel_cli.hamiltonian.local_energy import (
    LocalEnergy,
    laplacian_and_gradient,
    local_energy,
    local_energy_batch,
)
from qernel_cli.hamiltonian.potential import total_moire_potential
from qernel_cli.lattice import Supercell

PHI = 45.0
SUPERCELL = Supercell(3, 3)
N_CONFIGS = 20
# One plane-wave basis for every depth, so that the jitted energy below compiles
# once per (electron count, method). |G| ≤ 8|b| (241 plane waves) is converged
# for v ≤ 4.4 and leaves residuals ~1e-9 at v = 8, i.e. local-energy deviations
# ~1e-10 relative there: inside the 1e-8 tolerance, and cheaper to diagonalise.
N_SHELLS = 8


@functools.cache
def bloch_orbitals(n_electrons, v):
    return lowest_orbitals(SUPERCELL, n_electrons, v, PHI, n_shells=N_SHELLS)


@eqx.filter_jit
def bloch_energies(orbitals, positions, v, method):
    """Local energies of the Slater determinant of ``orbitals`` at a batch of configurations."""
    return local_energy_batch(
        slater_log_psi(orbitals), positions, v=v, phi_deg=PHI, coulomb_strength=0.0, method=method
    )


@eqx.filter_jit
def spinful_energies(up, down, positions, v, method):
    return local_energy_batch(
        slater_log_psi_spinful(up, down), positions, v=v, phi_deg=PHI, coulomb_strength=0.0, method=method
    )


def random_configurations(n, seed):
    frac = np.random.default_rng(seed).random((N_CONFIGS, n, 2))
    return jnp.asarray(frac @ SUPERCELL.cell)


def assert_constant(energies: LocalEnergy, exact: float):
    scale = max(1.0, abs(exact))
    deviation = np.max(np.abs(np.asarray(energies.total) - exact))
    assert deviation < 1e-8 * scale, deviation
    assert np.max(np.abs(energies.kinetic_imag)) < 1e-8 * scale
    np.testing.assert_array_equal(energies.interaction, 0.0)
    np.testing.assert_allclose(energies.kinetic + energies.potential, energies.total, rtol=1e-14)


@pytest.mark.parametrize("method", ["forward", "hessian"])
@pytest.mark.parametrize(
    "n_electrons, v",
    [(6, 0.0), (6, 0.5), (6, 2.0), (6, 4.44), (6, 8.0), (9, 0.0), (9, 4.44)],
    ids=lambda x: str(x),
)
def test_bloch_determinant_has_zero_variance(n_electrons, v, method):
    orbitals = bloch_orbitals(n_electrons, v)
    x = random_configurations(n_electrons, seed=n_electrons + int(10 * v))
    energies = bloch_energies(orbitals, x, jnp.asarray(v), method)
    assert_constant(energies, float(np.sum(orbitals.energies)))


@pytest.mark.parametrize("method", ["forward", "hessian"])
def test_spinful_bloch_determinant_has_zero_variance(method):
    # any sets of exact eigenstates will do: spin up the lowest three, spin down the lowest two
    v = 4.44
    orbitals = bloch_orbitals(6, v)
    up = dataclasses.replace(orbitals, k=orbitals.k[:3], coefficients=orbitals.coefficients[:3], energies=orbitals.energies[:3])
    down = dataclasses.replace(orbitals, k=orbitals.k[:2], coefficients=orbitals.coefficients[:2], energies=orbitals.energies[:2])
    x = random_configurations(5, seed=5)
    energies = spinful_energies(up, down, x, jnp.asarray(v), method)
    assert_constant(energies, float(np.sum(up.energies) + np.sum(down.energies)))


def test_wrong_depth_is_not_an_eigenstate():
    """Negative control: orbitals of one depth under the Hamiltonian of another fluctuate."""
    orbitals = bloch_orbitals(6, 2.0)
    energies = bloch_energies(orbitals, random_configurations(6, seed=1), jnp.asarray(4.44), "forward")
    assert np.std(np.asarray(energies.total)) > 1e-2


# ---------------------------------------------------------------------------
# forward Laplacian == Hessian trace on generic log ψ


class RandomAttentionNet(eqx.Module):
    """A small permutation-equivariant attention + MLP network → real scalar."""

    w_in: jax.Array
    w_q: jax.Array
    w_k: jax.Array
    w_v: jax.Array
    w_out: jax.Array

    def __init__(self, seed, width=8):
        rng = np.random.default_rng(seed)
        self.w_in = jnp.asarray(rng.normal(size=(4, width)))
        self.w_q, self.w_k, self.w_v = (jnp.asarray(rng.normal(size=(width, width)) / np.sqrt(width)) for _ in range(3))
        self.w_out = jnp.asarray(rng.normal(size=(width,)) / np.sqrt(width))

    def features(self, x):
        periodic = jnp.concatenate([jnp.sin(x @ SUPERCELL.reciprocal.T), jnp.cos(x @ SUPERCELL.reciprocal.T)], -1)
        h = jnp.tanh(periodic @ self.w_in)
        attention = jax.nn.softmax((h @ self.w_q) @ (h @ self.w_k).T, axis=-1)
        return h + jnp.tanh(attention @ (h @ self.w_v))

    def __call__(self, x):
        return jnp.sum(jnp.tanh(self.features(x) @ self.w_out))


class RandomComplexSlater(eqx.Module):
    """log det of smooth, electron-dependent complex orbitals (attention-backflow-like) → complex."""

    net: RandomAttentionNet
    w_orb: jax.Array
    q: jax.Array

    def __init__(self, seed, n):
        rng = np.random.default_rng(seed)
        self.net = RandomAttentionNet(seed + 1)
        self.w_orb = jnp.asarray(rng.normal(size=(8, n)) + 1j * rng.normal(size=(8, n)))
        self.q = jnp.asarray(rng.integers(-2, 3, size=(n, 2)) @ SUPERCELL.reciprocal)

    def __call__(self, x):
        phase = x @ self.q.T
        envelope = jax.lax.complex(jnp.cos(phase), jnp.sin(phase))
        matrix = (1.0 + 0.5 * (self.net.features(x) @ self.w_orb)) * envelope
        sign, logabs = jnp.linalg.slogdet(matrix)
        return logabs + 1j * jnp.angle(sign)


@eqx.filter_jit
def both_methods(log_psi, x):
    return laplacian_and_gradient(log_psi, x, "forward"), laplacian_and_gradient(log_psi, x, "hessian")


@pytest.mark.parametrize("kind", ["real", "complex"])
def test_forward_laplacian_matches_hessian_trace(kind):
    n = 5
    log_psi = RandomAttentionNet(7) if kind == "real" else RandomComplexSlater(7, n)
    x = jnp.asarray(np.random.default_rng(3).random((n, 2)) @ SUPERCELL.cell)
    (lap_f, grad_f), (lap_h, grad_h) = both_methods(log_psi, x)
    assert grad_f.shape == (n, 2) and grad_h.shape == (n, 2)
    assert jnp.iscomplexobj(lap_f) == (kind == "complex")
    # a non-trivial function: the Laplacian is not small, the parts are all present
    assert abs(lap_h) > 1e-2
    if kind == "complex":
        assert abs(lap_h.imag) > 1e-3 and np.max(np.abs(grad_h.imag)) > 1e-3
    np.testing.assert_allclose(lap_f, lap_h, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_f, grad_h, rtol=1e-10, atol=1e-10)
    # the gradient is the gradient, and the Laplacian matches a dense Hessian
    real_part = jax.jit(lambda y: jnp.real(log_psi(y.reshape(n, 2))))
    grad = jax.jit(jax.grad(real_part))(x.reshape(-1))
    np.testing.assert_allclose(np.real(grad_h).reshape(-1), grad, rtol=1e-12, atol=1e-12)
    hessian = jax.jit(jax.hessian(real_part))(x.reshape(-1))
    np.testing.assert_allclose(np.real(lap_h), np.trace(hessian), rtol=1e-10)


# ---------------------------------------------------------------------------
# kinetic formula and components


@pytest.mark.parametrize("method", ["forward", "hessian"])
def test_plane_wave_kinetic_energy(method):
    k = jnp.asarray([1.7, -0.6])

    def log_psi(x):  # ψ = e^{ik·r}, one electron
        return 1j * jnp.sum(x @ k)

    x = jnp.asarray([[0.3, 0.8]])
    e = local_energy(log_psi, x, v=0.0, phi_deg=PHI, coulomb_strength=0.0, method=method)
    assert float(e.kinetic) == pytest.approx(0.5 * float(k @ k), rel=1e-14)
    assert abs(float(e.kinetic_imag)) < 1e-14


@pytest.mark.parametrize("method", ["forward", "hessian"])
def test_gaussian_kinetic_energy(method):
    """Real log ψ = -α Σ|r|²/2: kinetic = Σ_i (α - α²|r_i|²/2) (2D, one per electron)."""
    alpha = 1.3

    def log_psi(x):
        return -0.5 * alpha * jnp.sum(x**2)

    x = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2)))
    e = local_energy(log_psi, x, v=0.0, phi_deg=PHI, coulomb_strength=0.0, method=method)
    expected = np.sum(alpha - 0.5 * alpha**2 * np.sum(np.asarray(x) ** 2, axis=-1))
    assert float(e.kinetic) == pytest.approx(expected, rel=1e-13)
    assert float(e.kinetic_imag) == 0.0


def test_components_jit_and_vmap_over_walkers():
    net = RandomAttentionNet(1)
    walkers = jnp.asarray(np.random.default_rng(2).random((3, 4, 2)) @ SUPERCELL.cell)
    v = jnp.asarray([1.0, 2.0, 4.44])

    def coulomb(x):  # any smooth function of the configuration stands in for the Ewald sum
        return jnp.sum(jnp.cos(x @ SUPERCELL.reciprocal.T))

    @eqx.filter_jit
    def batched(model, x, v, strength):
        return eqx.filter_vmap(
            lambda y, v_: local_energy(model, y, v=v_, phi_deg=PHI, coulomb_strength=strength, interaction=coulomb)
        )(x, v)

    e = batched(net, walkers, v, jnp.asarray(10.6))
    assert isinstance(e, LocalEnergy) and e.total.shape == (3,)
    for i in range(3):
        np.testing.assert_allclose(e.potential[i], total_moire_potential(walkers[i], v[i], PHI), rtol=1e-12)
        np.testing.assert_allclose(e.interaction[i], 10.6 * coulomb(walkers[i]), rtol=1e-12)
    np.testing.assert_allclose(e.total, e.kinetic + e.potential + e.interaction, rtol=1e-14)
    assert np.all(e.kinetic_imag == 0.0) and np.all(np.abs(e.kinetic) > 0)
    # the batch helper, with one depth for all walkers this time
    b = eqx.filter_jit(local_energy_batch)(
        net, walkers, v=v[1], phi_deg=PHI, coulomb_strength=jnp.asarray(10.6), interaction=coulomb
    )
    np.testing.assert_allclose(b.kinetic, e.kinetic, rtol=1e-12)
    np.testing.assert_allclose(b.potential[1], e.potential[1], rtol=1e-12)
    np.testing.assert_allclose(b.interaction, e.interaction, rtol=1e-12)


def test_coulomb_switches_off():
    def log_psi(x):
        return -0.5 * jnp.sum(x**2)

    def coulomb(x):
        return jnp.sum(x)

    x = jnp.asarray([[0.1, 0.2], [0.4, 0.9]])
    on = local_energy(log_psi, x, v=1.0, phi_deg=PHI, coulomb_strength=2.0, interaction=coulomb)
    assert float(on.interaction) == pytest.approx(2.0 * 1.6)
    for strength, interaction in [(0.0, coulomb), (0, coulomb), (2.0, None)]:
        off = local_energy(log_psi, x, v=1.0, phi_deg=PHI, coulomb_strength=strength, interaction=interaction)
        assert float(off.interaction) == 0.0
        assert float(off.total) == pytest.approx(float(on.total) - 3.2, rel=1e-14)


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="method"):
        laplacian_and_gradient(lambda x: jnp.sum(x), jnp.zeros((2, 2)), "finite-difference")
