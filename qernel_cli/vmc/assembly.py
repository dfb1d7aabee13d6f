"""A run's numerical parts, assembled from its configuration.

:class:`Run` holds what every command that trains or samples a model needs:
the config, the model's structure and initial parameters (``eqx.partition``),
the physics in moiré units, the optimiser's settings (``StepSettings``) and the Ewald
sum. :func:`build` makes it from a config (parameters drawn from
``training.seed``); :func:`initial_state` adds fresh optimiser state and
walkers.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from qernel_cli.config import Config
from qernel_cli.hamiltonian.ewald import EwaldSum
from qernel_cli.model import make_wavefunction
from qernel_cli.runtime import require_x64
from qernel_cli.stores.run_dir import RunError
from qernel_cli.vmc.family import stratum_centres
from qernel_cli.vmc.mcmc import Walkers, initial_walkers, metropolis_sweeps
from qernel_cli.vmc.step import StepSettings, Physics, TrainState, init_opt_state, log_abs_fn


@dataclasses.dataclass
class Run:
    """Everything built from a config for training (model structure, physics, jitted steps)."""

    config: Config
    static: Any
    params: Any
    physics: Physics
    settings: StepSettings
    ewald: EwaldSum | None

    @property
    def energy_unit_meV(self) -> float:
        return self.config.material_units.energy_unit_meV

    @property
    def n_groups(self) -> int:
        return self.config.training.depths_per_step

    @property
    def walkers_per_group(self) -> int:
        return self.config.sampler.walkers // self.config.training.depths_per_step


def build(config: Config) -> Run:
    """Model (random init from the seed), physics in moiré units and optimiser settings."""
    require_x64()
    if config.sampler.walkers % config.training.depths_per_step:
        raise RunError(
            f"sampler.walkers={config.sampler.walkers} must be a multiple of training.depths_per_step="
            f"{config.training.depths_per_step} (walkers are split evenly between depths)"
        )
    material = config.material_units
    key = jax.random.PRNGKey(config.training.seed)
    model = make_wavefunction(config, jax.random.fold_in(key, 1))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    coulomb = material.coulomb_strength if config.hamiltonian.coulomb else 0.0
    physics = Physics(
        supercell=config.supercell_geometry,
        phi_deg=config.material.phi_deg,
        coulomb_strength=coulomb,
        v_min=material.depth_to_moire(config.hamiltonian.V_min_meV),
        v_max=material.depth_to_moire(config.hamiltonian.V_max_meV),
    )
    op = config.optimizer
    settings = StepSettings(
        optimizer=op.name,
        learning_rate=op.learning_rate,
        lr_decay_steps=op.lr_decay_steps,
        damping=op.damping,
        momentum=op.momentum,
        max_norm=op.max_norm,
        clip_mad=op.clip_mad,
        clip_deviation=op.clip_deviation,
        mcmc_steps=config.sampler.steps_per_iteration,
        target_acceptance=config.sampler.target_acceptance,
        lattice_hops=config.sampler.lattice_hops,
        walker_chunk=config.training.walker_chunk,
        matmul_dtype=config.model.dtype,
        laplacian_sparsity=config.training.laplacian_sparsity,
    )
    ewald = EwaldSum(physics.supercell.cell, n_electrons=config.n_electrons) if coulomb else None
    return Run(config=config, static=static, params=params, physics=physics, settings=settings, ewald=ewald)


def initial_state(run: Run, key: jax.Array) -> TrainState:
    """The state before pre-training: fresh parameters, uniform walkers at the stratum centres."""
    cfg = run.config
    return TrainState(
        params=run.params,
        opt_state=init_opt_state(run.settings, run.params),
        walkers=initial_walkers(
            log_abs_fn(eqx.combine(run.params, run.static)),
            jax.random.fold_in(key, 2),
            run.physics.supercell,
            jnp.asarray(stratum_centres(run.n_groups, run.physics.v_min, run.physics.v_max))[:, None],
            run.walkers_per_group,
            cfg.n_electrons,
            cfg.sampler.move_width,
        ),
        key=jax.random.fold_in(key, 3),
        step=jnp.zeros((), jnp.int64),
    )


def model_sweeps(run: Run, n_sweeps: int) -> Callable[[Any, Walkers, jax.Array], tuple[Walkers, jax.Array]]:
    """``(params, walkers, key) → (walkers, acceptance)``: ``n_sweeps`` jitted Metropolis sweeps of the model's |ψ|²."""

    @eqx.filter_jit
    def sweeps(params, walkers, key):
        model = eqx.combine(params, run.static)
        return metropolis_sweeps(log_abs_fn(model), walkers, key, run.physics.supercell, n_sweeps, run.settings.lattice_hops)

    return sweeps
