"""Unit tests of the model's parts: GQA, FiLM, MoE gate, Jastrow, determinants, envelopes, summary."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.lattice import Supercell
from qernel_cli.model import (
    LOG_FLOOR,
    CuspJastrow,
    FiLM,
    GroupedQueryAttention,
    MixtureOfExperts,
    PeriodicFeatures,
    Wavefunction,
    combine,
    forward_flops,
    load_balance,
    log_det,
    lowest_plane_waves,
    parameter_breakdown,
    parameter_count,
    periodic_distance,
)

KEY = jax.random.key(0)


def tokens(n=5, width=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((n, width)))


# --- grouped-query attention -------------------------------------------------


def test_gqa_has_fewer_parameters_than_multihead():
    gqa = GroupedQueryAttention(16, 4, 2, key=KEY)
    mqa = GroupedQueryAttention(16, 4, 1, key=KEY)
    mha = GroupedQueryAttention(16, 4, 4, key=KEY)
    assert parameter_count(mqa) < parameter_count(gqa) < parameter_count(mha)
    # q and output: width², key and value: width · kv_heads · head_dim each.
    assert parameter_count(mha) - parameter_count(gqa) == 2 * 16 * (4 - 2) * 4


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_equals_multihead_with_tied_key_values(kv_heads):
    heads, width = 4, 16
    d, groups = width // heads, heads // kv_heads
    gqa = GroupedQueryAttention(width, heads, kv_heads, key=KEY)
    mha = GroupedQueryAttention(width, heads, heads, key=jax.random.key(1))

    def tie(weight):  # (kv·d, width) → (heads·d, width): key/value head h // groups for query head h
        return jnp.repeat(weight.reshape(kv_heads, d, width), groups, axis=0).reshape(heads * d, width)

    mha = eqx.tree_at(
        lambda m: (m.query.weight, m.key.weight, m.value.weight, m.output.weight),
        mha,
        (gqa.query.weight, tie(gqa.key.weight), tie(gqa.value.weight), gqa.output.weight),
    )
    x = tokens()
    np.testing.assert_allclose(mha(x), gqa(x), rtol=1e-12, atol=1e-12)
    # Untied key/values give something else (the test can fail).
    other = eqx.tree_at(lambda m: m.key.weight, mha, mha.key.weight * 1.5)
    assert np.max(np.abs(other(x) - gqa(x))) > 1e-3


def test_attention_is_permutation_equivariant():
    att = GroupedQueryAttention(16, 4, 2, key=KEY)
    x = tokens()
    perm = np.array([3, 0, 4, 1, 2])
    np.testing.assert_allclose(att(x[perm]), att(x)[perm], atol=1e-12)


# --- FiLM ----------------------------------------------------------------------


def test_film_is_identity_at_initialisation_and_learns_c():
    film = FiLM(2, 16, 8, key=KEY)
    h = tokens()
    for c in ([0.0, 0.0], [0.7, -1.0], [-3.0, 2.0]):
        gamma, beta = film.modulation(jnp.asarray(c))
        np.testing.assert_array_equal(gamma, np.ones(16))
        np.testing.assert_array_equal(beta, np.zeros(16))
        np.testing.assert_array_equal(film(h, jnp.asarray(c)), h)
    last = film.mlp.layers[-1]
    rng = np.random.default_rng(0)
    film = eqx.tree_at(lambda f: f.mlp.layers[-1].weight, film, jnp.asarray(rng.standard_normal(last.weight.shape)))
    a, b = film(h, jnp.array([0.5, 0.0])), film(h, jnp.array([-0.5, 0.0]))
    assert np.max(np.abs(a - b)) > 1e-2


# --- mixture of experts ----------------------------------------------------------


def test_moe_gate_is_a_distribution_over_experts():
    moe = MixtureOfExperts(1, 16, 8, 3, router_hidden=8, key=KEY)
    cs = jnp.linspace(-1.0, 1.0, 9)[:, None]
    probs = jax.vmap(moe.gate)(cs)
    np.testing.assert_allclose(np.sum(probs, axis=-1), 1.0, rtol=1e-12)
    assert np.all(probs > 0)
    assert np.max(np.ptp(probs, axis=0)) > 1e-3  # the gate depends on c


def test_moe_top_k_matches_dense_and_single_expert():
    x, c = tokens(), jnp.array([0.3])
    dense = MixtureOfExperts(1, 16, 8, 3, router_hidden=8, key=KEY)
    full = MixtureOfExperts(1, 16, 8, 3, router_hidden=8, top_k=3, key=KEY)
    np.testing.assert_allclose(full(x, c), dense(x, c), rtol=1e-12)
    one = MixtureOfExperts(1, 16, 8, 3, router_hidden=8, top_k=1, key=KEY)
    best = int(np.argmax(dense.gate(c)))
    expert = jax.nn.gelu(x @ dense.w_in[best] + dense.b_in[best]) @ dense.w_out[best] + dense.b_out[best]
    np.testing.assert_allclose(one(x, c), expert, rtol=1e-12, atol=1e-12)
    # Dense mixing is the gate-weighted sum of the experts.
    mixed = sum(
        p * (jax.nn.gelu(x @ dense.w_in[e] + dense.b_in[e]) @ dense.w_out[e] + dense.b_out[e])
        for e, p in enumerate(dense.gate(c))
    )
    np.testing.assert_allclose(dense(x, c), mixed, rtol=1e-12, atol=1e-12)


def test_load_balance_statistics():
    uniform = load_balance(jnp.full((5, 4), 0.25))
    np.testing.assert_allclose(uniform["cv"], 0.0, atol=1e-12)
    np.testing.assert_allclose(uniform["balance_entropy"], 1.0)
    np.testing.assert_allclose(uniform["gate_entropy"], 1.0)
    one_hot = load_balance(jnp.eye(4))  # each c uses one expert, all experts used equally
    np.testing.assert_allclose(one_hot["gate_entropy"], 0.0, atol=1e-12)
    np.testing.assert_allclose(one_hot["balance_entropy"], 1.0)
    collapsed = load_balance(jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0]), (6, 1)))
    np.testing.assert_allclose(collapsed["importance"], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(collapsed["cv"], np.sqrt(3.0))


# --- Jastrow and periodic distance -----------------------------------------------


@pytest.mark.parametrize("cell", [Supercell(3, 3), Supercell(2, 5)])
def test_periodic_distance(cell):
    rng = np.random.default_rng(1)
    direction = rng.standard_normal((20, 2))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    for eps in (1e-3, 1e-6):
        np.testing.assert_allclose(periodic_distance(jnp.asarray(eps * direction), cell), eps, rtol=1e-5)
    r = jnp.asarray(rng.uniform(-4.0, 4.0, (50, 2)))
    d = periodic_distance(r, cell)
    T1, T2 = (jnp.asarray(t) for t in cell.cell)
    np.testing.assert_allclose(periodic_distance(r + T1, cell), d, rtol=1e-10)
    np.testing.assert_allclose(periodic_distance(r - 3 * T2, cell), d, rtol=1e-10)
    np.testing.assert_allclose(periodic_distance(-r, cell), d, rtol=1e-12)
    # Positive away from lattice points; never larger than the minimum-image distance' scale.
    assert np.all(d > 1e-3)
    assert np.all(d <= np.max(np.linalg.norm(cell.cell, axis=-1)))
    zero = periodic_distance(jnp.zeros((1, 2)), cell)
    grad = jax.grad(lambda x: periodic_distance(x, cell)[0])(jnp.zeros((1, 2)))
    assert zero[0] == 0.0 and np.all(np.isfinite(grad))


def test_jastrow_cusps_and_switch_off():
    cell, U = Supercell(3, 3), 6.0
    jastrow = CuspJastrow(cell, 2, 1, U)  # electrons 0, 1 up; 2 down
    base = jnp.array([[0.3, 0.4], [2.0, 1.1], [1.0, 2.0]])
    rng = np.random.default_rng(2)
    direction = jnp.asarray(rng.standard_normal(2))
    direction = direction / jnp.linalg.norm(direction)

    def slope(i, j, eps=1e-6):
        """Radial slope of J at r_i = r_j: the even part of J(±ε) (other pairs add a smooth odd part)."""
        start = base.at[i].set(base[j])
        plus, minus = start.at[i].add(eps * direction), start.at[i].add(-eps * direction)
        return (jastrow(plus) + jastrow(minus) - 2.0 * jastrow(start)) / (2.0 * eps)

    np.testing.assert_allclose(slope(1, 0), U / 3.0, rtol=1e-4)  # parallel
    np.testing.assert_allclose(slope(2, 0), U, rtol=1e-4)  # antiparallel
    coincident = base.at[2].set(base[0])
    assert np.isfinite(jastrow(coincident))
    assert np.all(np.isfinite(jax.grad(jastrow)(coincident)))
    assert np.all(np.isfinite(jax.grad(lambda j: j(coincident))(jastrow).log_length))
    # Bounded: u → 0 far apart, u(0) = -U_s L.
    np.testing.assert_allclose(jastrow.pair_function(jnp.array(0.0), False), -U * 0.5)
    assert abs(float(jastrow.pair_function(jnp.array(1e6), True))) < 1e-5
    assert float(CuspJastrow(cell, 2, 1, 0.0)(base)) == 0.0


# --- determinants ---------------------------------------------------------------


def test_log_det_regular_singular_and_one_by_one():
    rng = np.random.default_rng(3)
    m = rng.standard_normal((3, 4, 4)) + 1j * rng.standard_normal((3, 4, 4))
    logabs, phase = log_det(jnp.asarray(m))
    sign, ref = np.linalg.slogdet(m)
    np.testing.assert_allclose(logabs, ref, rtol=1e-12)
    np.testing.assert_allclose(np.exp(1j * phase), sign, atol=1e-12)

    singular = m[0].copy()
    singular[1] = singular[0]
    for matrix in (jnp.asarray(singular), jnp.zeros((1, 1), jnp.complex128)):
        a, p = log_det(matrix)
        assert float(a) == LOG_FLOOR and float(p) == 0.0
        g = jax.grad(lambda x: log_det(x)[0] + log_det(x)[1])(matrix)
        assert np.all(np.isfinite(g))

    one = jnp.array([[2.0 - 2.0j]])
    a, p = log_det(one)
    np.testing.assert_allclose([a, p], [np.log(np.sqrt(8.0)), -np.pi / 4])
    g = jax.grad(lambda x: log_det(x)[0])(jnp.array([[2.0 + 0.0j]]))
    assert np.all(np.isfinite(g))


def test_combine_is_a_stable_complex_logsumexp():
    logabs = jnp.array([1.0, 0.5, -2.0])
    phase = jnp.array([0.3, -2.0, 1.0])
    a, p = combine(logabs, phase)
    total = np.sum(np.exp(np.asarray(logabs) + 1j * np.asarray(phase)))
    np.testing.assert_allclose([a, np.cos(p), np.sin(p)], [np.log(abs(total)), np.cos(np.angle(total)), np.sin(np.angle(total))], rtol=1e-12)
    a, p = combine(jnp.array([1000.0, 0.0]), jnp.array([0.0, 0.0]))
    np.testing.assert_allclose(a, 1000.0)
    a, p = combine(jnp.array([0.0, 0.0]), jnp.array([0.0, np.pi]))  # cancellation (up to rounding)
    assert np.isfinite(a) and np.isfinite(p) and a < -30.0
    g = jax.grad(lambda x: combine(x, jnp.array([0.0, np.pi]))[0])(jnp.array([0.0, 0.0]))
    assert np.all(np.isfinite(g))


# --- features and envelopes ---------------------------------------------------------


def test_features_are_periodic_and_bounded():
    cell = Supercell(2, 5)
    features = PeriodicFeatures(cell, 3)
    r = jnp.asarray(np.random.default_rng(4).uniform(-5, 5, (7, 2)))
    f = features(r)
    assert f.shape == (7, features.size) and features.size == 4 * 3 + 6
    T1, T2 = (jnp.asarray(t) for t in cell.cell)
    np.testing.assert_allclose(features(r + T1 - 2 * T2), f, atol=1e-12)
    assert np.max(np.abs(f)) <= 1.0


@pytest.mark.parametrize("cell, n", [(Supercell(3, 3), 6), (Supercell(2, 5), 7), (Supercell(4, 4), 30)])
def test_lowest_plane_waves(cell, n):
    k, G = lowest_plane_waves(cell, n)
    q = k + G
    assert len(np.unique(np.round(q, 8), axis=0)) == n  # distinct plane waves
    # Commensurate with the supercell: q·T ∈ 2πZ.
    m = q @ cell.cell.T / (2 * np.pi)
    np.testing.assert_allclose(m, np.round(m), atol=1e-9)
    # The n lowest: brute force over supercell reciprocal vectors.
    B = cell.reciprocal
    ij = np.stack(np.meshgrid(np.arange(-12, 13), np.arange(-12, 13)), -1).reshape(-1, 2)
    energies = np.sort(np.sum((ij @ B) ** 2, axis=-1))[:n]
    np.testing.assert_allclose(np.sort(np.sum(q**2, axis=-1)), energies, rtol=1e-10)


# --- summary --------------------------------------------------------------------------


def test_parameter_count_and_flops():
    model = Wavefunction(
        Supercell(2, 2), 2, 1, layers=1, width=8, heads=2, kv_heads=1, mlp_width=8, experts=2,
        determinants=1, film_hidden=4, coulomb_strength=1.0, key=KEY,
    )
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    assert parameter_count(model) == sum(x.size for x in leaves)
    breakdown = parameter_breakdown(model)
    assert set(breakdown) == {"trunk", "orbitals", "jastrow"}
    assert sum(breakdown.values()) == parameter_count(model)
    flops = forward_flops(model)
    assert flops > 1000
    with pytest.raises(ValueError):
        forward_flops(model, n_electrons=4)


def test_pair_jastrow_is_a_periodic_pair_sum_and_off_at_initialisation():
    import itertools

    from qernel_cli.hamiltonian.local_energy import laplacian_and_gradient
    from qernel_cli.model.pair_jastrow import PairJastrow, half_plane_shells

    cell = Supercell(3, 3)
    pj = PairJastrow(cell, 1, 1.2, key=jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 2)) @ jnp.asarray(cell.cell)
    c = jnp.array([0.3])
    assert float(pj(x, c)) == 0.0  # zero-initialised output layer: pre-training is unaffected
    # With random coefficients it equals (2/N) Σ_{i<j} Σ_q a_s cos(q·r_ij).
    pj = eqx.tree_at(lambda p: p.out.weight, pj, jax.random.normal(jax.random.PRNGKey(2), pj.out.weight.shape))
    from qernel_cli.lattice import MOIRE_G

    q, shell = half_plane_shells(cell, 1.2 * np.linalg.norm(MOIRE_G[0]))
    assert len(set(np.round(np.linalg.norm(q, axis=1), 8))) == pj.n_shells == shell.max() + 1
    a = np.asarray(pj.coefficients(c))[shell]
    xs = np.asarray(x)
    explicit = sum(np.sum(a * np.cos(q @ (xs[i] - xs[j]))) for i, j in itertools.combinations(range(6), 2)) * 2 / 6
    np.testing.assert_allclose(float(pj(x, c)), explicit, rtol=1e-12)
    # Exactly periodic on the supercell and symmetric under exchange.
    shifted = x.at[2].add(jnp.asarray(cell.cell[0] - 2 * cell.cell[1]))
    np.testing.assert_allclose(float(pj(shifted, c)), float(pj(x, c)), rtol=1e-12)
    np.testing.assert_allclose(float(pj(x[::-1], c)), float(pj(x, c)), rtol=1e-12)
    # Depends on c, and the folx Laplacian matches the Hessian trace.
    assert abs(float(pj(x, jnp.array([-0.7]))) - float(pj(x, c))) > 1e-6
    lap_f, grad_f = laplacian_and_gradient(lambda y: pj(y, c), x, "forward")
    lap_h, grad_h = laplacian_and_gradient(lambda y: pj(y, c), x, "hessian")
    np.testing.assert_allclose(lap_f, lap_h, rtol=1e-10)
    np.testing.assert_allclose(grad_f, grad_h, rtol=1e-10)


def test_radial_jastrow_is_a_cusp_free_gaussian_pair_sum_and_off_at_initialisation():
    import itertools

    from qernel_cli.hamiltonian.local_energy import laplacian_and_gradient
    from qernel_cli.model.radial_jastrow import RadialJastrow

    cell = Supercell(3, 2)
    rj = RadialJastrow(cell, 3, 2, 1, 3, key=jax.random.PRNGKey(0))
    np.testing.assert_allclose(rj.widths, [0.1, 0.2, 0.4])
    x = jax.random.uniform(jax.random.PRNGKey(1), (5, 2)) @ jnp.asarray(cell.cell)
    c = jnp.array([0.3])
    assert float(rj(x, c)) == 0.0  # zero-initialised output layer: pre-training is unaffected
    rj = eqx.tree_at(lambda p: p.out.weight, rj, jax.random.normal(jax.random.PRNGKey(2), rj.out.weight.shape))
    b = np.asarray(rj.coefficients(c))  # (2 types, 3 widths)
    # Near coincidence (d ≈ |r| there) the pair function is Σ_k b_k exp(−r²/w_k²) of its pair type.
    delta = jnp.array([0.03, -0.015])
    for kind in (0, 1):
        expected = np.sum(b[kind] * np.exp(-float(delta @ delta) / np.square(rj.widths)))
        np.testing.assert_allclose(float(rj._pair(delta, jnp.asarray(b[kind]))), expected, rtol=1e-3)
    # Cusp-free: log J is flat in r_ij at coincidence, so the cusp Jastrow's slope stays exact.
    slope = jax.grad(lambda d: rj._pair(d, jnp.asarray(b[0])))
    assert float(jnp.max(jnp.abs(slope(jnp.zeros(2))))) == 0.0
    np.testing.assert_allclose(slope(jnp.array([2e-6, -1e-6])), 2.0 * slope(jnp.array([1e-6, -0.5e-6])), rtol=1e-6)
    # A sum over pairs with the pair type's coefficients; periodic; symmetric under exchange within a spin.
    spins = [0, 0, 0, 1, 1]
    explicit = sum(float(rj._pair(x[i] - x[j], jnp.asarray(b[int(spins[i] != spins[j])]))) for i, j in itertools.combinations(range(5), 2))
    np.testing.assert_allclose(float(rj(x, c)), explicit, rtol=1e-12)
    shifted = x.at[2].add(jnp.asarray(cell.cell[0] - 2 * cell.cell[1]))
    np.testing.assert_allclose(float(rj(shifted, c)), float(rj(x, c)), rtol=1e-12)
    swapped = x[jnp.array([1, 0, 2, 4, 3])]
    np.testing.assert_allclose(float(rj(swapped, c)), float(rj(x, c)), rtol=1e-12)
    assert abs(float(rj(x, jnp.array([-0.7]))) - float(rj(x, c))) > 1e-6
    # Its closed-form jet matches the Hessian trace.
    lap_c, grad_c = rj.laplacian_and_gradient(x, c)
    lap_h, grad_h = laplacian_and_gradient(lambda y: rj(y, c), x, "hessian")
    np.testing.assert_allclose(lap_c, lap_h, rtol=1e-10)
    np.testing.assert_allclose(grad_c, grad_h, rtol=1e-10, atol=1e-12)
