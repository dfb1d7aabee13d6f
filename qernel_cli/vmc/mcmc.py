"""Persistent Metropolis chains with all-electron Gaussian moves on the supercell torus.

Walkers are arranged in groups, one group per Hamiltonian parameter vector c
(all walkers of a group share c). Each group has its own move width, adapted
between sweeps towards a target acceptance; within a sweep the width is fixed,
so every sweep satisfies detailed balance for |ψ(·; c)|².

Optional lattice hops: after every Gaussian move, one electron per walker
(chosen uniformly) is proposed to jump by one of the six nearest-neighbour
moiré lattice vectors (chosen uniformly). The proposal is symmetric, so the
Metropolis rule keeps |ψ|² stationary. In a deep moiré potential Gaussian
moves of the adapted (small) width almost never carry an electron over the
barrier to a neighbouring minimum, so without hops the site occupations of a
chain are frozen and crystal orderings are never sampled.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from qernel_cli.lattice import MOIRE_VECTORS, Supercell

HOP_VECTORS = np.concatenate([MOIRE_VECTORS, -MOIRE_VECTORS, [MOIRE_VECTORS[0] - MOIRE_VECTORS[1], MOIRE_VECTORS[1] - MOIRE_VECTORS[0]]])
"""The six nearest-neighbour vectors of the moiré lattice (a_M)."""

LogAbs = Callable[[Float[Array, "n 2"], Float[Array, " c"]], Float[Array, ""]]
"""log|ψ(r; c)| of one configuration (positions in a_M)."""


class Walkers(eqx.Module):
    """The state of all Markov chains.

    Attributes:
        positions: electron positions, shape (groups, walkers_per_group, N, 2), units a_M, wrapped into the supercell.
        conditions: Hamiltonian parameters per group, shape (groups, n_conditions).
        log_abs: log|ψ| at the current positions, shape (groups, walkers_per_group).
        width: Gaussian move width per group (units a_M), shape (groups,).
    """

    positions: Float[Array, "g w n 2"]
    conditions: Float[Array, "g c"]
    log_abs: Float[Array, "g w"]
    width: Float[Array, " g"]


def batched_log_abs(log_abs: LogAbs) -> Callable:
    """vmap ``log_abs`` over walkers (inner) and groups (outer, each with its own c)."""
    over_walkers = jax.vmap(log_abs, in_axes=(0, None))
    return jax.vmap(over_walkers, in_axes=(0, 0))


@eqx.filter_jit
def all_log_abs(log_abs: LogAbs, positions: Float[Array, "g w n 2"], conditions: Float[Array, "g c"]) -> Float[Array, "g w"]:
    """log|ψ| of every walker, as one compiled program (an equinox module ``log_abs`` is compiled once per structure)."""
    return batched_log_abs(log_abs)(positions, conditions)


def initial_walkers(
    log_abs: LogAbs,
    key: PRNGKeyArray,
    supercell: Supercell,
    conditions: Float[Array, "g c"],
    walkers_per_group: int,
    n_electrons: int,
    width: float,
) -> Walkers:
    """Uniformly random positions in the supercell for every walker.

    ``conditions`` may be any pytree whose leaves have a leading group axis.
    """
    g = jax.tree.leaves(conditions)[0].shape[0]
    frac = jax.random.uniform(key, (g, walkers_per_group, n_electrons, 2), dtype=jnp.float64)
    positions = frac @ jnp.asarray(supercell.cell)
    return Walkers(
        positions=positions,
        conditions=conditions,
        log_abs=all_log_abs(log_abs, positions, conditions),
        width=jnp.full((g,), width, dtype=jnp.float64),
    )


def with_conditions(log_abs: LogAbs, walkers: Walkers, conditions: Float[Array, "g c"]) -> Walkers:
    """Give each group new Hamiltonian parameters (keeping positions) and refresh log|ψ|."""
    return eqx.tree_at(
        lambda w: (w.conditions, w.log_abs),
        walkers,
        (jnp.asarray(conditions), all_log_abs(log_abs, walkers.positions, conditions)),
    )


def metropolis_sweeps(
    log_abs: LogAbs,
    walkers: Walkers,
    key: PRNGKeyArray,
    supercell: Supercell,
    n_steps: int,
    lattice_hops: bool = False,
) -> tuple[Walkers, Float[Array, " g"]]:
    """``n_steps`` Metropolis steps of every walker; returns new walkers and acceptance per group.

    Each step proposes moving all electrons of a walker at once by independent
    Gaussian displacements of standard deviation ``width`` (of its group) and
    wraps them into the supercell; |ψ|² is periodic so wrapping is exact. With
    ``lattice_hops`` a single-electron nearest-neighbour hop follows every
    Gaussian move (see the module docstring). The returned acceptance is that
    of the Gaussian moves (which the width adaptation steers).
    """
    f = batched_log_abs(log_abs)
    hops = jnp.asarray(HOP_VECTORS)

    def metropolis(proposal, positions, log_abs_now, key):
        log_abs_new = f(proposal, walkers.conditions)
        log_ratio = 2.0 * (log_abs_new - log_abs_now)
        u = jax.random.uniform(key, log_ratio.shape, dtype=log_ratio.dtype)
        accept = jnp.log(u) < log_ratio  # NaN proposals are never accepted
        positions = jnp.where(accept[..., None, None], proposal, positions)
        return positions, jnp.where(accept, log_abs_new, log_abs_now), accept

    def step(carry, key):
        positions, log_abs_now, accepted = carry
        if lattice_hops:
            k_move, k_accept, k_electron, k_vector, k_hop = jax.random.split(key, 5)
        else:
            k_move, k_accept = jax.random.split(key)
        noise = jax.random.normal(k_move, positions.shape, dtype=positions.dtype)
        proposal = supercell.wrap(positions + walkers.width[:, None, None, None] * noise)
        positions, log_abs_now, accept = metropolis(proposal, positions, log_abs_now, k_accept)
        if lattice_hops:
            g, w, n = positions.shape[:3]
            electron = jax.random.randint(k_electron, (g, w), 0, n)
            vector = hops[jax.random.randint(k_vector, (g, w), 0, len(HOP_VECTORS))]
            shift = jax.nn.one_hot(electron, n, dtype=positions.dtype)[..., None] * vector[:, :, None, :]
            positions, log_abs_now, _ = metropolis(supercell.wrap(positions + shift), positions, log_abs_now, k_hop)
        return (positions, log_abs_now, accepted + accept), None

    init = (walkers.positions, walkers.log_abs, jnp.zeros(walkers.log_abs.shape, dtype=jnp.int32))
    (positions, log_abs_now, accepted), _ = jax.lax.scan(step, init, jax.random.split(key, n_steps))
    acceptance = jnp.mean(accepted.astype(walkers.width.dtype), axis=1) / n_steps
    walkers = eqx.tree_at(lambda w: (w.positions, w.log_abs), walkers, (positions, log_abs_now))
    return walkers, acceptance


def adapt_width(
    walkers: Walkers,
    acceptance: Float[Array, " g"],
    target: float = 0.5,
    rate: float = 1.0,
    bounds: tuple[float, float] = (1e-3, 2.0),
) -> Walkers:
    """Multiplicative width update towards the target acceptance: w ← w·exp(rate·(acc − target))."""
    width = jnp.clip(walkers.width * jnp.exp(rate * (acceptance - target)), *bounds)
    return eqx.tree_at(lambda w: w.width, walkers, width)


Sweeps = Callable[[Walkers, PRNGKeyArray], tuple[Walkers, Float[Array, " g"]]]
"""A (jitted) block of Metropolis sweeps: new walkers and acceptance per group."""


def equilibrate(
    sweeps: Sweeps,
    walkers: Walkers,
    key: PRNGKeyArray,
    blocks: int,
    target: float,
    *,
    first_block: int = 0,
    stop: Callable[[], bool] = lambda: False,
    after_block: Callable[[], None] = lambda: None,
) -> Walkers:
    """``blocks`` blocks of ``sweeps``, the move width adapted towards ``target`` acceptance after each.

    Block i uses the key ``fold_in(key, first_block + i)``. ``stop()`` is
    polled before every block (KeyboardInterrupt when true); ``after_block()``
    runs after each (the supervisor's heartbeat).
    """
    for i in range(blocks):
        if stop():
            raise KeyboardInterrupt
        walkers, acceptance = sweeps(walkers, jax.random.fold_in(key, first_block + i))
        walkers = adapt_width(walkers, acceptance, target)
        after_block()
    return walkers
