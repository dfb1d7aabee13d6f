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
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, PRNGKeyArray, PyTree

from qernel_cli.hamiltonian.ewald import EwaldSum
from qernel_cli.hamiltonian.local_energy import LocalEnergy, local_energy
from qernel_cli.lattice import Supercell
from qernel_cli.model.wavefunction import Wavefunction
from qernel_cli import parallel
from qernel_cli.parallel import AXIS, walker_spec
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
class StepSettings:
    """The settings one VMC step is compiled for: optimiser, sampler sweeps, clipping, chunking, precision.

    Taken from the config's ``optimizer``, ``sampler`` and ``training`` sections
    (see ``OptimizerConfig``) by ``vmc.assembly.build``; static in the jitted
    step, so changing one compiles a new step. ``Run.settings`` holds it.
    """

    optimizer: str
    learning_rate: float
    lr_decay_steps: float
    damping: float
    momentum: float
    max_norm: float
    clip_mad: float
    mcmc_steps: int
    target_acceptance: float
    clip_deviation: str = "median"  # MAD of the clip window: median or mean |E_L − median|
    lattice_hops: bool = False
    walker_chunk: int = 0  # walkers per chunk for local energies and log-derivatives (0: all at once)
    matmul_dtype: str = "float64"  # precision of SPRING's O(n² P) products ("float32" for float32 models)
    laplacian_sparsity: float = 0.0  # folx sparsity threshold of the forward Laplacian (0: dense)


class TrainState(eqx.Module):
    """Everything that a checkpoint holds besides the model structure."""

    params: PyTree
    opt_state: PyTree
    walkers: Walkers
    key: PRNGKeyArray
    step: Array


def learning_rate(settings: StepSettings, step: Array) -> Array:
    """η_t = η₀ / (1 + t/decay)."""
    return settings.learning_rate / (1.0 + step / settings.lr_decay_steps)


def adam(settings: StepSettings) -> optax.GradientTransformation:
    return optax.adam(lambda t: learning_rate(settings, t))


def init_opt_state(settings: StepSettings, params: PyTree) -> PyTree:
    flat, _ = ravel_pytree(params)
    if settings.optimizer == "spring":
        return jnp.zeros_like(flat)
    return adam(settings).init(flat)


class ModelLogAbs(eqx.Module):
    """(positions, c) → log|ψ| of ``model`` for the sampler (a module, so that jitted callers reuse their programs)."""

    model: Callable

    def __call__(self, x: Array, c: Array) -> Array:
        return jnp.real(self.model(x, c))


def log_abs_fn(model: Callable) -> ModelLogAbs:
    """(positions, c) → log|ψ| for the sampler."""
    return ModelLogAbs(model)


def _map_walkers(fn: Callable, positions: Array, conditions: Array, chunk: int) -> Any:
    """``fn(x, c)`` for every walker of (groups, walkers, …) positions, ``chunk`` walkers at a time (0: all at once).

    Chunking bounds the memory of the per-walker intermediates (forward
    Laplacian, per-sample gradients) for any walker count; results are the
    same as one vmap over all walkers. The walkers of a group share their
    conditions, so wherever a chunk lies within a group (or holds whole
    groups) ``fn`` is vmapped with c unbatched: everything that depends on c
    alone (FiLM, the MoE gate and its weighted experts, interpolated envelope
    and Jastrow coefficients) is computed once per group, and products with
    c-dependent weights are one matrix product over the group's walkers
    instead of one per walker.
    """
    g, w = positions.shape[:2]

    def per_group(x, c):
        return jax.vmap(fn, in_axes=(0, None))(x, c)

    def regroup(out, leading):
        return jax.tree.map(lambda y: y.reshape(g, w, *y.shape[leading:]), out)

    if chunk <= 0 or chunk >= g * w:
        return jax.vmap(per_group)(positions, conditions)
    if w % chunk == 0:  # chunks inside the groups
        pieces = w // chunk
        xs = positions.reshape(g * pieces, chunk, *positions.shape[2:])
        cs = jnp.repeat(conditions, pieces, axis=0)
        return regroup(jax.lax.map(lambda xc: per_group(*xc), (xs, cs)), 2)
    if chunk % w == 0 and g % (chunk // w) == 0:  # whole groups per chunk
        q = chunk // w
        xs = positions.reshape(g // q, q, w, *positions.shape[2:])
        cs = conditions.reshape(g // q, q, *conditions.shape[1:])
        return regroup(jax.lax.map(lambda xc: jax.vmap(per_group)(*xc), (xs, cs)), 3)
    flat_x = positions.reshape(g * w, *positions.shape[2:])
    flat_c = jnp.repeat(conditions, w, axis=0)
    out = jax.lax.map(lambda xc: fn(*xc), (flat_x, flat_c), batch_size=chunk)
    return regroup(out, 1)


def local_energies(
    model: Wavefunction, walkers: Walkers, physics: Physics, ewald: EwaldSum | None, chunk: int = 0, sparsity: float = 0.0
) -> LocalEnergy:
    """Local energy components of every walker, shape (groups, walkers_per_group), units E_M.

    ``chunk``: walkers evaluated at once (0: all); ``sparsity``: folx's sparsity threshold.
    """

    def one(x, c):
        return local_energy(
            model.at(c),  # log ψ at fixed conditions, with its own forward Laplacian
            x,
            v=c[0],
            phi_deg=physics.phi_deg,
            coulomb_strength=physics.coulomb_strength,
            interaction=ewald,
            sparsity_threshold=sparsity,
        )

    return _map_walkers(one, walkers.positions, walkers.conditions, chunk)


MIN_BLOCK = 2048
"""Parameter leaves smaller than this are merged with their neighbours into row blocks (larger ones stay alone)."""


def _runs(sizes: list[int], minimum: int = MIN_BLOCK) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive leaves: each large leaf alone, small ones merged up to ≥ ``minimum``."""
    runs, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if size >= minimum:
            if start < i:
                runs.append((start, i))
            runs.append((i, i + 1))
            start, total = i + 1, 0
            continue
        total += size
        if total >= minimum:
            runs.append((start, i + 1))
            start, total = i + 1, 0
    if start < len(sizes):
        runs.append((start, len(sizes)))
    return runs


def log_derivatives(params: PyTree, static: PyTree, walkers: Walkers, chunk: int = 0, dtype=None) -> list[Array]:
    """∂ Re log ψ(x_i)/∂θ and ∂ Im log ψ(x_i)/∂θ for every walker: blocks (groups, walkers, 2, size) of consecutive parameter leaves.

    The ``spring.Rows`` layout, blocks in ``ravel_pytree`` order, leaves below MIN_BLOCK merged
    (``spring.flat_rows`` concatenates them). ``dtype``: the real dtype of the
    rows (default: that of the parameters), e.g. float32 for SPRING's float32
    products.
    """
    dtype = dtype or jnp.result_type(*jax.tree.leaves(params))

    def part(p, x, c, take):
        return take(eqx.combine(p, static)(x, c))

    def one(x, c):
        # Two gradients of the pytree, kept as blocks: differentiating through an unravel of
        # the flat vector costs O(leaves × P) per walker, jacrev's batched cotangents are 2×
        # slower than two gradients, and concatenating the rows costs more than computing them.
        re = jax.tree.leaves(jax.grad(part)(params, x, c, jnp.real))
        im = jax.tree.leaves(jax.grad(part)(params, x, c, jnp.imag))
        rows = [jnp.stack([r.reshape(-1), i.reshape(-1)]).astype(dtype) for r, i in zip(re, im)]
        return [jnp.concatenate(rows[a:b], axis=1) if b - a > 1 else rows[a] for a, b in _runs([r.shape[1] for r in rows])]

    return _map_walkers(one, walkers.positions, walkers.conditions, chunk)


def energy_gradient(
    params: PyTree, static: PyTree, walkers: Walkers, residual: Array, chunk: int = 0, axis: str | None = None
) -> Array:
    """∇_θ of the mean over groups of E_g by one reverse pass, without per-sample log-derivatives (flat, float64).

    The same as ``spring.energy_gradient(log_derivatives(...), residual)``:
    since the residuals ε (this device's walkers) have zero mean in each group,
    −2 Re⟨conj(Ō) ε⟩ = ∇_θ of −(2/n) Σ_i Re(conj(ε_i) log ψ(x_i)) with ε held
    fixed. Costs about three forward passes instead of P-sized rows per walker.
    """
    n = residual.size * (1 if axis is None else jax.lax.axis_size(axis))
    eps = jax.lax.stop_gradient(residual)

    def surrogate(p):
        fn = lambda x, c: eqx.combine(p, static)(x, c)  # noqa: E731
        values = _map_walkers(jax.checkpoint(fn) if chunk > 0 else fn, walkers.positions, walkers.conditions, chunk)
        return -2.0 * jnp.sum(jnp.real(eps) * jnp.real(values) + jnp.imag(eps) * jnp.imag(values)) / n

    grad = ravel_pytree(jax.grad(surrogate)(params))[0].astype(jnp.float64)
    return grad if axis is None else jax.lax.psum(grad, axis)


def _all_finite(*trees) -> Array:
    leaves = [leaf for tree in trees for leaf in jax.tree.leaves(tree) if eqx.is_inexact_array(leaf)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def vmc_step(
    state: TrainState,
    static: PyTree,
    physics: Physics,
    settings: StepSettings,
    ewald: EwaldSum | None,
    fault: Array | None = None,
    axis: str | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """One optimisation step (pure; jit with static ``static``, ``physics``, ``settings``).

    ``axis``: the mesh axis over which the walkers (axis 1 of the walker
    arrays) are split when this runs under ``shard_map`` (None: all walkers
    are here). Each device then moves and evaluates its own walkers with its
    own random numbers; energies are gathered (they are small), and the
    natural-gradient sums are collectives (see ``vmc.spring``). Everything
    returned except the walkers is the same on every device.

    ``fault`` (testing only): a scalar that is added to the local energies, so
    a NaN there simulates a numerical failure.
    """
    key, k_depth, k_mcmc = jax.random.split(state.key, 3)
    if axis is not None:
        k_mcmc = jax.random.fold_in(k_mcmc, jax.lax.axis_index(axis))
    model = eqx.combine(state.params, static)
    n_groups = state.walkers.conditions.shape[0]
    depths = stratified_depths(k_depth, n_groups, physics.v_min, physics.v_max)
    walkers = with_conditions(log_abs_fn(model), state.walkers, depths[:, None])
    walkers, acceptance = metropolis_sweeps(log_abs_fn(model), walkers, k_mcmc, physics.supercell, settings.mcmc_steps, settings.lattice_hops)
    if axis is not None:
        acceptance = jax.lax.pmean(acceptance, axis)
    walkers = adapt_width(walkers, acceptance, settings.target_acceptance)

    local = local_energies(model, walkers, physics, ewald, settings.walker_chunk, settings.laplacian_sparsity)
    gather = (lambda x: x) if axis is None else (lambda x: jax.lax.all_gather(x, axis, axis=1, tiled=True))
    energies = jax.tree.map(gather, local)
    e_total = energies.total if fault is None else energies.total + fault
    e_loc = e_total + 1j * energies.kinetic_imag
    residual = spring.local_rows(spring.energy_residuals(e_loc, settings.clip_mad, settings.clip_deviation), axis)
    flat, unravel = ravel_pytree(state.params)
    lr = learning_rate(settings, state.step)
    if settings.optimizer == "spring":
        matmul = jnp.float32 if settings.matmul_dtype == "float32" else jnp.float64
        jac = log_derivatives(state.params, static, walkers, settings.walker_chunk, matmul)
        direction = spring.spring_direction(jac, residual, state.opt_state, settings.damping, settings.momentum, axis, matmul)
        update = spring.constrain_step(jac, direction, lr, settings.max_norm, axis)
        opt_state = direction
    else:  # Adam needs only the gradient: one reverse pass, no per-sample rows
        grad = energy_gradient(state.params, static, walkers, residual, settings.walker_chunk, axis)
        update, opt_state = adam(settings).update(grad, state.opt_state, flat)
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
        "clipped_fraction": spring.clipped_fraction(e_loc, settings.clip_mad, settings.clip_deviation),
        "move_width": walkers.width,
        "learning_rate": lr,
        "update_norm": jnp.linalg.norm(update),
        "accepted": ok,
    }
    return new_state, stats


def state_specs() -> TrainState:
    """Partition specs of a ``TrainState``: walkers split over the ``walkers`` mesh axis, the rest replicated."""
    replicated = PartitionSpec()
    return TrainState(
        params=replicated,
        opt_state=replicated,
        walkers=Walkers(
            positions=walker_spec(4),
            conditions=replicated,
            log_abs=walker_spec(2),
            width=replicated,
        ),
        key=replicated,
        step=replicated,
    )


def make_step(
    static: PyTree, physics: Physics, settings: StepSettings, ewald: EwaldSum | None, mesh: Mesh | None = None
) -> Callable:
    """The jitted step ``(state, fault) -> (state, stats)``; compiled once per run.

    With a ``mesh`` (1-D, axis ``"walkers"``), the step runs under
    ``shard_map`` on all its devices; ``state`` should then be placed with
    :func:`state_specs` (``parallel.place``). Without one, on the default device.
    """
    if mesh is None:

        @eqx.filter_jit
        def step(state: TrainState, fault: Array) -> tuple[TrainState, dict[str, Array]]:
            return vmc_step(state, static, physics, settings, ewald, fault)

        return step

    sharded = jax.shard_map(
        lambda state, fault: vmc_step(state, static, physics, settings, ewald, fault, axis=AXIS),
        mesh=mesh,
        in_specs=(state_specs(), PartitionSpec()),
        out_specs=(state_specs(), PartitionSpec()),
        # Replicated outputs are computed from psums / all-gathers or from
        # replicated inputs only (see vmc_step); no per-value tracking needed.
        check_vma=False,
    )

    @eqx.filter_jit
    def step(state: TrainState, fault: Array) -> tuple[TrainState, dict[str, Array]]:
        return sharded(state, fault)

    return step


def laid_out(walkers: Walkers, mesh: Mesh | None) -> Walkers:
    """``walkers`` over ``mesh`` (default: all devices) in the layout of the training state.

    A jitted function compiles once per input layout: walkers changed on the
    host get the layout that its outputs have, so its first call compiles the
    program that all later calls run.
    """
    return parallel.place(walkers, state_specs().walkers, parallel.make_mesh() if mesh is None else mesh)
