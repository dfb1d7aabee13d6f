"""The ``qernel train`` run: pre-training, VMC loop, train store, checkpoints, resume.

The run directory it writes (config, checkpoint, ``train.zarr``) is described in
:mod:`qernel_cli.run_dir`. Resuming restores the checkpoint and truncates
``train.zarr`` to the checkpoint's step, so the continued run reproduces an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from qernel_cli import checkpoint, parallel, store, supervisor
from qernel_cli.config import Config
from qernel_cli.errors import QernelError
from qernel_cli.hamiltonian.ewald import EwaldSum
from qernel_cli.interrupt import deferred_interrupt
from qernel_cli.model import make_wavefunction
from qernel_cli.observables.blocking import chain_average
from qernel_cli.run_dir import CHECKPOINT_FILE, TRAIN_STORE, RunError, atomic_write, check_trained, prepare, stored_config
from qernel_cli.vmc import health
from qernel_cli.vmc.crystal import classical_ground_state, family_crystal_orbitals
from qernel_cli.vmc.family import stratum_centres
from qernel_cli.vmc.mcmc import Walkers, adapt_width, initial_walkers, metropolis_sweeps, with_conditions
from qernel_cli.vmc.pretrain import PretrainState, family_orbitals, make_pretrain_step
from qernel_cli.vmc.step import Hyper, Physics, TrainState, init_opt_state, local_energies, log_abs_fn, make_step, state_specs

CONSOLIDATE_SECONDS = 10.0
"""How often (s) training refreshes train.zarr's consolidated metadata (and at every checkpoint): what
``xarray.open_zarr`` shows of a run in progress; every step would cost tens of ms."""
MAX_CONSECUTIVE_FAILURES = 10
PRETRAIN_SHELLS = 5
"""Plane-wave shells for pre-training targets (91 G; band energies converged to ~1e-8 relative at V = 30 meV)."""

V = store.Variable
TRAIN_VARIABLES = {
    "step": V(("step",), "int64", "1", "optimisation step index"),
    "depth": V(("step", "group"), "float64", "meV", "moiré depth V of each walker group in this step"),
    "energy": V(("step", "group"), "float64", "meV", "mean local energy per electron"),
    "energy_error": V(("step", "group"), "float64", "meV", "standard error of the energy per electron (walkers treated as independent)"),
    "variance": V(("step", "group"), "float64", "meV^2", "variance of the total local energy"),
    "kinetic": V(("step", "group"), "float64", "meV", "kinetic energy per electron"),
    "potential": V(("step", "group"), "float64", "meV", "moiré potential energy per electron"),
    "interaction": V(("step", "group"), "float64", "meV", "Coulomb interaction energy per electron"),
    "acceptance": V(("step", "group"), "float64", "1", "Metropolis acceptance rate"),
    "clipped_fraction": V(("step", "group"), "float64", "1", "fraction of local energies clipped to median ± clip_mad·MAD in the gradient"),
    "move_width": V(("step", "group"), "float64", "a_M", "Gaussian move width after adaptation"),
    "learning_rate": V(("step",), "float64", "1", "learning rate of this step"),
    "update_norm": V(("step",), "float64", "1", "Euclidean norm of the parameter update"),
    "accepted": V(("step",), "int8", "1", "1 if the step was finite and applied, 0 if rejected and rolled back"),
    "wall_time": V(("step",), "float64", "s", "wall-clock time since the start of the run (summed over resumes)"),
}
PRETRAIN_VARIABLES = {
    "pretrain_infidelity": V(("pretrain_step", "group"), "float64", "1", "1 − fidelity with the Bloch determinant"),
    "pretrain_depth": V(("pretrain_step", "group"), "float64", "meV", "depth of each group in the pre-training step"),
}


@dataclasses.dataclass
class Run:
    """Everything built from a config for training (model structure, physics, jitted steps)."""

    config: Config
    static: Any
    params: Any
    physics: Physics
    hyper: Hyper
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
    hyper = Hyper(
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
    return Run(config=config, static=static, params=params, physics=physics, hyper=hyper, ewald=ewald)


# ---------------------------------------------------------------------------
# Phases.


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
    optimizer = optax.adam(cfg.pretrain.learning_rate)
    step = make_pretrain_step(run.static, run.physics.supercell, cfg.electrons.n_up, optimizer, cfg.sampler.steps_per_iteration)
    specs = state_specs()
    state = parallel.place(  # the layout the step returns, so that its first call compiles the program the others run
        PretrainState(params=params, opt_state=optimizer.init(params), walkers=walkers, key=key),
        PretrainState(params=specs.params, opt_state=specs.opt_state, walkers=specs.walkers, key=specs.key),
        parallel.make_mesh() if mesh is None else mesh,
    )
    n_shells = PRETRAIN_SHELLS
    rng = np.random.default_rng(cfg.training.seed + 7)
    if cfg.pretrain.target == "crystal":
        if cfg.electrons.n_down:
            raise RunError("pretrain.target = 'crystal' is implemented for spin-polarised systems only (electrons.n_down = 0)")
        sites = classical_ground_state(run.physics.supercell, cfg.electrons.n_up, run.physics.phi_deg)
    losses, depths_log = [], []
    supervisor.phase("pre-training")
    for i in range(n_steps):
        if stop is not None and stop():
            raise KeyboardInterrupt
        g = run.n_groups
        edges = np.linspace(run.physics.v_min, run.physics.v_max, g + 1)
        depths = edges[:-1] + rng.uniform(size=g) * np.diff(edges)
        if cfg.pretrain.target == "crystal":
            orbitals = family_crystal_orbitals(run.physics.supercell, sites, depths, run.physics.phi_deg, run.physics.v_max)
        else:
            orbitals = family_orbitals(run.physics.supercell, cfg.electrons.n_up, cfg.electrons.n_down, depths, run.physics.phi_deg, n_shells)
        state = eqx.tree_at(lambda s: s.walkers.conditions, state, np.asarray(depths[:, None]))
        state, loss, acceptance = step(state, jax.tree.map(np.asarray, orbitals))
        loss, acceptance = parallel.to_host((loss, acceptance))
        losses.append(np.asarray(loss))
        depths_log.append(depths)
        supervisor.beat()
        if on_step is not None:
            on_step(i, float(np.mean(losses[-1])), float(np.mean(acceptance)))
    return state.params, state.walkers, np.array(losses).reshape(n_steps, run.n_groups), np.array(depths_log).reshape(n_steps, run.n_groups)


def evaluate(
    run: Run,
    params: Any,
    walkers: Walkers,
    key: jax.Array,
    depths_moire: np.ndarray,
    n_blocks: int | None = None,
    stop: Callable[[], bool] | None = None,
    name: str = "evaluation",
    mesh: Mesh | None = None,
) -> dict[str, np.ndarray]:
    """Energies per electron (E_M) at fixed depths, with error bars that hold at any autocorrelation.

    Five sweep blocks without energies re-equilibrate the chains at the new
    depths; then ``n_blocks`` (default ``training.evaluate_blocks``) blocks of
    ``sampler.steps_per_iteration`` sweeps each record every walker's local
    energy. Per depth: ``X`` (mean) and ``X_error`` for every component (the
    spread of the walkers' chain means, :func:`~qernel_cli.observables.blocking.chain_average`:
    right for any number of blocks), and ``autocorrelation_blocks``, the
    integrated autocorrelation time τ of the total local energy in blocks
    (the sampling-efficiency check of :mod:`qernel_cli.vmc.health`). ``stop()`` is
    polled before every block (KeyboardInterrupt when true); ``name`` is the
    phase shown by the supervisor; ``mesh``: the devices (default: all).
    """
    n_blocks = run.config.training.evaluate_blocks if n_blocks is None else n_blocks
    model = eqx.combine(params, run.static)
    g = walkers.conditions.shape[0]
    if len(depths_moire) != g:
        raise ValueError("one depth per walker group")
    walkers = with_conditions(log_abs_fn(model), walkers, np.asarray(depths_moire, dtype=np.float64)[:, None])
    walkers = _laid_out(walkers, mesh)

    @eqx.filter_jit
    def block(params, walkers, key):
        model = eqx.combine(params, run.static)
        walkers, acc = metropolis_sweeps(log_abs_fn(model), walkers, key, run.physics.supercell, run.hyper.mcmc_steps, run.hyper.lattice_hops)
        return walkers, acc, local_energies(model, walkers, run.physics, run.ewald, run.hyper.walker_chunk, run.hyper.laplacian_sparsity)

    @eqx.filter_jit
    def sweeps(params, walkers, key):
        model = eqx.combine(params, run.static)
        return metropolis_sweeps(log_abs_fn(model), walkers, key, run.physics.supercell, run.hyper.mcmc_steps, run.hyper.lattice_hops)

    def check() -> None:
        if stop is not None and stop():
            raise KeyboardInterrupt

    n = run.config.n_electrons
    supervisor.phase(name)
    for i in range(5):  # re-equilibrate at the fixed depths, adapting the width
        check()
        walkers, acc = sweeps(params, walkers, jax.random.fold_in(key, i))
        walkers = adapt_width(walkers, acc, run.hyper.target_acceptance)
        supervisor.beat()
    names = ("total", "kinetic", "potential", "interaction")
    rows = {component: [] for component in names}
    for i in range(n_blocks):
        check()
        walkers, acc, e = block(params, walkers, jax.random.fold_in(key, 1000 + i))
        e = parallel.to_host(e)  # every walker's energies (groups, walkers): small
        for component in names:
            rows[component].append(np.asarray(getattr(e, component)) / n)
        supervisor.beat()
    result: dict[str, np.ndarray] = {}
    series = {component: np.array(values) for component, values in rows.items()}  # (blocks, groups, walkers)
    for component, x in series.items():
        stats = [chain_average(x[:, j]) for j in range(g)]  # walkers are independent chains: their spread is the error
        result[component] = np.array([c.mean for c in stats])
        result[component + "_error"] = np.array([c.error for c in stats])
        if component == "total":
            result["autocorrelation_blocks"] = np.array([health.autocorrelation_time(x[:, j]) for j in range(g)])
    return result


# ---------------------------------------------------------------------------
# The training loop.


def _new_store(path: Path, run: Run, *, pretrain_steps: int) -> Any:
    cfg = run.config
    mat = cfg.material_units
    variables = dict(TRAIN_VARIABLES)
    if pretrain_steps:
        variables.update(PRETRAIN_VARIABLES)
    return store.create(
        path,
        variables,
        {"group": run.n_groups},
        {
            "kind": "train",
            "config_toml": cfg.to_toml(),
            "n_electrons": cfg.n_electrons,
            "energy_unit_meV": mat.energy_unit_meV,
            "coulomb_strength_U": run.physics.coulomb_strength,
            "training_depths_moire": [run.physics.v_min, run.physics.v_max],
            "seed": cfg.training.seed,
        },
    )


def initial_state(run: Run, key: jax.Array) -> TrainState:
    """The state before pre-training: fresh parameters, uniform walkers at the stratum centres."""
    cfg = run.config
    return TrainState(
        params=run.params,
        opt_state=init_opt_state(run.hyper, run.params),
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


def load_trained(run_dir: Path) -> tuple[Run, TrainState, dict[str, Any]]:
    """A trained run: its config, model structure and the checkpointed state (with the checkpoint header)."""
    run_dir = Path(run_dir)
    run = build(check_trained(run_dir))
    state, header = checkpoint.restore(run_dir / CHECKPOINT_FILE, initial_state(run, jax.random.PRNGKey(0)))
    return run, state, header


def _evaluation_depths(run: Run) -> np.ndarray:
    """Depths (E_M) of the start and final evaluations: the stratum centres."""
    return np.asarray(stratum_centres(run.n_groups, run.physics.v_min, run.physics.v_max))


def _start_energy(group: Any, i: int) -> dict[str, float]:
    """The energy after pre-training (before VMC) at evaluation depth i, if it was measured."""
    if "start_energy_meV" not in group.attrs:
        return {}
    return {
        "start_energy_per_electron_meV": float(group.attrs["start_energy_meV"][i]),
        "start_energy_error_meV": float(group.attrs["start_energy_error_meV"][i]),
    }


class Interrupted(QernelError):
    """Ctrl-C / SIGTERM: the run stopped cleanly after its checkpoint (exit status 130)."""

    exit_code = 130


def _laid_out(walkers: Walkers, mesh: Mesh | None) -> Walkers:
    """``walkers`` over ``mesh`` (default: all devices) in the layout of the training state.

    A jitted function compiles once per input layout: walkers changed on the
    host get the layout that its outputs have, so its first call compiles the
    program that all later calls run.
    """
    return parallel.place(walkers, state_specs().walkers, parallel.make_mesh() if mesh is None else mesh)


def _burn_in(run: Run, state: TrainState, conditions: jax.Array, key: jax.Array, stop: Callable[[], bool], mesh: Mesh) -> Walkers:
    """Equilibrate the model's own chains at the stratum centres (``sampler.burn_in`` sweeps); KeyboardInterrupt on ``stop()``."""
    walkers = _laid_out(with_conditions(log_abs_fn(eqx.combine(state.params, run.static)), state.walkers, conditions), mesh)
    burn = eqx.filter_jit(lambda p, w, k: metropolis_sweeps(log_abs_fn(eqx.combine(p, run.static)), w, k, run.physics.supercell, 10, run.hyper.lattice_hops))
    supervisor.phase("burn-in")
    for i in range(max(1, run.config.sampler.burn_in // 10)):
        if stop():
            raise KeyboardInterrupt
        walkers, acc = burn(state.params, walkers, jax.random.fold_in(key, 100 + i))
        walkers = adapt_width(walkers, acc, run.config.sampler.target_acceptance)
        supervisor.beat()
    return walkers


def _store_row(step: int, stats: dict, unit: float, n_el: int, ok: bool, wall_time: float) -> dict[str, Any]:
    """One train.zarr row from the jitted step's statistics (energies per electron in meV)."""
    return {
        "step": step,
        "depth": stats["depth"] * unit,
        "energy": stats["energy"] * unit / n_el,
        "energy_error": stats["energy_error"] * unit / n_el,
        "variance": stats["variance"] * unit**2,
        "kinetic": stats["kinetic"] * unit / n_el,
        "potential": stats["potential"] * unit / n_el,
        "interaction": stats["interaction"] * unit / n_el,
        "acceptance": stats["acceptance"],
        "clipped_fraction": stats["clipped_fraction"],
        "move_width": stats["move_width"],
        "learning_rate": stats["learning_rate"],
        "update_norm": stats["update_norm"],
        "accepted": int(ok),
        "wall_time": wall_time,
    }


def train(
    config: Config | None,
    out_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    steps: int | None = None,
    reporter: Any | None = None,
    fault_at: dict[int, float] | None = None,
    mesh: Mesh | None = None,
) -> dict[str, Any]:
    """Run (or resume) training; returns the JSON-able summary.

    ``reporter`` receives progress callbacks (see :class:`qernel_cli.progress.TrainReporter`);
    ``fault_at`` maps step → value added to the local energies (tests of rollback);
    ``mesh``: the devices to split the walkers over (default: all devices of
    all processes, see ``qernel_cli.parallel``). In a multi-process run every
    process calls this; only process 0 writes the run directory.
    """
    out_dir = Path(out_dir)
    main = parallel.is_main_process()
    if main:
        config = prepare(out_dir, config, resume=resume, force=force, steps=steps)
    parallel.barrier("qernel-run-dir")
    if not main:
        config = stored_config(out_dir, steps) if resume else config
    reporter = reporter if main else None
    run = build(config)
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_divisible(run.walkers_per_group, mesh)
    specs = state_specs()
    cfg = config
    ckpt_path = out_dir / CHECKPOINT_FILE
    store_path = out_dir / TRAIN_STORE
    t_start = time.perf_counter()
    wall_offset = 0.0
    key = jax.random.PRNGKey(cfg.training.seed)
    template = initial_state(run, key)
    rejected_total = 0
    group = None

    def save(state: TrainState) -> None:
        host = parallel.to_host(state)  # a collective: every process takes part
        if main:
            checkpoint.save(
                ckpt_path,
                host,
                {
                    "step": int(host.step),
                    "wall_time": wall_offset + time.perf_counter() - t_start,
                    "rejected": rejected_total,
                    "devices": int(mesh.devices.size),
                    "processes": jax.process_count(),
                    "qernel_config": cfg.to_dict(),
                },
            )
            if group is not None:
                store.checkpoint(group)  # readers of train.zarr see the steps of this checkpoint

    resume_hint = f"continue with `qernel train --resume --out {out_dir}`"
    with deferred_interrupt() as interrupt:
        stop = lambda: parallel.agree(interrupt.requested())  # noqa: E731  (every process decides alike)

        def interrupted(message: str) -> Interrupted:
            if reporter:
                reporter.stop()
            return Interrupted(message)

        if resume and ckpt_path.exists():
            state, header = checkpoint.restore(ckpt_path, template)
            state = parallel.place(state, specs, mesh)  # any device count: walkers are re-split
            wall_offset = float(header.get("wall_time", 0.0))
            rejected_total = int(header.get("rejected", 0))
            if main:
                group = store.open_existing(store_path, mode="a")
                store.check_intact(group, "step", complete=("depth", "wall_time"))
                done = int(header["step"])
                stored = store.dimension_length(group, "step")
                if stored < done:
                    raise RunError(f"{store_path} has fewer steps than the checkpoint ({stored} < {done}); the store is damaged")
                store.truncate(group, done, "step")
                store.add_missing(group, TRAIN_VARIABLES, {"group": run.n_groups}, done)
        else:
            if main:
                if resume and store_path.exists():
                    # Interrupted before the first checkpoint: start over in the same directory.
                    shutil.rmtree(store_path)
                group = _new_store(store_path, run, pretrain_steps=cfg.pretrain.steps)
            state = parallel.place(template, specs, mesh)
            if cfg.pretrain.steps:
                if reporter:
                    reporter.start_pretrain(cfg.pretrain.steps)
                try:
                    params, walkers, losses, depths = pretrain(
                        run, state.params, jax.random.fold_in(key, 4), state.walkers,
                        reporter.pretrain_step if reporter else None, stop=stop, mesh=mesh,
                    )
                except KeyboardInterrupt:
                    raise interrupted(f"interrupted during pre-training, before the first checkpoint; {resume_hint} (starts over)") from None
                if reporter:
                    reporter.end_pretrain()
                if main:
                    store.append_rows(group, [
                        {"pretrain_infidelity": loss, "pretrain_depth": depth * run.energy_unit_meV} for loss, depth in zip(losses, depths)
                    ])
                state = eqx.tree_at(lambda s: (s.params, s.walkers), state, (params, walkers))
            centres = np.asarray(template.walkers.conditions)  # burn in at the stratum centres
            try:
                state = eqx.tree_at(lambda s: s.walkers, state, _burn_in(run, state, centres, key, stop, mesh))
            except KeyboardInterrupt:
                raise interrupted(f"interrupted during burn-in, before the first checkpoint; {resume_hint} (starts over)") from None
            state = parallel.place(state, specs, mesh)
            save(state)  # step 0: pre-training is never lost
            if cfg.training.evaluate_start:
                # The starting point of VMC, at the same depths as the final evaluation.
                try:
                    start = evaluate(
                        run, state.params, state.walkers, jax.random.fold_in(key, 5), _evaluation_depths(run),
                        stop=stop, name="start evaluation", mesh=mesh,
                    )
                except KeyboardInterrupt:
                    raise interrupted(
                        f"interrupted during the evaluation before VMC; the pre-trained state is saved (step 0), {resume_hint} "
                        "(without the energies before VMC)"
                    ) from None
                if main:
                    store.set_attrs(group, {
                        "start_energy_meV": (start["total"] * run.energy_unit_meV).tolist(),
                        "start_energy_error_meV": (start["total_error"] * run.energy_unit_meV).tolist(),
                    })

        step_fn = make_step(run.static, run.physics, run.hyper, run.ewald, mesh)
        n_total = cfg.training.steps
        unit = run.energy_unit_meV
        n_el = cfg.n_electrons
        last_ckpt = last_consolidated = time.perf_counter()
        consecutive_failures = 0
        step_now = int(parallel.to_host(state.step))
        if reporter:
            reporter.start_training(step_now, n_total)
        supervisor.phase("VMC steps")
        while step_now < n_total:
            if stop():
                save(state)
                raise interrupted(f"interrupted ({interrupt.signal_name or 'another process'}) at step {step_now}; checkpoint saved, {resume_hint}")
            s = step_now
            fault = np.asarray((fault_at or {}).get(s, 0.0), dtype=np.float64)
            state, stats = step_fn(state, fault)
            stats = parallel.to_host(stats)
            step_now += 1
            ok = bool(stats["accepted"])
            if not ok:
                rejected_total += 1
                consecutive_failures += 1
            else:
                consecutive_failures = 0
            row = _store_row(s, stats, unit, n_el, ok, wall_offset + time.perf_counter() - t_start)
            if main:
                store.append(group, row, consolidated=False)
                if time.perf_counter() - last_consolidated > CONSOLIDATE_SECONDS:
                    store.checkpoint(group)
                    last_consolidated = time.perf_counter()
            if reporter:
                reporter.training_step(row, rejected_total)
            supervisor.beat()
            if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                save(state)
                if reporter:
                    reporter.stop()
                raise RunError(
                    f"training stopped: {consecutive_failures} consecutive non-finite steps at step {s} "
                    f"(state rolled back; last good checkpoint in {ckpt_path}); try a smaller learning rate or more damping"
                )
            if parallel.agree(time.perf_counter() - last_ckpt > 60.0 * cfg.training.checkpoint_minutes):
                save(state)
                last_ckpt = time.perf_counter()
        save(state)
        if reporter:
            reporter.stop()

        depths = _evaluation_depths(run)
        try:
            final = evaluate(run, state.params, state.walkers, jax.random.fold_in(state.key, 7), depths, stop=stop, name="final evaluation", mesh=mesh)
        except KeyboardInterrupt:
            raise interrupted(
                f"interrupted during the final evaluation; the checkpoint holds all {step_now} steps; "
                f"`qernel train --resume --out {out_dir}` evaluates again"
            ) from None
    start_energies = {} if group is None else {i: _start_energy(group, i) for i in range(len(depths))}
    report = None
    if group is not None:
        report = health.run_health(
            group["acceptance"][:], group["clipped_fraction"][:], group["accepted"][:],
            list(final["autocorrelation_blocks"]), cfg.sampler.steps_per_iteration,
        )
    summary = {
        "run_dir": str(out_dir),
        "description": cfg.description,
        "n_electrons": n_el,
        "steps": step_now,
        "rejected_steps": rejected_total,
        "wall_time_s": wall_offset + time.perf_counter() - t_start,
        "energy_unit_meV": unit,
        "devices": int(mesh.devices.size),
        "processes": jax.process_count(),
        "parameter_fingerprint": parameter_fingerprint(state.params),
        "depths": [
            {
                "V_meV": float(v * unit),
                "energy_per_electron_meV": float(final["total"][i] * unit),
                "energy_error_meV": float(final["total_error"][i] * unit),
                "kinetic_meV": float(final["kinetic"][i] * unit),
                "potential_meV": float(final["potential"][i] * unit),
                "interaction_meV": float(final["interaction"][i] * unit),
                "autocorrelation_sweeps": float(final["autocorrelation_blocks"][i] * cfg.sampler.steps_per_iteration),
                **start_energies.get(i, {}),
            }
            for i, v in enumerate(depths)
        ],
        "health": None if report is None else report.to_dict(),
        "warnings": [] if report is None else report.warnings(),
        "provenance": store.provenance() | {"seed": cfg.training.seed},
    }
    if main:
        atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def parameter_fingerprint(params: Any) -> str:
    """SHA-256 (16 hex digits) of this process's own copy of the parameters: equal on all processes of a healthy run."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        local = leaf.addressable_data(0) if isinstance(leaf, jax.Array) else leaf
        digest.update(np.ascontiguousarray(np.asarray(local)).tobytes())
    return digest.hexdigest()[:16]
