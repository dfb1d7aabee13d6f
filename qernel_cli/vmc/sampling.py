"""Equilibrated Metropolis sampling of a trained family wavefunction at chosen depths.

Every requested depth V gets its own group of walkers (one Hamiltonian per
group). Chains start from the checkpoint's walkers, are re-equilibrated at the
new depth (``burn_in`` sweeps, rounded up to whole blocks of ``sweeps``, with
the move width adapted after every block; it then stays fixed so the recorded
chain is a proper Markov chain), and then one record is
taken every ``sweeps`` Metropolis sweeps: positions and local-energy components
of every walker. Records are passed to ``on_record`` as they are made.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qernel_cli import supervisor
from qernel_cli.vmc.mcmc import Walkers, equilibrate, with_conditions
from qernel_cli.vmc.step import local_energies, log_abs_fn
from qernel_cli.vmc.assembly import Run, model_sweeps


class TooManyWalkers(ValueError):
    """More walkers per depth were asked for than the checkpoint holds distinct configurations."""


def starting_walkers(trained: Walkers, depths_moire: np.ndarray, walkers: int) -> Walkers:
    """``walkers`` chains per depth, each from its own trained configuration.

    The checkpoint holds g × w configurations (w chains at each of g training
    strata). At every depth the starts are taken from the whole pool, the
    strata nearest in depth first (ties to the lower stratum), so no two chains
    at one depth start from the same configuration and the walkers are
    independent samples after the burn-in. More walkers than g × w are refused:
    copies of one start would be correlated, and the error bars count walkers
    as independent.
    """
    centres = np.asarray(trained.conditions[:, 0])
    pool = np.asarray(trained.positions)  # (g, w, n, 2)
    g, w = pool.shape[:2]
    if walkers > g * w:
        raise TooManyWalkers(
            f"{walkers} walkers per depth, but the checkpoint holds {g * w} distinct configurations; "
            f"use at most {g * w} walkers and more records"
        )
    positions, widths = [], []
    for v in depths_moire:
        order = np.argsort(np.abs(centres - v), kind="stable")
        positions.append(pool[order].reshape(g * w, *pool.shape[2:])[:walkers])
        widths.append(float(trained.width[order[0]]))
    positions = jnp.asarray(np.stack(positions))
    conditions = jnp.asarray(np.asarray(depths_moire, dtype=np.float64))[:, None]
    zeros = jnp.zeros(positions.shape[:2])
    return Walkers(positions=positions, conditions=conditions, log_abs=zeros, width=jnp.asarray(widths))


def sample(
    run: Run,
    params: Any,
    trained_walkers: Walkers,
    depths_moire: np.ndarray,
    *,
    walkers: int,
    records: int,
    sweeps: int,
    burn_in: int,
    key: jax.Array,
    on_record: Callable[[int, dict[str, np.ndarray]], None],
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Record ``records`` snapshots at every depth; returns how many were taken (fewer if ``stop()``).

    A record holds ``positions`` (D, W, N, 2) in a_M, local-energy components
    ``total``, ``kinetic``, ``potential``, ``interaction``, ``kinetic_imag``
    (D, W) in E_M per configuration (not per electron), and ``acceptance`` (D,).
    """
    model_log_abs = log_abs_fn(eqx.combine(params, run.static))
    state = starting_walkers(trained_walkers, np.asarray(depths_moire), walkers)
    state = with_conditions(model_log_abs, state, state.conditions)

    advance = model_sweeps(run, sweeps)  # the burn-in in blocks of the records' sweeps: one program, compiled once

    @eqx.filter_jit
    def energies(params, state):
        e = local_energies(eqx.combine(params, run.static), state, run.physics, run.ewald, run.settings.walker_chunk, run.settings.laplacian_sparsity)
        return {"total": e.total, "kinetic": e.kinetic, "potential": e.potential, "interaction": e.interaction, "kinetic_imag": e.kinetic_imag}

    target = run.config.sampler.target_acceptance
    supervisor.phase("sampling burn-in")
    try:
        state = equilibrate(lambda s, k: advance(params, s, k), state, key, max(1, -(-burn_in // sweeps)), target, stop=stop, after_block=supervisor.beat)
    except KeyboardInterrupt:  # stop() during the burn-in: no records
        return 0
    supervisor.phase("sampling")
    for r in range(records):
        if stop():
            return r
        state, acceptance = advance(params, state, jax.random.fold_in(key, 10_000 + r))
        record = jax.device_get({"positions": state.positions, "acceptance": acceptance, **energies(params, state)})
        on_record(r, record)
        supervisor.beat()
    return records
