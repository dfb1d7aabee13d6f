"""The commands that turn samples into physics: observe, phasediagram, and the exact reference energies."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from qernel_cli.cli.application import app, err, user_errors, warning
from qernel_cli.cli.options import PresetOption, SetOption
from qernel_cli.cli.reports import observables_summary, print_branch_diagram, print_exact, print_observables, print_phase_diagram
from qernel_cli.cli.supervised import with_progress


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
    summary = observables_summary(results, attrs)
    summary["plots"] = str(plots_dir)
    from qernel_cli.workflows.observe import blocking_warning

    if message := blocking_warning(results):
        warning(message)
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        print_observables(summary)


@app.command()
@user_errors
def phasediagram(
    run_dir: Annotated[Path, typer.Argument(help="A trained run directory, or a two-branch run (pretrain.target = \"both\"): then both branches, their crossing and the lower one per depth.")],
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

    from qernel_cli.stores.branches import is_branched

    if is_branched(run_dir):
        from qernel_cli.workflows.branch_diagram import branch_phase_diagram as diagram
    else:
        from qernel_cli.workflows.phasediagram import phase_diagram as diagram

    summary = with_progress(
        "phase diagram",
        lambda progress: diagram(
            run_dir, grid_meV, out_dir, walkers=walkers, records=records, top_up=top_up, grid=grid, seed=seed, warn=warning, progress=progress
        ),
        quiet=quiet,
        files=f"the records already in {out_dir} are intact (rerunning the command samples only what is missing)",
    )
    if json_:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    elif "crossing" in summary:
        print_branch_diagram(summary)
    else:
        print_phase_diagram(summary)


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
    print_exact(result, c)
