"""Walker chunking: same local energies and log-derivatives, memory bounded for any walker count."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clitools import TINY_RUN

from qernel_cli.config import resolve
from qernel_cli.vmc import spring
from qernel_cli.vmc.step import energy_gradient, local_energies, log_derivatives
from qernel_cli.vmc.assembly import build, initial_state

SMALL = [s for s in TINY_RUN if s.startswith(("model.", "pretrain.target"))]
"""The tests' tiny model (chunking splits walkers, whatever the model); the Ewald sum stays on."""


@pytest.fixture(scope="module")
def run_and_state():
    run = build(resolve("moire-tiny", [*SMALL, "sampler.walkers=24", "training.depths_per_step=2"]))
    return run, initial_state(run, jax.random.PRNGKey(3))


@pytest.fixture(scope="module")
def four_groups():
    run = build(resolve("moire-tiny", [*SMALL, "sampler.walkers=24", "training.depths_per_step=4"]))
    return run, initial_state(run, jax.random.PRNGKey(3))


def test_chunked_energies_and_log_derivatives_equal_unchunked(four_groups):
    """4 groups of 6 walkers. Chunks of 3 lie inside the groups and 12 hold two whole groups (c shared by the
    chunk's walkers of a group); 5 and 7 straddle groups and leave a remainder (c per walker)."""
    run, state = four_groups
    energies = jax.jit(
        lambda params, walkers, chunk: local_energies(eqx.combine(params, run.static), walkers, run.physics, run.ewald, chunk),
        static_argnums=2,
    )
    full = energies(state.params, state.walkers, 0)
    for chunk in (3, 5, 12):
        chunked = energies(state.params, state.walkers, chunk)
        for name in ("total", "kinetic", "kinetic_imag", "potential", "interaction"):
            np.testing.assert_allclose(getattr(chunked, name), getattr(full, name), rtol=1e-11, atol=1e-11)
    jacobian = jax.jit(lambda params, walkers, chunk: log_derivatives(params, run.static, walkers, chunk), static_argnums=2)
    jac_full = spring.flat_rows(jacobian(state.params, state.walkers, 0))
    assert jac_full.shape == (4, 6, 2, sum(x.size for x in jax.tree.leaves(state.params)))
    for chunk in (3, 7, 12):
        jac_chunked = spring.flat_rows(jacobian(state.params, state.walkers, chunk))
        np.testing.assert_allclose(jac_chunked, jac_full, rtol=1e-11, atol=1e-11)
    # The Adam gradient (one reverse pass, chunked or not) equals the one from per-sample rows.
    rng = np.random.default_rng(0)
    eps = spring.energy_residuals(jnp.asarray(rng.normal(size=(4, 6)) + 0.3j * rng.normal(size=(4, 6))), 1e9)
    rows = spring.energy_gradient(jac_full, eps)
    for chunk in (0, 3, 5, 12):
        one_pass = jax.jit(lambda params, walkers: energy_gradient(params, run.static, walkers, eps, chunk))(state.params, state.walkers)
        np.testing.assert_allclose(one_pass, rows, rtol=1e-9, atol=1e-12 * float(jnp.max(jnp.abs(rows))))


def _temp_bytes(run, state, walkers_per_group: int, chunk: int) -> int:
    """XLA's scratch memory for the local energies of 2 × walkers_per_group walkers."""
    reps = walkers_per_group // state.walkers.positions.shape[1]
    walkers = eqx.tree_at(lambda w: w.positions, state.walkers, np.tile(np.asarray(state.walkers.positions), (1, reps, 1, 1)))

    def energies(params, walkers):
        return local_energies(eqx.combine(params, run.static), walkers, run.physics, run.ewald, chunk).total

    compiled = jax.jit(energies).lower(state.params, walkers).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_chunking_bounds_scratch_memory(run_and_state):
    run, state = run_and_state
    chunked = [_temp_bytes(run, state, w, 4) for w in (12, 96)]
    unchunked = _temp_bytes(run, state, 96, 0)
    # With chunks of 4 walkers the scratch memory hardly grows with 8× the walkers (only the outputs do) ...
    assert chunked[1] < 1.5 * chunked[0] + 96 * 2 * 64
    # ... while without chunks the forward-Laplacian intermediates of all walkers are live at once.
    assert unchunked > 4 * chunked[1]
