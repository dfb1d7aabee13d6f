"""One jitted VMC optimisation step for the whole family of Hamiltonians.

A step (1) draws one depth per walker group (stratified over the training
range), (2) moves every walker by Metropolis sweeps at its group's depth,
(3) evaluates local energies, (4) builds the per-sample log-derivatives of
log ψ with respect to all real parameters, and (5) updates the parameters by
SPRING or Adam. A step whose energies, update or new parameters are not finite
is rejected inside the same jitted function: parameters and optimiser state
are rolled back, and the ``accepted`` flag in the statistics is false.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray, PyTree

from qernel_cli.hamiltonian.ewald import EwaldSum
from qernel_cli.hamiltonian.local_energy import LocalEnergy, local_energy
from qernel_cli.lattice import Supercell
from qernel_cli.vmc import spring
from qernel_cli.vmc.family import stratified_depths
from qernel_cli.vmc.mcmc import Walkers, adapt_width, metropolis_sweeps, with_conditions


@dataclasses.dataclass(frozen=True)
class Physics:
    """What the local energy needs, in moiré units (lengths a_M, energies E_M)."""

    supercell: Supercell
    phi_deg: float
    coulomb_strength: float  # U; 0 turns the interaction off
    v_min: float  # training depths V/E_M
    v_max: float


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Optimisation settings (see ``OptimizerConfig``)."""

    optimizer: str
    learning_rate: float
    lr_decay_steps: float
    damping: float
    momentum: float
    max_norm: float
    clip_mad: float
    mcmc_steps: int
    target_acceptance: float
    lattice_hops: bool = False


class TrainState(eqx.Module):
    """Everything that a checkpoint holds besides the model structure."""

    params: PyTree
    opt_state: PyTree
    walkers: Walkers
    key: PRNGKeyArray
    step: Array


def learning_rate(hyper: Hyper, step: Array) -> Array:
    """η_t = η₀ / (1 + t/decay)."""
    return hyper.learning_rate / (1.0 + step / hyper.lr_decay_steps)


def adam(hyper: Hyper) -> optax.GradientTransformation:
    return optax.adam(lambda t: learning_rate(hyper, t))


def init_opt_state(hyper: Hyper, params: PyTree) -> PyTree:
    flat, _ = ravel_pytree(params)
    if hyper.optimizer == "spring":
        return jnp.zeros_like(flat)
    return adam(hyper).init(flat)


def log_abs_fn(model: Callable) -> Callable:
    """(positions, c) → log|ψ| for the sampler."""
    return lambda x, c: jnp.real(model(x, c))


def local_energies(model: Callable, walkers: Walkers, physics: Physics, ewald: EwaldSum | None) -> LocalEnergy:
    """Local energy components of every walker, shape (groups, walkers_per_group), units E_M."""

    def one(x, c):
        return local_energy(
            lambda y: model(y, c),
            x,
            v=c[0],
            phi_deg=physics.phi_deg,
            coulomb_strength=physics.coulomb_strength,
            interaction=ewald,
        )

    return jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(0, 0))(walkers.positions, walkers.conditions)


def log_derivatives(params: PyTree, static: PyTree, walkers: Walkers) -> Array:
    """O_i = ∂ log ψ(x_i) / ∂θ for every walker, complex, shape (groups, walkers, n_params)."""
    flat, unravel = ravel_pytree(params)

    def parts(p, x, c):
        value = eqx.combine(unravel(p), static)(x, c)
        return jnp.stack([jnp.real(value), jnp.imag(value)])

    jac = jax.vmap(jax.vmap(jax.jacrev(parts), in_axes=(None, 0, None)), in_axes=(None, 0, 0))(
        flat, walkers.positions, walkers.conditions
    )
    return jac[..., 0, :] + 1j * jac[..., 1, :]


def _all_finite(*trees) -> Array:
    leaves = [leaf for tree in trees for leaf in jax.tree.leaves(tree) if eqx.is_inexact_array(leaf)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def vmc_step(
    state: TrainState,
    static: PyTree,
    physics: Physics,
    hyper: Hyper,
    ewald: EwaldSum | None,
    fault: Array | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimisation step (pure; jit with static ``static``, ``physics``, ``hyper``).

    ``fault`` (testing only): a scalar that is added to the local energies, so
    a NaN there simulates a numerical failure.
    """
    key, k_depth, k_mcmc = jax.random.split(state.key, 3)
    model = eqx.combine(state.params, static)
    n_groups = state.walkers.conditions.shape[0]
    depths = stratified_depths(k_depth, n_groups, physics.v_min, physics.v_max)
    walkers = with_conditions(log_abs_fn(model), state.walkers, depths[:, None])
    walkers, acceptance = metropolis_sweeps(log_abs_fn(model), walkers, k_mcmc, physics.supercell, hyper.mcmc_steps, hyper.lattice_hops)
    walkers = adapt_width(walkers, acceptance, hyper.target_acceptance)

    energies = local_energies(model, walkers, physics, ewald)
    e_total = energies.total if fault is None else energies.total + fault
    e_loc = e_total + 1j * energies.kinetic_imag
    residual = spring.energy_residuals(e_loc, hyper.clip_mad)
    jac = log_derivatives(state.params, static, walkers)
    flat, unravel = ravel_pytree(state.params)
    lr = learning_rate(hyper, state.step)
    if hyper.optimizer == "spring":
        direction = spring.spring_direction(jac, residual, state.opt_state, hyper.damping, hyper.momentum)
        update = spring.constrain_step(jac, direction, lr, hyper.max_norm)
        opt_state = direction
    else:
        grad = spring.energy_gradient(jac, residual)
        update, opt_state = adam(hyper).update(grad, state.opt_state, flat)
    new_flat = flat + update
    ok = _all_finite(e_total, update, new_flat)
    params = jax.tree.map(lambda new, old: jnp.where(ok, new, old), unravel(new_flat), state.params)
    opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), opt_state, state.opt_state)
    new_state = TrainState(params=params, opt_state=opt_state, walkers=walkers, key=key, step=state.step + 1)

    w = e_total.shape[1]
    stats = {
        "depth": depths,
        "energy": jnp.mean(e_total, axis=1),
        "energy_error": jnp.std(e_total, axis=1) / jnp.sqrt(w),
        "variance": jnp.var(e_total, axis=1),
        "kinetic": jnp.mean(energies.kinetic, axis=1),
        "potential": jnp.mean(energies.potential, axis=1),
        "interaction": jnp.mean(energies.interaction, axis=1),
        "acceptance": acceptance,
        "move_width": walkers.width,
        "learning_rate": lr,
        "update_norm": jnp.linalg.norm(update),
        "accepted": ok,
    }
    return new_state, stats


def make_step(static: PyTree, physics: Physics, hyper: Hyper, ewald: EwaldSum | None) -> Callable:
    """The jitted step ``(state, fault) -> (state, stats)``; compiled once per run."""

    @eqx.filter_jit
    def step(state: TrainState, fault: Array) -> tuple[TrainState, dict[str, Array]]:
        return vmc_step(state, static, physics, hyper, ewald, fault)

    return step
