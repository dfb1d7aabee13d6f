"""Pre-training: fit the determinant part of ψ_θ(·; c) to the non-interacting Bloch determinant at each depth.

Every step draws one depth per group (stratified over the training range),
diagonalises the non-interacting moiré Hamiltonian by plane waves at each
(:func:`qernel_cli.hamiltonian.bands.lowest_orbitals`) and samples each
group's persistent walkers from |ψ_B(·; v_g)|². The loss is the infidelity
of the model's determinant part D_θ (ψ_θ without its Jastrow factors, which
keep their initial values: the cusps and no long-range correlation, so that
VMC starts from a Slater–Jastrow state rather than from a Jastrow bent to
undo the correlation the Bloch determinant lacks),

    1 − F,   F = |E_B[D_θ/ψ_B]|² / E_B[|D_θ/ψ_B|²] = |⟨ψ_B|D_θ⟩|² / (⟨ψ_B|ψ_B⟩⟨D_θ|D_θ⟩),

averaged over groups. Unlike a fit of single orbitals it does not depend on
the arbitrary phase of each Bloch state or on the choice inside a degenerate
open shell, and it is invariant to the normalisation of D_θ. The samples
do not depend on θ, so autodiff of the estimate gives its exact gradient.
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from qernel_cli import linalg
from qernel_cli.hamiltonian.bands import Orbitals, evaluate_orbitals, lowest_orbitals
from qernel_cli.lattice import Supercell
from qernel_cli.vmc.mcmc import Walkers, adapt_width, metropolis_sweeps


def bloch_log_psi(orbitals: Orbitals, n_up: int, positions: Float[Array, "n 2"]) -> Array:
    """log of the Bloch determinant(s); ``orbitals`` holds the n_up up orbitals then the down ones."""

    def logdet(orb_slice, x):
        log_abs, phase = linalg.log_det(evaluate_orbitals(orb_slice, x))  # safe on several CPU devices (qernel_cli.linalg)
        return jax.lax.complex(log_abs, phase)

    up, down = _take(orbitals, slice(0, n_up)), _take(orbitals, slice(n_up, None))
    return logdet(up, positions[:n_up]) + logdet(down, positions[n_up:])


def _take(orbitals: Orbitals, index: slice) -> Orbitals:
    return Orbitals(
        k=orbitals.k[index], G=orbitals.G, coefficients=orbitals.coefficients[index],
        energies=orbitals.energies[index], area=orbitals.area,
    )


def family_orbitals(
    supercell: Supercell, n_up: int, n_down: int, depths: np.ndarray, phi_deg: float, n_shells: int
) -> Orbitals:
    """Occupied Bloch orbitals at each depth, stacked along a leading group axis.

    Spin up orbitals come first, then spin down (each spin fills its own lowest states).
    """
    stacked = []
    for v in np.asarray(depths, dtype=np.float64):
        up = lowest_orbitals(supercell, n_up, float(v), phi_deg, n_shells)
        down = lowest_orbitals(supercell, n_down, float(v), phi_deg, n_shells)
        stacked.append(
            Orbitals(
                k=np.concatenate([up.k, down.k]),
                G=up.G,
                coefficients=np.concatenate([up.coefficients, down.coefficients]),
                energies=np.concatenate([up.energies, down.energies]),
                area=up.area,
            )
        )
    return jax.tree.map(lambda *leaves: np.stack(leaves), *stacked)


def infidelity(log_model: Array, log_bloch: Array) -> Array:
    """1 − F from samples of |ψ_B|² (one group): log_model, log_bloch complex, shape (w,)."""
    delta = log_model - log_bloch
    shift = jax.lax.stop_gradient(jnp.max(jnp.real(delta)))
    ratio = jnp.exp(delta - shift)
    overlap = jnp.abs(jnp.mean(ratio)) ** 2
    norm = jnp.mean(jnp.abs(ratio) ** 2)
    return 1.0 - overlap / norm


class PretrainState(eqx.Module):
    params: PyTree
    opt_state: PyTree
    walkers: Walkers  # sampled from |ψ_B|²; ``conditions`` hold the depths (g, 1)
    key: PRNGKeyArray


def make_pretrain_step(
    static: PyTree, supercell: Supercell, n_up: int, optimizer: optax.GradientTransformation, mcmc_steps: int
) -> Callable:
    """Jitted ``(state, orbitals) -> (state, loss per group, acceptance)``."""

    @eqx.filter_jit
    def step(state: PretrainState, orbitals: Orbitals):
        key, k_mcmc = jax.random.split(state.key)
        # Sample every group from its Bloch determinant; the group's orbitals act as its "conditions".
        bloch_walkers = Walkers(
            positions=state.walkers.positions,
            conditions=orbitals,
            log_abs=jax.vmap(jax.vmap(lambda x, o: jnp.real(bloch_log_psi(o, n_up, x)), (0, None)), (0, 0))(
                state.walkers.positions, orbitals
            ),
            width=state.walkers.width,
        )
        moved, acceptance = metropolis_sweeps(
            lambda x, o: jnp.real(bloch_log_psi(o, n_up, x)), bloch_walkers, k_mcmc, supercell, mcmc_steps
        )
        moved = adapt_width(moved, acceptance)
        walkers = Walkers(
            positions=moved.positions, conditions=state.walkers.conditions, log_abs=moved.log_abs, width=moved.width
        )
        log_bloch = jax.vmap(jax.vmap(lambda x, o: bloch_log_psi(o, n_up, x), (0, None)), (0, 0))(
            walkers.positions, orbitals
        )

        def loss_fn(params):
            model = eqx.combine(params, static)
            log_model = jax.vmap(jax.vmap(model.determinant_log_psi, (0, None)), (0, 0))(walkers.positions, walkers.conditions)
            per_group = jax.vmap(infidelity)(log_model, log_bloch)
            return jnp.mean(per_group), per_group

        (_, per_group), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ok = jnp.all(jnp.isfinite(per_group)) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)])
        )
        params = jax.tree.map(lambda new, old: jnp.where(ok, new, old), params, state.params)
        opt_state = jax.tree.map(lambda new, old: jnp.where(ok, new, old), opt_state, state.opt_state)
        return PretrainState(params=params, opt_state=opt_state, walkers=walkers, key=key), per_group, acceptance

    return step
