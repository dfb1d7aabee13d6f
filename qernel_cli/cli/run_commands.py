"""The commands that run the wavefunction: train (VMC) and sample (walkers into a store)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from qernel_cli.cli.application import app, err, fail, user_errors, warning
from qernel_cli.cli.options import PresetOption, SetOption
from qernel_cli.cli.reports import print_branches, print_energies, print_samples
from qernel_cli.cli.supervised import phase_lines, with_progress

if TYPE_CHECKING:
    from qernel_cli.config import Config


@app.command()
@user_errors
def train(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run directory (created; holds config.toml, checkpoint.npz, train.zarr).")],
    preset: PresetOption = "moire-tiny",
    set_: SetOption = None,
    steps: Annotated[Optional[int], typer.Option(help="Optimisation steps (overrides training.steps; with --resume, the new total).", min=1)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (overrides training.seed).", min=0)] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run in --out from its checkpoint (uses its stored config).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete and overwrite an existing run directory.")] = False,
    branch: Annotated[Optional[str], typer.Option(help='Of a two-branch run (pretrain.target = "both"): train only this branch, liquid or crystal (the two at once in two processes or on two hosts; a new one may join a run of the same config).')] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout at the end.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    devices: Annotated[Optional[int], typer.Option(help="Split the walkers over this many devices (default: all; on a CPU-only host, creates that many CPU devices).", min=1)] = None,
    coordinator: Annotated[Optional[str], typer.Option(help="Multi-process run: HOST:PORT of process 0 (or JAX_COORDINATOR_ADDRESS).", rich_help_panel="Multi-process")] = None,
    num_processes: Annotated[Optional[int], typer.Option(help="Multi-process run: number of processes (or JAX_NUM_PROCESSES).", min=1, rich_help_panel="Multi-process")] = None,
    process_id: Annotated[Optional[int], typer.Option(help="Multi-process run: this process's index, 0 … num-processes−1 (or JAX_PROCESS_ID).", min=0, rich_help_panel="Multi-process")] = None,
    distributed: Annotated[bool, typer.Option("--distributed", help="Join a multi-process run whose parameters the cluster provides (SLURM, Open MPI): jax.distributed auto-detection.", rich_help_panel="Multi-process")] = False,
):
    """Train the family wavefunction by VMC over the preset's range of moiré depths.

    Pre-trains on non-interacting Bloch determinants (or the classical crystal,
    pretrain.target = "crystal"), then optimises the energy
    averaged over depths drawn every step (SPRING natural gradient by default).
    Ctrl-C saves a checkpoint; --resume continues exactly where it stopped.
    Walkers are split over all devices (data parallel); several processes
    (hosts) join with --coordinator/--num-processes/--process-id or
    --distributed, and only process 0 writes the run directory.
    """
    config = _new_run_config(preset, set_, steps, seed, resume, force)
    from qernel_cli.stores import branches, run_dir  # (imports zarr)
    from qernel_cli.processes import joins_other_processes

    branched = branches.is_branched(out_dir) if resume else branches.is_branched_config(config)
    layout = branches if branched else run_dir
    if branch is not None and (not branched or branch not in branches.BRANCHES):
        raise fail(f'--branch {branch}: needs a two-branch run (pretrain.target = "both") and one of {", ".join(branches.BRANCHES)}')
    if resume:
        layout.check_resumable(out_dir, steps)
    elif not joins_other_processes(num_processes, distributed):  # (the others might already see process 0's new files)
        if branch is None or force or not branches.check_joinable(out_dir, config, branch):
            layout.check_new(out_dir, force=force)

    from qernel_cli import parallel
    from qernel_cli.progress import TrainReporter
    from qernel_cli.supervisor import supervise
    from qernel_cli.workflows.train import train as run_training

    links = parallel.Distributed.from_env(coordinator, num_processes, process_id)
    if devices is not None:
        if links.requested or distributed:
            raise fail("--devices applies to one process; a multi-process run uses all devices of every process")
        parallel.request_cpu_devices(devices)
    parallel.initialize(links, auto=distributed)
    mesh = parallel.make_mesh(devices)
    if not parallel.is_main_process():
        quiet = True

    reporter = TrainReporter(err, enabled=not quiet)
    if branched:
        from qernel_cli.workflows.branches import train_branches

        def work(interrupt):
            return train_branches(config, out_dir, resume=resume, force=force, steps=steps, reporter=reporter, mesh=mesh, branch=branch)
    else:
        def work(interrupt):
            return run_training(config, out_dir, resume=resume, force=force, steps=steps, reporter=reporter, mesh=mesh)
    try:
        summary = supervise(
            work,
            warn=warning,
            files=f"the last checkpoint in {out_dir} is intact (continue with `qernel train --resume --out {out_dir}`)",
            idle_means_stuck=mesh.devices.flat[0].platform == "cpu",
            announce=phase_lines(quiet),
        )
    except KeyboardInterrupt:
        reporter.stop()
        raise fail(f"interrupted; the last checkpoint in {out_dir} is intact (continue with `qernel train --resume --out {out_dir}`)", 130) from None
    except BaseException:
        reporter.discard()  # before the error message: no half-finished bar above it
        raise
    _report_training(summary, json_)


def _new_run_config(
    preset: str, set_: list[str] | None, steps: int | None, seed: int | None, resume: bool, force: bool
) -> Config | None:
    """The validated config of a new run (None with --resume, which uses the run's stored one).

    Everything that can be refused without JAX is refused first, in well under a second.
    """
    from qernel_cli.config import resolve

    if resume and force:
        raise fail("--resume and --force exclude each other")
    if resume and (set_ or seed is not None):
        raise fail("--resume uses the run's stored config; only --steps may change")
    config = None
    if not resume:
        overrides = list(set_ or [])
        if steps is not None:
            overrides.append(f"training.steps={steps}")
        if seed is not None:
            overrides.append(f"training.seed={seed}")
        config = resolve(preset, overrides)
    return config


def _report_training(summary: dict, json_: bool) -> None:
    """Every process prints its parameter fingerprint (when there are several); process 0 the summary and warnings."""
    import json

    from qernel_cli import parallel

    if parallel.process_count() > 1:  # every process: they must agree
        err.print(f"parameter fingerprint (process {parallel.process_index()}): {summary['parameter_fingerprint']}", highlight=False)
    if not parallel.is_main_process():
        return
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    elif "branches" in summary:
        print_branches(summary)
    else:
        print_energies(summary)
    for message in summary.get("warnings", []):
        warning(message)


@app.command()
@user_errors
def sample(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory (from `qernel train`).")],
    depth: Annotated[list[float], typer.Option("--depth", "-d", help="Moiré depth V in meV (repeatable; any value between the training depths; outside them is an extrapolation and warned about).")],
    out_store: Annotated[Path, typer.Option("--out", "-o", help="Sample store (zarr) to create or append to.")],
    walkers: Annotated[Optional[int], typer.Option(help="Walkers per depth (default and most: the run's sampler.walkers, one per trained configuration).", min=1)] = None,
    records: Annotated[int, typer.Option(help="Records (snapshots of all walkers) per depth.", min=1)] = 200,
    sweeps: Annotated[Optional[int], typer.Option(help="Metropolis sweeps between records (default: the run's sampler.steps_per_iteration).", min=1)] = None,
    burn_in: Annotated[Optional[int], typer.Option(help="Equilibration sweeps before recording (default: the run's sampler.burn_in).", min=0)] = None,
    seed: Annotated[int, typer.Option(help="Random seed.", min=0)] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Sample walkers of a trained model at given depths; append positions and local energies to a store."""
    import json

    from qernel_cli.workflows.requests import check_sampling

    check_sampling(run_dir, depth, out_store, walkers)  # refused before JAX loads; warnings come from the run itself

    from qernel_cli.workflows.sample import sample_to_store

    summary = with_progress(
        "sample",
        lambda progress: sample_to_store(
            run_dir, depth, out_store, walkers=walkers, records=records, sweeps=sweeps, burn_in=burn_in, seed=seed, warn=warning, progress=progress
        ),
        quiet=quiet,
        files=f"the records already in {out_store} are intact",
    )
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        print_samples(summary)
