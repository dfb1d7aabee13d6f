"""Invariants of the full wavefunction: antisymmetry, periodicity, equivariance, FiLM, smoothness, safety."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.config import resolve
from qernel_cli.hamiltonian.bands import follow_orbitals, lowest_orbitals, slater_log_psi, slater_log_psi_spinful
from qernel_cli.lattice import Supercell
from qernel_cli.model import LOG_FLOOR, Wavefunction, make_wavefunction

BATCH = 6


def tiny_model(supercell, n_up, n_down, *, seed=0, **overrides):
    sizes = dict(
        layers=2,
        width=16,
        heads=4,
        kv_heads=2,
        mlp_width=16,
        experts=2,
        determinants=2,
        harmonics=2,
        film_hidden=8,
        coulomb_strength=4.0,
        condition_centre=[2.0],
        condition_scale=[2.0],
    )
    sizes.update(overrides)
    return Wavefunction(supercell, n_up, n_down, key=jax.random.key(seed), **sizes)


def perturb(model, seed=1, scale=0.3):
    """Add noise to every float leaf (so zero-initialised FiLM heads etc. are generic)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed)  # host-side noise: no compilation, same noise for any dtype
    leaves = [jnp.asarray(np.asarray(x, np.float64) + scale * rng.standard_normal(x.shape), x.dtype) for x in leaves]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def random_configs(supercell, n, batch=BATCH, seed=0):
    frac = np.random.default_rng(seed).uniform(0.0, 1.0, (batch, n, 2))
    return jnp.asarray(frac @ supercell.cell)


@eqx.filter_jit
def batch_log_psi(model, positions, conditions):
    return jax.vmap(model, in_axes=(0, None))(positions, conditions)


def assert_same_up_to_phase(a, b, phase, *, atol=1e-9):
    """a, b complex log ψ: equal moduli and arg a - arg b ≡ phase (mod 2π)."""
    np.testing.assert_allclose(np.real(a), np.real(b), atol=atol, rtol=0)
    np.testing.assert_allclose(np.exp(1j * (np.imag(a) - np.imag(b))), np.exp(1j * phase), atol=atol, rtol=0)


POLARISED_CELL = Supercell(2, 3)  # L1 ≠ L2 on purpose
SPINFUL_CELL = Supercell(2, 2)


@pytest.fixture(scope="module")
def polarised():
    return perturb(tiny_model(POLARISED_CELL, 4, 0))


@pytest.fixture(scope="module")
def spinful():
    return perturb(tiny_model(SPINFUL_CELL, 3, 2, seed=2), seed=3)


@pytest.fixture(scope="module")
def spinful32():
    """The same weights as ``spinful`` with a float32 trunk."""
    return perturb(tiny_model(SPINFUL_CELL, 3, 2, seed=2, dtype="float32"), seed=3)


C = jnp.array([1.7])


def swap(x, i, j):
    return x.at[:, [i, j]].set(x[:, [j, i]])


def test_output_is_finite_complex_scalar(polarised):
    x = random_configs(POLARISED_CELL, 4)
    out = batch_log_psi(polarised, x, C)
    assert out.shape == (BATCH,) and out.dtype == jnp.complex128
    assert np.all(np.isfinite(out))
    assert np.ptp(np.real(out)) > 1e-3  # depends on the configuration


def test_antisymmetry_spin_polarised(polarised):
    x = random_configs(POLARISED_CELL, 4, seed=1)
    base = batch_log_psi(polarised, x, C)
    for i, j in [(0, 1), (1, 3), (0, 2)]:
        assert_same_up_to_phase(batch_log_psi(polarised, swap(x, i, j), C), base, np.pi)
    # A cyclic permutation of three electrons is even.
    cycled = x[:, [1, 2, 0, 3]]
    assert_same_up_to_phase(batch_log_psi(polarised, cycled, C), base, 0.0)


def test_antisymmetry_spinful_same_spin(spinful):
    x = random_configs(SPINFUL_CELL, 5, seed=2)
    base = batch_log_psi(spinful, x, C)
    for i, j in [(0, 1), (0, 2), (1, 2), (3, 4)]:  # all up-up pairs and the down-down pair
        assert_same_up_to_phase(batch_log_psi(spinful, swap(x, i, j), C), base, np.pi)
    # Exchanging an up with the down electron gives a different function value.
    other = batch_log_psi(spinful, swap(x, 0, 3), C)
    assert np.max(np.abs(np.real(other) - np.real(base))) > 1e-4


@pytest.mark.parametrize("which", ["polarised", "spinful"])
def test_periodic_in_every_electron(which, request):
    model = request.getfixturevalue(which)
    cell = POLARISED_CELL if which == "polarised" else SPINFUL_CELL
    x = random_configs(cell, model.n_electrons, seed=3)
    base = batch_log_psi(model, x, C)
    T1, T2 = (jnp.asarray(t) for t in cell.cell)
    for i in range(model.n_electrons):
        for shift in (T1, T2, -2.0 * T1 + 3.0 * T2):
            assert_same_up_to_phase(batch_log_psi(model, x.at[:, i].add(shift), C), base, 0.0, atol=1e-8)


def test_trunk_is_permutation_equivariant(polarised):
    x = random_configs(POLARISED_CELL, 4, seed=4)[0]
    perm = np.array([2, 0, 3, 1])
    hidden = eqx.filter_jit(lambda m, p: m.hidden(p, C))
    h = hidden(polarised, x)
    np.testing.assert_allclose(hidden(polarised, x[perm]), h[perm], atol=1e-12)
    assert h.shape == (4, 16)


def test_film_changes_psi(polarised):
    x = random_configs(POLARISED_CELL, 4, seed=5)
    a = batch_log_psi(polarised, x, jnp.array([0.5]))
    b = batch_log_psi(polarised, x, jnp.array([3.5]))
    assert np.max(np.abs(a - b)) > 1e-3


def test_conditions_enter_only_through_film_and_router(polarised):
    """Zero the FiLM output layers and the routers' output weights: ψ no longer depends on c."""

    def zero_last(mlp):
        return eqx.tree_at(lambda m: m.layers[-1].weight, mlp, jnp.zeros_like(mlp.layers[-1].weight))

    model = polarised
    for b in range(len(model.trunk.blocks)):
        for name in ("attention_film", "moe_film"):
            model = eqx.tree_at(
                lambda m: getattr(m.trunk.blocks[b], name).mlp, model, zero_last(getattr(model.trunk.blocks[b], name).mlp)
            )
        model = eqx.tree_at(lambda m: m.trunk.blocks[b].moe.router, model, zero_last(model.trunk.blocks[b].moe.router))
    x = random_configs(POLARISED_CELL, 4, seed=6)
    a = batch_log_psi(model, x, jnp.array([0.5]))
    b = batch_log_psi(model, x, jnp.array([3.5]))
    np.testing.assert_allclose(a, b, atol=1e-12)
    # ... while the modulation biases (still non-zero) keep the model different from the original.
    assert np.max(np.abs(a - batch_log_psi(polarised, x, jnp.array([0.5])))) > 1e-6


def _coincident_configs():
    x = random_configs(SPINFUL_CELL, 5, seed=8)
    x = x.at[0, 1].set(x[0, 0])  # two up electrons on one point: ψ = 0
    x = x.at[1, 3].set(x[1, 0])  # up and down on one point (cusp, no node)
    return x


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_coincident_electrons_are_finite(dtype, spinful, spinful32):
    model = spinful if dtype == "float64" else spinful32
    out = batch_log_psi(model, _coincident_configs(), C)
    assert np.all(np.isfinite(out)), out
    # At the node |ψ| vanishes up to rounding (exactly: log|ψ| = LOG_FLOOR); elsewhere it is O(1).
    assert np.real(out[0]) < np.min(np.real(out[2:])) - 15.0
    assert np.real(out[1]) > LOG_FLOOR / 2


def test_gradients_are_finite(spinful):
    """d Re log ψ / dθ and / dr: finite for a random configuration and at both kinds of coincidence."""

    @eqx.filter_jit
    def gradients(model, positions):
        params, static = eqx.partition(model, eqx.is_inexact_array)
        grad = jax.grad(lambda p, x: jnp.real(eqx.combine(p, static)(x, C)), argnums=(0, 1))
        return jax.vmap(grad, in_axes=(None, 0))(params, positions)

    param_grad, position_grad = gradients(spinful, _coincident_configs()[:3])
    leaves = jax.tree_util.tree_leaves(param_grad)
    assert len(leaves) > 20 and all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert np.all(np.isfinite(position_grad))
    # The random configuration's parameter gradient reaches every part of the model.
    norms = [float(np.linalg.norm(np.asarray(leaf[2]))) for leaf in leaves]
    assert sum(n > 0 for n in norms) >= len(norms) - 2


def test_float32_trunk_keeps_float64_head(spinful, spinful32):
    assert spinful32.trunk.blocks[0].attention.query.weight.dtype == jnp.float32
    assert spinful32.orbitals.blocks[0].weight.dtype == jnp.float32
    assert spinful32.orbitals.blocks[0].envelope.coefficients_re.dtype == jnp.float64
    x = random_configs(SPINFUL_CELL, 5, seed=9)
    a, b = batch_log_psi(spinful32, x, C), batch_log_psi(spinful, x, C)
    assert a.dtype == jnp.complex128
    # Same weights (rounded to float32): the same function to float32 accuracy.
    np.testing.assert_allclose(np.real(a), np.real(b), atol=1e-3)
    np.testing.assert_allclose(np.exp(1j * np.imag(a)), np.exp(1j * np.imag(b)), atol=1e-3)


def test_free_electron_determinant_limit(polarised):
    """With orbital maps ≡ 1 and no Jastrow, ψ is the Slater determinant of the lowest plane waves."""
    model = _bare_determinant(polarised)
    block = model.orbitals.blocks[0]
    envelope = block.envelope
    # Restore the plane-wave initialisation (δ coefficients) that ``perturb`` destroyed.
    fresh = tiny_model(POLARISED_CELL, 4, 0).orbitals.blocks[0].envelope
    model = eqx.tree_at(
        lambda m: (m.orbitals.blocks[0].envelope.coefficients_re, m.orbitals.blocks[0].envelope.coefficients_im),
        model,
        (fresh.coefficients_re, fresh.coefficients_im),
    )
    q = envelope.k + envelope.G[np.argmax(np.asarray(fresh.coefficients_re[0, 0]), axis=-1)]  # anchor 0, determinant 0
    x = random_configs(POLARISED_CELL, 4, seed=10)
    sign, logabs = np.linalg.slogdet(np.exp(1j * np.asarray(x) @ q.T))
    exact = logabs + np.log(sign)
    out = np.asarray(batch_log_psi(model, x, jnp.array([0.3])))
    # Two identical determinants: log ψ = log det + log 2.
    assert_same_up_to_phase(out, exact + np.log(2.0), 0.0, atol=1e-9)


def _bare_determinant(model):
    """Orbital linear maps → constant 1 (w = 0, b = 1 + 0i), Jastrow removed."""
    for b, block in enumerate(model.orbitals.blocks):
        bias = jnp.zeros_like(block.bias).reshape(2, -1).at[0].set(1.0).reshape(-1)
        model = eqx.tree_at(
            lambda m: (m.orbitals.blocks[b].weight, m.orbitals.blocks[b].bias), model, (jnp.zeros_like(block.weight), bias)
        )
    return eqx.tree_at(lambda m: m.jastrow, model, None, is_leaf=lambda x: x is None)


@pytest.mark.parametrize("n_up, n_down", [(4, 0), (3, 1)])  # (3, 1): a 1 × 1 down determinant
def test_bloch_determinant_limit(n_up, n_down):
    """Envelopes = exact Bloch orbitals, maps ≡ 1, no Jastrow: log ψ - log ψ_exact is one constant."""
    cell = Supercell(2, 3)
    v, phi = 3.0, 45.0
    if n_down:
        orbitals = (lowest_orbitals(cell, n_up, v, phi, n_shells=3), lowest_orbitals(cell, n_down, v, phi, n_shells=3))
        exact_fn = slater_log_psi_spinful(*orbitals)
    else:
        orbitals = lowest_orbitals(cell, n_up, v, phi, n_shells=3)
        exact_fn = slater_log_psi(orbitals)
    model = _bare_determinant(tiny_model(cell, n_up, n_down, orbitals=orbitals, determinants=2))
    x = random_configs(cell, n_up + n_down, seed=12)
    exact = np.asarray(jax.jit(jax.vmap(exact_fn))(x))
    diff = np.asarray(batch_log_psi(model, x, jnp.array([v]))) - exact
    assert np.ptp(np.real(exact)) > 0.1  # configurations differ
    assert_same_up_to_phase(diff, np.full_like(diff, diff[0]), 0.0, atol=1e-9)


def _envelope_coefficients(model, anchor=0):
    """(envelope, coefficients of the first determinant at one anchor)."""
    envelope = model.orbitals.blocks[0].envelope
    return envelope, np.asarray(envelope.coefficients_re[anchor, 0]) + 1j * np.asarray(envelope.coefficients_im[anchor, 0])


def test_make_wavefunction_from_preset():
    config = resolve("moire-tiny", ["model.envelope=bloch", "model.envelope_shells=2", "model.envelope_momenta=fixed", "pretrain.target=bloch"])
    model = make_wavefunction(config, jax.random.key(0))
    m = config.model
    assert model.n_electrons == config.n_electrons == 6
    assert len(model.trunk.blocks) == m.layers and model.trunk.width == m.width
    assert model.trunk.blocks[0].attention.heads == m.heads and model.trunk.blocks[0].attention.kv_heads == m.kv_heads
    assert model.trunk.blocks[0].moe.experts == m.experts
    assert model.orbitals.blocks[0].determinants == m.determinants
    assert model.jastrow is not None
    np.testing.assert_allclose(model.jastrow.coulomb_strength, config.material_units.coulomb_strength)
    # c is normalised to [-1, 1] on the training depths (V/E_M).
    material = config.material_units
    lo, hi = material.depth_to_moire(config.hamiltonian.V_min_meV), material.depth_to_moire(config.hamiltonian.V_max_meV)
    np.testing.assert_allclose(model.normalise(jnp.array([lo])), [-1.0])
    np.testing.assert_allclose(model.normalise(jnp.array([hi])), [1.0])
    off = make_wavefunction(resolve("moire-tiny", ["hamiltonian.coulomb=false"]), jax.random.key(0))
    assert off.jastrow.coulomb_strength == 0.0

    # envelope = "bloch": anchors at V_min, middle, V_max hold the non-interacting Bloch
    # orbitals at those depths (up to one overall factor), following the middle ones.
    assert model.orbitals.blocks[0].envelope.anchors == (-1.0, 0.0, 1.0)
    reference = lowest_orbitals(config.supercell_geometry, 6, 0.5 * (lo + hi), config.material.phi_deg, n_shells=2)
    for anchor, v in enumerate([lo, 0.5 * (lo + hi), hi]):
        target = follow_orbitals(reference, config.supercell_geometry, v, config.material.phi_deg)
        envelope, coefficients = _envelope_coefficients(model, anchor)
        np.testing.assert_allclose(envelope.k, reference.k)
        np.testing.assert_allclose(envelope.G, reference.G)
        big = np.abs(target.coefficients) > 1e-3
        ratio = coefficients[big] / target.coefficients[big]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)
    # The anchors really differ: the orbitals change with depth.
    assert np.max(np.abs(_envelope_coefficients(model, 0)[1] - _envelope_coefficients(model, 2)[1])) > 0.05
    # envelope = "plane-wave": one plane wave per orbital on the |G| ≤ 2|b| basis (19 vectors).
    plane = make_wavefunction(resolve("moire-tiny", ["model.envelope=plane-wave", "model.envelope_shells=2", "model.envelope_momenta=fixed", "pretrain.target=bloch"]), jax.random.key(0))
    envelope, coefficients = _envelope_coefficients(plane)
    assert envelope.anchors == (0.0,)
    assert envelope.G.shape == (19, 2)
    np.testing.assert_array_equal(np.sum(coefficients != 0, axis=-1), 1)

    stats = model.load_balance(jnp.linspace(lo, hi, 7)[:, None])
    assert stats["importance"].shape == (m.layers, m.experts)
    np.testing.assert_allclose(np.sum(stats["importance"], axis=-1), 1.0)


def test_depth_following_envelopes_give_the_bloch_determinant_at_every_anchor_depth():
    """Bare determinant of a 3-anchor Bloch model = exact non-interacting ground state at each anchor depth."""
    config = resolve("moire-tiny", ["model.envelope_shells=2", "hamiltonian.coulomb=false", "model.determinants=1"])
    model = _bare_determinant(make_wavefunction(config, jax.random.key(1)))
    material = config.material_units
    lo, hi = material.depth_to_moire(config.hamiltonian.V_min_meV), material.depth_to_moire(config.hamiltonian.V_max_meV)
    reference = lowest_orbitals(config.supercell_geometry, 6, 0.5 * (lo + hi), config.material.phi_deg, n_shells=2)
    x = random_configs(config.supercell_geometry, 6, seed=3)
    for v in (lo, hi):
        exact = np.asarray(jax.vmap(slater_log_psi(follow_orbitals(reference, config.supercell_geometry, v, 45.0)))(x))
        diff = np.asarray(batch_log_psi(model, x, jnp.array([v]))) - exact
        assert_same_up_to_phase(diff, np.full_like(diff, diff[0]), 0.0, atol=1e-9)
    # Between anchors the envelope is an interpolation, not the middle-depth state.
    mid = np.asarray(jax.vmap(slater_log_psi(reference))(x))
    quarter = np.asarray(batch_log_psi(model, x, jnp.array([0.75 * lo + 0.25 * hi]))) - mid
    assert np.ptp(np.real(quarter)) > 1e-3
