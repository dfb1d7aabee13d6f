"""The ``qernel train`` run: pre-training, VMC loop, train store, checkpoints, resume.

The workflow around the engine's parts (``vmc.assembly``, ``vmc.pretrain``, ``vmc.evaluation``, ``vmc.step``),
in phases: the run directory, pre-training, burn-in, the VMC steps, the final evaluation and the summary. The run
directory it writes (config, checkpoint, ``train.zarr``) is described in :mod:`qernel_cli.stores.run_dir`. Resuming
restores the checkpoint and truncates ``train.zarr`` to the checkpoint's step, so the continued run reproduces an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh

from qernel_cli import parallel, supervisor
from qernel_cli.stores import checkpoint, store
from qernel_cli.stores import train as train_store
from qernel_cli.config import Config
from qernel_cli.errors import QernelError
from qernel_cli.interrupt import Interrupt, deferred_interrupt
from qernel_cli.stores.run_dir import CHECKPOINT_FILE, TRAIN_STORE, RunError, atomic_write, check_trained, prepare, stored_config
from qernel_cli.vmc import health
from qernel_cli.vmc.assembly import Run, build, initial_state, model_sweeps
from qernel_cli.vmc.evaluation import evaluate
from qernel_cli.vmc.family import stratum_centres
from qernel_cli.vmc.mcmc import Walkers, equilibrate, with_conditions
from qernel_cli.vmc.pretrain import pretrain
from qernel_cli.vmc.pretrain import start as pretrain_start
from qernel_cli.vmc.step import TrainState, laid_out, log_abs_fn, make_step, state_specs

CONSOLIDATE_SECONDS = 10.0
"""How often (s) training refreshes train.zarr's consolidated metadata (and at every checkpoint): what
``xarray.open_zarr`` shows of a run in progress; every step would cost tens of ms."""
MAX_CONSECUTIVE_FAILURES = 10


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


def _burn_in(run: Run, state: TrainState, conditions: jax.Array, key: jax.Array, stop: Callable[[], bool], mesh: Mesh) -> Walkers:
    """Equilibrate the model's own chains at the stratum centres (``sampler.burn_in`` sweeps); KeyboardInterrupt on ``stop()``."""
    walkers = laid_out(with_conditions(log_abs_fn(eqx.combine(state.params, run.static)), state.walkers, conditions), mesh)
    burn = model_sweeps(run, 10)
    supervisor.phase("burn-in")
    blocks = max(1, run.config.sampler.burn_in // 10)
    return equilibrate(lambda w, k: burn(state.params, w, k), walkers, key, blocks, run.config.sampler.target_acceptance,
                       first_block=100, stop=stop, after_block=supervisor.beat)


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


@dataclass(frozen=True)
class _Session:
    """What the phases of one training run share; ``group`` and ``wall_offset`` are set once the run is opened."""

    run: Run
    out_dir: Path
    mesh: Mesh
    main: bool  # process 0: the one that writes the run directory
    reporter: Any | None  # progress callbacks (process 0 only)
    interrupt: Interrupt
    t_start: float  # time.perf_counter() (s) when this process started the run
    group: Any | None = None  # train.zarr (process 0 only)
    wall_offset: float = 0.0  # wall time (s) of the earlier runs this one resumes

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_FILE

    @property
    def resume_hint(self) -> str:
        return f"continue with `qernel train --resume --out {self.out_dir}`"

    def stop(self) -> bool:
        """Whether Ctrl-C / SIGTERM asks to stop; every process decides alike."""
        return parallel.agree(self.interrupt.requested())

    def wall_time(self) -> float:
        """Wall time (s) of the run so far, the runs it resumes included."""
        return self.wall_offset + time.perf_counter() - self.t_start

    def interrupted(self, message: str) -> Interrupted:
        """The exception to raise on an interrupt, once the progress display is closed."""
        if self.reporter:
            self.reporter.stop()
        return Interrupted(message)

    def save(self, state: TrainState, rejected: int) -> None:
        """Checkpoint ``state`` (a collective: every process takes part, process 0 writes) and consolidate train.zarr."""
        host = parallel.to_host(state)
        if self.main:
            header = {
                "step": int(host.step), "wall_time": self.wall_time(), "rejected": rejected, "devices": int(self.mesh.devices.size),
                "processes": jax.process_count(), "qernel_config": self.run.config.to_dict(),
            }
            checkpoint.save(self.checkpoint_path, host, header)
            if self.group is not None:
                store.checkpoint(self.group)  # readers of train.zarr see the steps of this checkpoint


def _resumed(session: _Session, template: TrainState) -> tuple[_Session, TrainState, int]:
    """Resume: the checkpoint's state on the mesh, train.zarr truncated to its step (process 0), its rejected steps."""
    state, header = checkpoint.restore(session.checkpoint_path, template)
    state = parallel.place(state, state_specs(), session.mesh)  # any device count: walkers are re-split
    wall_offset = float(header.get("wall_time", 0.0))
    rejected = int(header.get("rejected", 0))
    store_path, group = session.out_dir / TRAIN_STORE, None
    if session.main:
        group = store.open_existing(store_path, mode="a")
        store.check_intact(group, "step", complete=("depth", "wall_time"))
        done = int(header["step"])
        stored = store.dimension_length(group, "step")
        if stored < done:
            raise RunError(f"{store_path} has fewer steps than the checkpoint ({stored} < {done}); the store is damaged")
        store.truncate(group, done, "step")
        store.add_missing(group, train_store.TRAIN_VARIABLES, {"group": session.run.n_groups}, done)
    return replace(session, group=group, wall_offset=wall_offset), state, rejected


def _pretrained(session: _Session, state: TrainState, key: jax.Array) -> TrainState:
    """Pre-training (``pretrain.steps``): parameters and walkers fitted to the target; infidelities go to train.zarr."""
    run, reporter = session.run, session.reporter
    if not run.config.pretrain.steps:
        return eqx.tree_at(lambda s: s.params, state, pretrain_start(run, state.params)[0])
    if reporter:
        reporter.start_pretrain(run.config.pretrain.steps)
    try:
        params, walkers, losses, depths = pretrain(
            run, state.params, jax.random.fold_in(key, 4), state.walkers,
            reporter.pretrain_step if reporter else None, stop=session.stop, mesh=session.mesh,
        )
    except KeyboardInterrupt:
        raise session.interrupted(f"interrupted during pre-training, before the first checkpoint; {session.resume_hint} (starts over)") from None
    if reporter:
        reporter.end_pretrain()
    if session.main:
        store.append_rows(session.group, [
            {"pretrain_infidelity": loss, "pretrain_depth": depth * run.energy_unit_meV} for loss, depth in zip(losses, depths)
        ])
    return eqx.tree_at(lambda s: (s.params, s.walkers), state, (params, walkers))


def _start_evaluation(session: _Session, state: TrainState, key: jax.Array) -> None:
    """The energies before VMC, at the depths of the final evaluation: train.zarr attributes (meV per electron)."""
    run = session.run
    try:
        start = evaluate(
            run, state.params, state.walkers, jax.random.fold_in(key, 5), _evaluation_depths(run),
            stop=session.stop, name="start evaluation", mesh=session.mesh,
        )
    except KeyboardInterrupt:
        raise session.interrupted(
            f"interrupted during the evaluation before VMC; the pre-trained state is saved (step 0), {session.resume_hint} "
            "(without the energies before VMC)"
        ) from None
    if session.main:
        store.set_attrs(session.group, {
            "start_energy_meV": (start["total"] * run.energy_unit_meV).tolist(),
            "start_energy_error_meV": (start["total_error"] * run.energy_unit_meV).tolist(),
        })


def _started(session: _Session, template: TrainState, key: jax.Array, resume: bool) -> tuple[_Session, TrainState, int]:
    """A new run: a new train.zarr, pre-training, burn-in, the step-0 checkpoint, the optional start evaluation."""
    if session.main:
        store_path = session.out_dir / TRAIN_STORE
        if resume and store_path.exists():
            # Interrupted before the first checkpoint: start over in the same directory.
            shutil.rmtree(store_path)
        group = train_store.create_train_store(store_path, session.run, pretrain_steps=session.run.config.pretrain.steps)
        session = replace(session, group=group)
    state = _pretrained(session, parallel.place(template, state_specs(), session.mesh), key)
    centres = np.asarray(template.walkers.conditions)  # burn in at the stratum centres
    try:
        state = eqx.tree_at(lambda s: s.walkers, state, _burn_in(session.run, state, centres, key, session.stop, session.mesh))
    except KeyboardInterrupt:
        raise session.interrupted(f"interrupted during burn-in, before the first checkpoint; {session.resume_hint} (starts over)") from None
    state = parallel.place(state, state_specs(), session.mesh)
    session.save(state, 0)  # step 0: pre-training is never lost
    if session.run.config.training.evaluate_start:
        _start_evaluation(session, state, key)
    return session, state, 0


def _vmc(session: _Session, state: TrainState, rejected: int, fault_at: dict[int, float] | None) -> tuple[TrainState, int, int]:
    """The VMC steps up to ``training.steps``, each a train.zarr row; returns the state, the steps done and those rejected.

    Checkpoints every ``training.checkpoint_minutes``, at the end and on an interrupt; stops with a
    :class:`RunError` after ``MAX_CONSECUTIVE_FAILURES`` consecutive rejected (non-finite, rolled back) steps.
    """
    run, cfg, reporter = session.run, session.run.config, session.reporter
    step_fn = make_step(run.static, run.physics, run.settings, run.ewald, session.mesh)
    last_ckpt = last_consolidated = time.perf_counter()
    consecutive_failures = 0
    step_now = int(parallel.to_host(state.step))
    if reporter:
        reporter.start_training(step_now, cfg.training.steps)
    supervisor.phase("VMC steps")
    while step_now < cfg.training.steps:
        if session.stop():
            session.save(state, rejected)
            signal_name = session.interrupt.signal_name or "another process"
            raise session.interrupted(f"interrupted ({signal_name}) at step {step_now}; checkpoint saved, {session.resume_hint}")
        s = step_now
        fault = np.asarray((fault_at or {}).get(s, 0.0), dtype=np.float64)
        state, stats = step_fn(state, fault)
        stats = parallel.to_host(stats)
        step_now += 1
        ok = bool(stats["accepted"])
        rejected += 0 if ok else 1
        consecutive_failures = 0 if ok else consecutive_failures + 1
        row = _store_row(s, stats, run.energy_unit_meV, cfg.n_electrons, ok, session.wall_time())
        if session.main:
            store.append(session.group, row, consolidated=False)
            if time.perf_counter() - last_consolidated > CONSOLIDATE_SECONDS:
                store.checkpoint(session.group)
                last_consolidated = time.perf_counter()
        if reporter:
            reporter.training_step(row, rejected)
        supervisor.beat()
        if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
            session.save(state, rejected)
            if reporter:
                reporter.stop()
            raise RunError(
                f"training stopped: {consecutive_failures} consecutive non-finite steps at step {s} "
                f"(state rolled back; last good checkpoint in {session.checkpoint_path}); try a smaller learning rate or more damping"
            )
        if parallel.agree(time.perf_counter() - last_ckpt > 60.0 * cfg.training.checkpoint_minutes):
            session.save(state, rejected)
            last_ckpt = time.perf_counter()
    session.save(state, rejected)
    if reporter:
        reporter.stop()
    return state, step_now, rejected


def _final_evaluation(session: _Session, state: TrainState, steps: int) -> dict[str, np.ndarray]:
    """The energies after VMC at the stratum centres (``evaluate``'s arrays, in moiré units)."""
    try:
        return evaluate(
            session.run, state.params, state.walkers, jax.random.fold_in(state.key, 7), _evaluation_depths(session.run),
            stop=session.stop, name="final evaluation", mesh=session.mesh,
        )
    except KeyboardInterrupt:
        raise session.interrupted(
            f"interrupted during the final evaluation; the checkpoint holds all {steps} steps; "
            f"`qernel train --resume --out {session.out_dir}` evaluates again"
        ) from None


def _summary(session: _Session, state: TrainState, final: dict[str, np.ndarray], steps: int, rejected: int) -> dict[str, Any]:
    """The run's JSON-able summary: energies per electron (meV) at the evaluation depths, health, provenance."""
    run, cfg, group = session.run, session.run.config, session.group
    unit, depths = run.energy_unit_meV, _evaluation_depths(run)
    start_energies = {} if group is None else {i: _start_energy(group, i) for i in range(len(depths))}
    report = None if group is None else health.run_health(
        group["acceptance"][:], group["clipped_fraction"][:], group["accepted"][:],
        list(final["autocorrelation_blocks"]), cfg.sampler.steps_per_iteration,
    )
    return {
        "run_dir": str(session.out_dir),
        "description": cfg.description,
        "n_electrons": cfg.n_electrons,
        "steps": steps,
        "rejected_steps": rejected,
        "wall_time_s": session.wall_time(),
        "energy_unit_meV": unit,
        "devices": int(session.mesh.devices.size),
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
    if config is not None and config.pretrain.target == "both":
        raise RunError('pretrain.target = "both" trains two runs: use qernel_cli.workflows.branches.train_branches')
    main = parallel.is_main_process()
    if main:
        config = prepare(out_dir, config, resume=resume, force=force, steps=steps)
    parallel.barrier("qernel-run-dir")
    if not main:
        config = stored_config(out_dir, steps) if resume else config  # as process 0 prepared it
    run = build(config)
    mesh = parallel.make_mesh() if mesh is None else mesh
    parallel.check_divisible(run.walkers_per_group, mesh)
    t_start = time.perf_counter()
    key = jax.random.PRNGKey(config.training.seed)
    template = initial_state(run, key)
    with deferred_interrupt() as interrupt:
        session = _Session(run, out_dir, mesh, main, reporter if main else None, interrupt, t_start)
        if resume and session.checkpoint_path.exists():
            session, state, rejected = _resumed(session, template)
        else:
            session, state, rejected = _started(session, template, key, resume)
        state, steps_done, rejected = _vmc(session, state, rejected, fault_at)
        final = _final_evaluation(session, state, steps_done)
    summary = _summary(session, state, final, steps_done, rejected)
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
