"""Pre-training fits the determinant part of ψ and leaves the Jastrow factors at their initial values."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from clitools import TINY_RUN

from qernel_cli.config import resolve
from qernel_cli.vmc.assembly import build, initial_state
from qernel_cli.vmc.pretrain import pretrain


def _run():
    overrides = [o for o in TINY_RUN if not o.startswith(("hamiltonian.coulomb", "model.pair_jastrow_qmax", "model.radial_jastrow", "pretrain.steps"))]
    return build(
        resolve("moire-tiny", [*overrides, "model.pair_jastrow_qmax=1.2", "model.radial_jastrow=2", "pretrain.steps=3"])
    )


def test_log_psi_is_the_determinant_part_plus_the_jastrow_factors():
    run = _run()
    model = eqx.combine(run.params, run.static)
    x = jax.random.uniform(jax.random.PRNGKey(0), (run.config.n_electrons, 2)) * 2.0
    c = jnp.array([0.3])
    model = eqx.tree_at(lambda m: m.pair_jastrow.out.bias, model, jnp.linspace(0.1, 0.3, model.pair_jastrow.n_shells))
    model = eqx.tree_at(lambda m: m.radial_jastrow.out.bias, model, jnp.array([0.5, -0.2, 0.0, 0.0]))
    jastrows = model.jastrow(x) + model.pair_jastrow(x, model.normalise(c)) + model.radial_jastrow(x, model.normalise(c))
    assert abs(float(model.radial_jastrow(x, model.normalise(c)))) > 1e-3
    assert abs(float(jastrows)) > 1e-3  # the factors contribute, so the comparison below can fail
    np.testing.assert_allclose(complex(model(x, c)), complex(model.determinant_log_psi(x, c)) + float(jastrows), rtol=1e-12)


def test_pretraining_moves_the_determinants_but_not_the_jastrow_factors():
    run = _run()
    state = initial_state(run, jax.random.PRNGKey(0))
    params, _, losses, _ = pretrain(run, state.params, jax.random.PRNGKey(1), state.walkers)
    assert np.all(np.isfinite(losses))
    before, after = run.params, params
    jastrow = lambda p: (p.jastrow, p.pair_jastrow, p.radial_jastrow)  # noqa: E731
    for old, new in zip(jax.tree.leaves(jastrow(before)), jax.tree.leaves(jastrow(after))):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    moved = [float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(before.orbitals), jax.tree.leaves(after.orbitals))]
    assert max(moved) > 1e-6
