"""The ``qernel`` command line: train, sample, observe, phasediagram, exact, presets, info."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from qernel_cli import __version__, configure_jax, tables
from qernel_cli.errors import QernelError, one_line, os_error_message

app = typer.Typer(
    name="qernel",
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console()
out.soft_wrap = not out.is_terminal  # in a pipe or a log file a line is never broken or cut
err = Console(stderr=True)

PresetOption = Annotated[
    str,
    typer.Option("--preset", "-p", help="Preset name (see `qernel presets`) or path to a TOML config file."),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        "-s",
        help="Override one config field, e.g. --set model.layers=4 --set hamiltonian.coulomb=false (repeatable).",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``qernel: error: message`` on stderr (one line) and return the Exit to raise."""
    err.print(f"[bold red]qernel: error:[/] {escape(one_line(message))}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def warning(message: str) -> None:
    """Print ``warning: message`` on stderr (one line; the message is not read as markup)."""
    err.print(f"[yellow]warning:[/] {escape(one_line(message))}", soft_wrap=True, highlight=False)


def user_errors(command: Callable) -> Callable:
    """Turn :class:`QernelError` raised by a command into a one-line error and non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except QernelError as error:
            raise fail(str(error), error.exit_code) from None
        except OSError as error:  # the file system refused (disk full, read-only, no permission) where no caller said more
            if isinstance(error, BrokenPipeError):  # `qernel … | head`: typer exits quietly
                raise
            raise fail(os_error_message(error)) from None
        except Exception as error:  # noqa: BLE001  (only device out-of-memory is translated)
            if "RESOURCE_EXHAUSTED" not in str(error):
                raise
            first = str(error).split("RESOURCE_EXHAUSTED:", 1)[-1].strip().splitlines()[0]
            raise fail(
                f"out of device memory ({first}); lower training.walker_chunk or sampler.walkers, "
                "or use model.dtype=float32 (see docs/scaling.md); existing files are intact",
                3,
            ) from None

    return wrapper


def not_yet(what: str, issue: int) -> typer.Exit:
    return fail(f"`qernel {what}` is not implemented yet in version {__version__} (tracked in issue {issue})", 3)


def _version_callback(value: bool):
    if value:
        out.print(f"qernel {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    """QERNEL: one transformer wavefunction trained by VMC on a whole family of moiré Hamiltonians.

    Typical use: `qernel train --preset moire-tiny --out runs/tiny`, then
    `qernel phasediagram runs/tiny --depths 0:30:16 --out pd`.
    """
    if ctx.invoked_subcommand is None:  # `qernel` alone: the help, with a usage error's exit status
        text = ctx.get_help()  # typer's rich help prints itself and returns ""
        if text:
            typer.echo(text)
        raise typer.Exit(2)


@app.command()
@user_errors
def presets():
    """List the bundled presets: electrons, supercell, filling, material and depth range."""
    from qernel_cli.config import preset_names, resolve

    columns = ("name", "N (↑,↓)", "supercell", "filling ν", "material (a_M, m*, ε, φ)", "V range (meV)")
    configs = sorted(((resolve(name), name) for name in preset_names()), key=lambda cn: (cn[0].n_electrons, cn[1]))
    rows = []
    for c, name in configs:
        m, el = c.material, c.electrons
        rows.append((
            name,
            f"{c.n_electrons} ({el.n_up},{el.n_down})",
            f"{c.supercell.L1}×{c.supercell.L2}",
            _fraction(c.n_electrons, c.supercell.L1 * c.supercell.L2),
            f"{m.a_M_nm:g} nm, {m.m_star:g} mₑ, {m.epsilon:g}, {m.phi_deg:g}°",
            f"{c.hamiltonian.V_min_meV:g}–{c.hamiltonian.V_max_meV:g}",
        ))
    tables.show(out, "QERNEL presets", columns, rows, justify="left")


def _fraction(n: int, d: int) -> str:
    import fractions

    f = fractions.Fraction(n, d)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


@app.command()
@user_errors
def config(preset: PresetOption = "moire-tiny", set_: SetOption = None):
    """Print the resolved configuration (preset + overrides) as TOML, after validation."""
    from qernel_cli.config import resolve

    c = resolve(preset, set_ or [])
    sys.stdout.write(c.to_toml())


@app.command()
@user_errors
def info(
    preset: PresetOption = "moire-tiny",
    set_: SetOption = None,
    model: Annotated[bool, typer.Option(help="Also build the model: parameter count and FLOPs of one forward pass.")] = True,
):
    """Show the system in physical and moiré units (E_M, V/E_M, U, r_s) and the model size (parameters, FLOPs)."""
    from qernel_cli.config import resolve

    c = resolve(preset, set_ or [])
    mat = c.material_units
    rows = [
        ("electrons N (↑,↓)", f"{c.n_electrons} ({c.electrons.n_up},{c.electrons.n_down})"),
        ("supercell", f"{c.supercell.L1}×{c.supercell.L2} moiré cells, area {c.supercell_geometry.area:.4f} a_M²"),
        ("filling ν", f"{_fraction(c.n_electrons, c.supercell.L1 * c.supercell.L2)} ({c.filling:.6g})"),
        ("energy unit E_M = ħ²/(m* a_M²)", f"{mat.energy_unit_meV:.6g} meV"),
        ("effective Bohr radius a_B*", f"{mat.bohr_radius_nm:.6g} nm"),
        ("Coulomb strength U = a_M/a_B*", f"{mat.coulomb_strength:.6g}" + ("" if c.hamiltonian.coulomb else " (Coulomb off)")),
        ("r_s (units of a_B*)", f"{mat.r_s(c.filling):.6g}"),
        (
            "depth range V",
            f"{c.hamiltonian.V_min_meV:g}–{c.hamiltonian.V_max_meV:g} meV = "
            f"{mat.depth_to_moire(c.hamiltonian.V_min_meV):.6g}–{mat.depth_to_moire(c.hamiltonian.V_max_meV):.6g} E_M",
        ),
    ]
    if model:
        import jax

        from qernel_cli.model import make_wavefunction
        from qernel_cli.model.summary import forward_flops, parameter_breakdown

        wavefunction = make_wavefunction(c, jax.random.PRNGKey(0))
        parts = parameter_breakdown(wavefunction)
        m = c.model
        rows += [
            (
                "model",
                f"{m.layers} layers, width {m.width}, {m.heads} query / {m.kv_heads} kv heads, "
                f"{m.experts} experts (MLP {m.mlp_width}), {m.determinants} determinants, {m.dtype}",
            ),
            ("parameters", f"{sum(parts.values()):,} (" + ", ".join(f"{k} {v:,}" for k, v in parts.items()) + ")"),
            ("FLOPs per forward pass", f"{forward_flops(wavefunction):.4g} per configuration"),
        ]
    tables.show(out, f"{preset}: {c.description}", ("quantity", "value"), rows, header=False, justify="left")


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
    import json

    from qernel_cli.config import resolve

    # Everything that can be refused without JAX is refused first, in well under a second.
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
    from qernel_cli.stores import run_dir  # (imports zarr)
    from qernel_cli.processes import joins_other_processes

    if resume:
        run_dir.check_resumable(out_dir, steps)
    elif not joins_other_processes(num_processes, distributed):  # (the others might already see process 0's new files)
        run_dir.check_new(out_dir, force=force)

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
    try:
        summary = supervise(
            lambda interrupt: run_training(config, out_dir, resume=resume, force=force, steps=steps, reporter=reporter, mesh=mesh),
            warn=warning,
            files=f"the last checkpoint in {out_dir} is intact (continue with `qernel train --resume --out {out_dir}`)",
            idle_means_stuck=mesh.devices.flat[0].platform == "cpu",
            announce=_phase_lines(quiet),
        )
    except KeyboardInterrupt:
        reporter.stop()
        raise fail(f"interrupted; the last checkpoint in {out_dir} is intact (continue with `qernel train --resume --out {out_dir}`)", 130) from None
    except BaseException:
        reporter.discard()  # before the error message: no half-finished bar above it
        raise
    if parallel.process_count() > 1:  # every process: they must agree
        err.print(f"parameter fingerprint (process {parallel.process_index()}): {summary['parameter_fingerprint']}", highlight=False)
    if not parallel.is_main_process():
        return
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_energies(summary)
    for message in summary.get("warnings", []):
        warning(message)


def _phase_lines(quiet: bool) -> Callable[[str], None] | None:
    """Phase lines for logs (stderr not a terminal): where the work stands; on a terminal the bars show it."""
    if quiet or err.is_terminal:
        return None
    from qernel_cli.progress import phase_line

    return lambda name: phase_line(err, name)


def _computes_on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"


def _print_energies(summary: dict) -> None:
    start = all("start_energy_per_electron_meV" in d for d in summary["depths"])
    columns = ["V (meV)", "E/N (meV)", "± (meV)", "kinetic", "moiré", "interaction"] + (["before VMC", "VMC gain"] if start else [])
    rows = []
    for d in summary["depths"]:
        row = [
            f"{d['V_meV']:.3f}",
            f"{d['energy_per_electron_meV']:.4f}",
            f"{d['energy_error_meV']:.4f}",
            f"{d['kinetic_meV']:.4f}",
            f"{d['potential_meV']:.4f}",
            f"{d['interaction_meV']:.4f}",
        ]
        if start:
            gain = d["start_energy_per_electron_meV"] - d["energy_per_electron_meV"]
            sigma = (d["start_energy_error_meV"] ** 2 + d["energy_error_meV"] ** 2) ** 0.5
            row += [f"{d['start_energy_per_electron_meV']:.4f} ± {d['start_energy_error_meV']:.4f}", f"{gain:+.4f} ({gain / sigma:+.1f}σ)"]
        rows.append(row)
    tables.show(out, f"energies per electron after {summary['steps']} steps ({summary['wall_time_s']:.0f} s)", columns, rows)
    h = summary.get("health")
    if h:
        taus = ", ".join(f"{t:.0f}" for t in h["autocorrelation_sweeps"])
        out.print(
            f"health: {h['rejected_steps']} of {h['steps']} steps rejected, acceptance {h['acceptance']:.2f} "
            f"({h['acceptance_min']:.2f}–{h['acceptance_max']:.2f}), clipped local energies {h['clipped_fraction']:.2%} "
            f"(max {h['clipped_fraction_max']:.2%}), autocorrelation time {taus} sweeps (error bars include it)",
            soft_wrap=True, highlight=False,
        )


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

    from qernel_cli.progress import task_progress
    from qernel_cli.supervisor import supervise
    from qernel_cli.workflows.sample import sample_to_store

    with task_progress(err, "sample", enabled=not quiet) as progress:
        summary = supervise(
            lambda interrupt: sample_to_store(
                run_dir, depth, out_store, walkers=walkers, records=records, sweeps=sweeps, burn_in=burn_in, seed=seed,
                warn=warning,
                progress=progress,
            ),
            warn=warning,
            files=f"the records already in {out_store} are intact",
            idle_means_stuck=_computes_on_cpu(),
            announce=_phase_lines(quiet),
        )
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        out.print(
            f"{summary['records_per_depth']} records × {summary['walkers']} walkers at "
            f"{', '.join(f'{v:g}' for v in summary['depths_meV'])} meV → {summary['store']} "
            f"(session {summary['session']}, {summary['records_in_store']} records in the store)"
        )


@app.command()
@user_errors
def observe(
    store: Annotated[Path, typer.Argument(help="A sample store written by `qernel sample`.")],
    grid: Annotated[int, typer.Option(help="Density grid points per supercell direction (rounded up to a multiple of L1, L2).", min=4)] = 96,
    plots: Annotated[Optional[Path], typer.Option(help="Directory for PNG plots (default: STORE without .zarr + '-plots').")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
):
    """Energies with error bars, charge density, S(q), g(r) and the crystal order parameter, per depth.

    Writes them into the group `observables` of the store (open with
    `xarray.open_zarr(STORE, group="observables")`) and PNG plots.
    """
    import json

    from qernel_cli.stores import samples

    samples.open_samples(store)  # a missing or damaged store is refused at once, before the numerics load
    from qernel_cli.workflows.observe import observe_store

    plots_dir = plots or store.with_name(store.name.removesuffix(".zarr") + "-plots")
    with err.status("observing …"):
        results, attrs = observe_store(store, grid=grid, plots_dir=plots_dir)
    summary = _observables_summary(results, attrs)
    summary["plots"] = str(plots_dir)
    from qernel_cli.workflows.observe import blocking_warning

    if message := blocking_warning(results):
        warning(message)
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        _print_observables(summary)


def _observables_summary(results, attrs) -> dict:
    from qernel_cli.observables.sites import random_site_order

    n, m = attrs["n_electrons"], attrs["supercell"][0] * attrs["supercell"][1]
    return {
        "n_electrons": n,
        "order_parameter_liquid": 4.0 / n,
        "site_order_random_sites": random_site_order(n, m),
        "depths": [r.summary() for r in results],
    }


def _print_observables(summary: dict) -> None:
    columns = ("V (meV)", "E/N", "kinetic", "moiré", "interaction", "τ", "m²", "m²_site", "acc")

    def pm(row, key):
        return f"{row[key + '_meV']:.4f} ± {row[key + '_error_meV']:.4f}"

    def order(row, key):
        return "—" if row[key] is None else f"{row[key]:.3f} ± {row[key + '_error']:.3f}"

    def tau(row):
        value = row["energy_tau_records"]
        return "—" if value is None else f"{value:.1f}"

    rows = [
        (
            f"{row['V_meV']:g}", pm(row, "energy"), pm(row, "kinetic"), pm(row, "potential"), pm(row, "interaction"),
            tau(row), order(row, "order_parameter"), order(row, "site_order"), f"{row['acceptance']:.2f}",
        )
        for row in summary["depths"]
    ]
    tables.show(out, f"observables per electron (meV), N = {summary['n_electrons']}", columns, rows)
    out.print(
        f"crystal order (1 = honeycomb crystal): m² = 4⟨|ρ_K|²⟩/N², {summary['order_parameter_liquid']:.3f} for an uncorrelated liquid; "
        f"m²_site (electrons on their nearest moiré site), {summary['site_order_random_sites']:.3f} for randomly occupied sites. τ: autocorrelation time (records)."
    )


@app.command()
@user_errors
def phasediagram(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output directory (samples.zarr, phasediagram.zarr, PNG plots); rerunning it samples only what is missing.")],
    depths: Annotated[str, typer.Option(help="Depths in meV: START:STOP:COUNT (inclusive), e.g. 0:30:16, or a list 5,10,20.")] = "0:30:16",
    walkers: Annotated[Optional[int], typer.Option(help="Walkers per depth (default and most: the run's sampler.walkers, one per trained configuration).", min=1)] = None,
    records: Annotated[int, typer.Option(help="Records per depth.", min=1)] = 100,
    top_up: Annotated[int, typer.Option("--top-up", help="Rounds of doubling the records at depths whose energy blocking did not converge.", min=0)] = 0,
    grid: Annotated[int, typer.Option(help="Density grid points per supercell direction.", min=4)] = 96,
    seed: Annotated[int, typer.Option(help="Random seed.", min=0)] = 0,
    json_: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
):
    """Sample and observe every depth; estimate the liquid–crystal transition depth with its uncertainty."""
    import json

    from qernel_cli.workflows.requests import check_phase_diagram

    grid_meV = check_phase_diagram(run_dir, depths, out_dir)  # refused before JAX loads

    from qernel_cli.progress import task_progress
    from qernel_cli.supervisor import supervise
    from qernel_cli.workflows.phasediagram import phase_diagram
    with task_progress(err, "phase diagram", enabled=not quiet) as progress:
        summary = supervise(
            lambda interrupt: phase_diagram(
                run_dir, grid_meV, out_dir, walkers=walkers, records=records, top_up=top_up, grid=grid, seed=seed,
                warn=warning,
                progress=progress,
            ),
            warn=warning,
            files=f"the records already in {out_dir} are intact (rerunning the command samples only what is missing)",
            idle_means_stuck=_computes_on_cpu(),
            announce=_phase_lines(quiet),
        )
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    rows = []
    for d in summary["depths"]:
        order = "—" if d["site_order"] is None else f"{d['site_order']:.3f} ± {d['site_order_error']:.3f}"
        rows.append((
            f"{d['V_meV']:g}",
            *(f"{d[k + '_meV']:.4f} ± {d[k + '_error_meV']:.4f}" for k in ("energy", "kinetic", "potential", "interaction")),
            order,
        ))
    columns = ("V (meV)", "E/N", "kinetic", "moiré", "interaction", "m²_site")
    tables.show(out, f"phase diagram, N = {summary['n_electrons']} (per electron, meV)", columns, rows)
    t = summary["transition"]
    if t and t["depth"] is not None:
        out.print(f"transition depth V_c = {t['depth']:.2f} ± {t['error']:.2f} meV ({t['method']})")
        if t["energy_kink_depth"] is not None:
            out.print(f"  interaction-energy slope change at {t['energy_kink_depth']:.2f} ± {t['energy_kink_error']:.2f} meV")
    else:
        out.print("no transition found in this range of depths")
    out.print(f"plots and stores in {summary['out_dir']}")


@app.command()
@user_errors
def exact(
    preset: PresetOption = "moire-tiny",
    set_: SetOption = None,
    depths: Annotated[Optional[str], typer.Option(help="Depths in meV: START:STOP:COUNT (inclusive) or a list 5,10,20 (default: hamiltonian.V_min_meV and V_max_meV).")] = None,
    bands: Annotated[int, typer.Option(help="Largest number of bands per momentum; the sweep starts from the fewest that hold the electrons.", min=1)] = 3,
    shells: Annotated[Optional[int], typer.Option(help="Plane-wave cutoff of the bands, |G| ≤ shells·|b| (default: converged per depth).", min=1)] = None,
    max_memory: Annotated[Optional[float], typer.Option(help="Refuse a basis whose estimated memory exceeds this many GiB (default: 3/4 of this machine's memory).", min=0.0)] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Also write the JSON to this file (refused if it exists).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
):
    """Exact ground-state energies of a few electrons (band basis, Lanczos, every momentum sector): variational bounds and their extrapolation."""
    import json

    from qernel_cli.config import resolve
    from qernel_cli.workflows.exact import ExactError, exact_energies, physical_memory_bytes, plan
    from qernel_cli.workflows.requests import check_depths, parse_depths

    c = resolve(preset, set_ or [])
    if depths is None:
        grid = sorted({c.hamiltonian.V_min_meV, c.hamiltonian.V_max_meV})
    else:
        grid = [float(v) for v in check_depths(list(parse_depths(depths)), c)]
    if out_file is not None and out_file.exists():
        raise ExactError(f"{out_file} exists; choose another --out (nothing was overwritten)")
    limit = max_memory if max_memory is not None else 0.75 * physical_memory_bytes() / 2**30
    line = plan(c, bands, limit)
    if not quiet:
        err.print(f"exact: {escape(line)}", soft_wrap=True, highlight=False)
    result = exact_energies(c, grid, bands, shells, progress=None if quiet else lambda m: err.print(escape(m), soft_wrap=True, highlight=False))
    result["preset"] = preset
    text = json.dumps(result, indent=2) + "\n"
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(text)
    if json_:
        sys.stdout.write(text)
        return
    rows = []
    for d in result["depths"]:
        last = d["bands"][-1]
        x = d["extrapolated_per_electron_meV"]
        rows.append((
            f"{d['V_meV']:g}",
            " ".join(f"{b['energy_per_electron_meV']:.4f}" for b in d["bands"]),
            "—" if x is None else f"{x:.4f} ± {d['extrapolation_error_meV']:.4f}",
            f"{d['determinant_per_electron_meV']:.4f}",
            f"{d['correlation_per_electron_meV']:.4f}",
            f"{last['kinetic_per_electron_meV']:.4f}",
            f"{last['moire_per_electron_meV']:.4f}",
            f"{last['interaction_per_electron_meV']:.4f}",
            "({},{})".format(*last["momentum"]),
            f"{last['states']:,}",
        ))
    bands_label = ", ".join(str(b["n_bands"]) for b in result["depths"][0]["bands"])
    columns = ("V (meV)", f"E/N bound, {bands_label} bands", "E/N extrapolated", "best determinant", "E_c/N", "kinetic", "moiré", "interaction", "momentum", "states")
    n = c.n_electrons
    tables.show(out, f"exact ground state, N = {n} on {c.supercell.L1}×{c.supercell.L2} (per electron, meV)", columns, rows)


def main() -> None:
    """Console-script entry point.

    Usage errors (an unknown option, a bad option value, a missing argument)
    are one ``qernel: error:`` line pointing to ``--help``, like every other
    error; ``qernel`` alone prints the help.
    """
    configure_jax()
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # click's usage errors
        code = error.exit_code
        ctx = getattr(error, "ctx", None)
        fail(error.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""), code)
    except typer.Abort:
        fail("aborted", 1)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
