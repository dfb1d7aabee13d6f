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

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from qernel_cli import linalg, parallel, supervisor
from qernel_cli.hamiltonian.bands import Orbitals, evaluate_orbitals, lowest_orbitals
from qernel_cli.lattice import Supercell
from qernel_cli.stores.run_dir import RunError
from qernel_cli.vmc.assembly import Run
from qernel_cli.vmc.crystal import classical_ground_state, crystal_log_psi, crystal_start, family_crystal_targets, oscillator_width
from qernel_cli.vmc.mcmc import Walkers, adapt_width, metropolis_sweeps
from qernel_cli.vmc.step import state_specs


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


TargetLogPsi = Callable[[Any, Float[Array, "n 2"]], Array]
"""log of the pre-training target (complex) of one group's target parameters at one configuration."""


def make_pretrain_step(
    static: PyTree, supercell: Supercell, target: TargetLogPsi, optimizer: optax.GradientTransformation, mcmc_steps: int
) -> Callable:
    """Jitted ``(state, targets) -> (state, loss per group, acceptance)``; ``targets`` hold each group's target parameters."""

    @eqx.filter_jit
    def step(state: PretrainState, targets: PyTree):
        key, k_mcmc = jax.random.split(state.key)
        log_abs = lambda x, t: jnp.real(target(t, x))  # noqa: E731
        # Sample every group from its target; the group's target parameters act as its "conditions".
        target_walkers = Walkers(
            positions=state.walkers.positions,
            conditions=targets,
            log_abs=jax.vmap(jax.vmap(log_abs, (0, None)), (0, 0))(state.walkers.positions, targets),
            width=state.walkers.width,
        )
        moved, acceptance = metropolis_sweeps(log_abs, target_walkers, k_mcmc, supercell, mcmc_steps)
        moved = adapt_width(moved, acceptance)
        walkers = Walkers(
            positions=moved.positions, conditions=state.walkers.conditions, log_abs=moved.log_abs, width=moved.width
        )
        log_target = jax.vmap(jax.vmap(lambda x, t: target(t, x), (0, None)), (0, 0))(walkers.positions, targets)

        def loss_fn(params):
            model = eqx.combine(params, static)
            log_model = jax.vmap(jax.vmap(model.determinant_log_psi, (0, None)), (0, 0))(walkers.positions, walkers.conditions)
            per_group = jax.vmap(infidelity)(log_model, log_target)
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


PRETRAIN_SHELLS = 5
"""Plane-wave shells for pre-training targets (91 G; band energies converged to ~1e-8 relative at V = 30 meV)."""


def start(run: Run, params: Any) -> tuple[Any, np.ndarray | None]:
    """The parameters pre-training starts from, and the crystal's sites (None for the Bloch target).

    For the crystal target, band-mixing envelopes are first put on the
    classical crystal (``crystal.crystal_start``), so the fidelity fit starts
    near its target instead of at the liquid.
    """
    cfg = run.config
    if cfg.pretrain.target == "both":
        raise RunError('pretrain.target = "both" names two runs; pre-train each branch with its own target (qernel_cli.stores.branches.branch_config)')
    if cfg.pretrain.target != "crystal":
        return params, None
    sites = classical_ground_state(run.physics.supercell, cfg.electrons.n_up, run.physics.phi_deg)  # (config validation: spin-polarised)
    return crystal_start(params, sites, run.physics.phi_deg), sites


def _on_sites(walkers: Walkers, sites: np.ndarray, run: Run) -> Walkers:
    """Walkers drawn from the crystal target itself: every electron on its site, displaced as |g_j|² (std s/√2 per axis).

    Chains started uniformly need hundreds of sweeps to find the sites of a
    narrow crystal, and the fidelity estimated from them meanwhile is noise.
    """
    shape = walkers.positions.shape  # (g, w, n, 2)
    centre = 0.5 * (run.physics.v_min + run.physics.v_max)
    s = oscillator_width(centre, run.physics.phi_deg)
    noise = np.random.default_rng(run.config.training.seed + 11).normal(size=shape) * s / np.sqrt(2.0)
    positions = run.physics.supercell.wrap(jnp.asarray(np.asarray(sites)[None, None] + noise))
    return eqx.tree_at(lambda w: w.positions, walkers, positions.astype(walkers.positions.dtype))


def pretrain(
    run: Run,
    params: Any,
    key: jax.Array,
    walkers: Walkers,
    on_step: Callable | None = None,
    stop: Callable[[], bool] | None = None,
    mesh: Mesh | None = None,
) -> tuple[Any, Walkers, np.ndarray, np.ndarray]:
    """Fit the model to Bloch determinants over the depth range; returns params, walkers and the log.

    ``mesh``: lay the state out over these devices as training does (default: all devices).
    """
    cfg = run.config
    n_steps = cfg.pretrain.steps
    params, sites = start(run, params)
    if sites is not None:
        walkers = _on_sites(walkers, sites, run)
    optimizer = optax.adam(cfg.pretrain.learning_rate)
    supercell, n_up = run.physics.supercell, cfg.electrons.n_up
    if sites is None:
        target: TargetLogPsi = lambda orbitals, x: bloch_log_psi(orbitals, n_up, x)  # noqa: E731
    else:
        target = lambda crystal, x: crystal_log_psi(crystal, x, supercell)  # noqa: E731
    step = make_pretrain_step(run.static, supercell, target, optimizer, cfg.sampler.steps_per_iteration)
    specs = state_specs()
    state = parallel.place(  # the layout the step returns, so that its first call compiles the program the others run
        PretrainState(params=params, opt_state=optimizer.init(params), walkers=walkers, key=key),
        PretrainState(params=specs.params, opt_state=specs.opt_state, walkers=specs.walkers, key=specs.key),
        parallel.make_mesh() if mesh is None else mesh,
    )
    n_shells = PRETRAIN_SHELLS
    rng = np.random.default_rng(cfg.training.seed + 7)
    losses, depths_log = [], []
    supervisor.phase("pre-training")
    for i in range(n_steps):
        if stop is not None and stop():
            raise KeyboardInterrupt
        g = run.n_groups
        edges = np.linspace(run.physics.v_min, run.physics.v_max, g + 1)
        depths = edges[:-1] + rng.uniform(size=g) * np.diff(edges)
        if sites is not None:
            targets = family_crystal_targets(sites, depths, run.physics.phi_deg)
        else:
            targets = family_orbitals(supercell, n_up, cfg.electrons.n_down, depths, run.physics.phi_deg, n_shells)
        state = eqx.tree_at(lambda s: s.walkers.conditions, state, np.asarray(depths[:, None]))
        state, loss, acceptance = step(state, jax.tree.map(np.asarray, targets))
        loss, acceptance = parallel.to_host((loss, acceptance))
        losses.append(np.asarray(loss))
        depths_log.append(depths)
        supervisor.beat()
        if on_step is not None:
            on_step(i, float(np.mean(losses[-1])), float(np.mean(acceptance)))
    return state.params, state.walkers, np.array(losses).reshape(n_steps, run.n_groups), np.array(depths_log).reshape(n_steps, run.n_groups)
