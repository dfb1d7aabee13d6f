"""Metropolis sampler: samples the right distribution, stays in the cell, adapts its width."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.lattice import Supercell
from qernel_cli.vmc.mcmc import adapt_width, equilibrate, initial_walkers, metropolis_sweeps, with_conditions

SC = Supercell(2, 2)


def _log_abs(positions, c):
    # A periodic single-particle density |ψ|² ∝ exp(2 c cos(B1·r)), exactly samplable marginal in s1.
    b1 = jnp.asarray(SC.reciprocal[0])
    return c[0] * jnp.sum(jnp.cos(positions @ b1))


@pytest.mark.parametrize("hops", [False, True])
def test_samples_follow_psi_squared_and_width_adapts(hops):
    conditions = jnp.array([[0.0], [1.0]])
    key = jax.random.PRNGKey(0)
    w = initial_walkers(_log_abs, key, SC, conditions, walkers_per_group=512, n_electrons=2, width=0.05)
    sweep = jax.jit(lambda w, k: metropolis_sweeps(_log_abs, w, k, SC, 10, hops), donate_argnums=0)
    samples = []
    for i in range(60):
        w, acc = sweep(w, jax.random.fold_in(key, i))
        w = adapt_width(w, acc)
        if i >= 20:
            samples.append(np.asarray(SC.fractional(w.positions))[..., 0])
    # c = 0 is uniform: every move is accepted and the width grows to its bound.
    assert float(acc[0]) == 1.0 and float(w.width[0]) == 2.0
    assert abs(float(acc[1]) - 0.5) < 0.12
    frac = np.asarray(SC.fractional(w.positions))
    assert np.all((frac >= 0) & (frac < 1))
    s1 = np.concatenate(samples, axis=1)  # (groups, samples, N)
    # ⟨cos 2π s1⟩ under p ∝ exp(2c cos 2π s1) is I1(2c)/I0(2c); 0 for c = 0.
    from scipy.special import i0, i1

    for g, c in enumerate([0.0, 1.0]):
        m = np.mean(np.cos(2 * np.pi * s1[g]))
        assert abs(m - i1(2 * c) / i0(2 * c)) < 0.03, (c, m)
    # The log|ψ| cache is consistent with the positions.
    direct = jax.vmap(jax.vmap(_log_abs, (0, None)), (0, 0))(w.positions, w.conditions)
    assert np.allclose(direct, w.log_abs)
    w2 = with_conditions(_log_abs, w, jnp.array([[2.0], [3.0]]))
    assert np.allclose(jax.vmap(jax.vmap(_log_abs, (0, None)), (0, 0))(w2.positions, w2.conditions), w2.log_abs)


def test_nan_proposals_are_rejected():
    def log_abs(positions, c):
        return jnp.where(positions[0, 0] > 1.0, jnp.nan, 0.0)

    w = initial_walkers(lambda p, c: 0.0 * jnp.sum(p), jax.random.PRNGKey(1), SC, jnp.zeros((1, 1)), 64, 1, 0.3)
    w, _ = metropolis_sweeps(log_abs, w, jax.random.PRNGKey(2), SC, 20)
    assert np.all(np.isfinite(np.asarray(w.log_abs)))


def test_lattice_hops_mix_site_occupations_of_a_deep_potential():
    """Tiny Gaussian moves never leave a deep well; nearest-neighbour hops visit every site equally."""
    from qernel_cli.lattice import MOIRE_G

    def deep(positions, c):
        return 10.0 * jnp.sum(jnp.cos(positions @ jnp.asarray(MOIRE_G).T))

    start = initial_walkers(deep, jax.random.PRNGKey(3), SC, jnp.zeros((1, 1)), 2000, 1, 0.01)
    start = with_conditions(deep, eqx_positions(start, 0.01 * jax.random.normal(jax.random.PRNGKey(4), (1, 2000, 1, 2))), start.conditions)
    counts = {}
    for hops in (False, True):
        w, _ = metropolis_sweeps(deep, start, jax.random.PRNGKey(5), SC, 60, hops)
        frac = np.asarray(SC.fractional(w.positions))[0, :, 0] * 2  # the 2×2 cell holds sites (0,0), a1, a2, a1+a2
        site = np.round(frac).astype(int) % 2
        counts[hops] = np.bincount(site[:, 0] * 2 + site[:, 1], minlength=4) / 2000
    assert counts[False][0] == 1.0
    assert np.all(np.abs(counts[True] - 0.25) < 0.05), counts[True]


def eqx_positions(walkers, positions):
    import equinox as eqx

    return eqx.tree_at(lambda w: w.positions, walkers, SC.wrap(positions))


def test_equilibrate_steers_each_group_to_the_target_acceptance_and_stops_when_asked():
    """The one burn-in helper: per-group widths reach the target acceptance; block i uses fold_in(key, first + i)."""
    conditions = jnp.array([[0.0], [2.0]])  # flat |ψ|² (wide moves accepted) and a peaked one
    key = jax.random.PRNGKey(1)
    w = initial_walkers(_log_abs, key, SC, conditions, walkers_per_group=256, n_electrons=2, width=1e-3)
    sweep = jax.jit(lambda w, k: metropolis_sweeps(_log_abs, w, k, SC, 5))
    beats = []
    done = equilibrate(sweep, w, key, 30, 0.4, after_block=lambda: beats.append(1))
    assert len(beats) == 30
    _, acceptance = sweep(done, jax.random.PRNGKey(99))
    np.testing.assert_allclose(acceptance[1], 0.4, atol=0.06)  # the peaked group settles at the target
    assert float(done.width[0]) == 2.0  # the flat one accepts every move: its width grows to the largest allowed
    # the same blocks by hand, keys fold_in(key, 7 + i)
    by_hand = w
    for i in range(3):
        by_hand, acc = sweep(by_hand, jax.random.fold_in(key, 7 + i))
        by_hand = adapt_width(by_hand, acc, 0.4)
    helper = equilibrate(sweep, w, key, 3, 0.4, first_block=7)
    np.testing.assert_array_equal(helper.positions, by_hand.positions)
    np.testing.assert_array_equal(helper.width, by_hand.width)
    calls = []
    with pytest.raises(KeyboardInterrupt):
        equilibrate(sweep, w, key, 5, 0.4, stop=lambda: len(calls) >= 2, after_block=lambda: calls.append(1))
    assert len(calls) == 2
