"""``qernel observe``: observables with error bars from a sample store, per depth.

For every depth in the store:

* energies per electron (total, kinetic, moiré, interaction; meV) with
  error bars from the spread of the walkers' chain means (right for any
  number of records, the walkers being independent chains from distinct
  starts), blocking of the walker-averaged series as the check on the
  correlation time (``*_converged``; False: too few records to measure τ,
  and a warning names ``--records``), and the integrated autocorrelation
  time where it is measurable (NaN elsewhere);
* the charge density on a grid over the supercell, folded into one moiré
  cell, and *aligned* to the crystal pattern (each configuration translated by
  the moiré vector m·a_1, m ∈ {0, 1, 2}, that brings the phase of its ρ_K
  closest to 0, so the three degenerate ν = 2/3 crystal patterns are overlaid
  rather than averaged away);
* S(q) on the supercell reciprocal grid up to ``q_max``, g(r), and the crystal
  order parameter m² = 4⟨|ρ_K|²⟩/N² (docs/observables.md explains the choice).

Errors of the configuration observables treat every walker's chain as one
independent sample (its records pooled), so correlations along a chain
cannot make them too small. Results go to an observables store (zarr,
dimension names and units, opens with xarray) and PNG plots.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from qernel_cli import samples, store
from qernel_cli.errors import os_reason
from qernel_cli.lattice import MOIRE_G, MOIRE_VECTORS, Supercell
from qernel_cli.observables import (
    crystal_order,
    crystal_order_per_sample,
    density_on_grid,
    fold_to_moire_cell,
    ordering_vectors,
    pair_correlation,
    structure_factor,
    supercell_q_vectors,
)
from qernel_cli.observables.blocking import ChainAverage, chain_average
from qernel_cli.observables.sites import random_site_order, site_order

ENERGY_PARTS = ("energy", "kinetic", "potential", "interaction")
G_BINS = 60


@dataclasses.dataclass
class DepthObservables:
    """Everything measured at one depth (energies meV per electron, densities per a_M²)."""

    depth: float
    records: int
    walkers: int
    energies: dict[str, ChainAverage]  # name → mean, error, τ, blocking check
    acceptance: float
    density: np.ndarray
    density_error: np.ndarray
    density_cell: np.ndarray
    density_aligned: np.ndarray
    structure: Any
    pair: Any
    order: Any
    site_order: Any


def _unconverged(results: list[DepthObservables]) -> list[DepthObservables]:
    """The depths whose total-energy blocking did not converge (records too few for the autocorrelation time)."""
    return [r for r in results if not r.energies["energy"].converged]


def unconverged_depths(results: list[DepthObservables]) -> list[float]:
    """Depths (meV) whose total-energy blocking did not converge."""
    return [r.depth for r in _unconverged(results)]


def blocking_warning(results: list[DepthObservables]) -> str | None:
    """One line for the depths whose energy blocking did not converge, naming the fix; None if there are none."""
    bad = _unconverged(results)
    if not bad:
        return None
    depths = ", ".join(f"{r.depth:g}" for r in bad)
    lower_bound = [r for r in bad if r.energies["energy"].error_source == "blocking"]
    consequence = (
        "their energy errors are lower bounds (fewer than 16 walkers)" if lower_bound
        else "τ is not measured there and the energy errors rest on the walkers' spread alone"
    )
    records = min(r.records for r in bad)
    return (
        f"energy blocking did not converge at V = {depths} meV ({records} records are too few for the autocorrelation time): "
        f"{consequence}; sample more records (--records {4 * records})"
    )


def aligned_positions(positions: np.ndarray, supercell: Supercell) -> np.ndarray:
    """Translate each configuration by m·a_1 (m = 0, 1, 2) so that its crystal phase is nearest the reference.

    The three patterns of a crystal on one √3×√3 sublattice have ρ_K phases 0, ±2π/3; its
    complement (two sublattices filled, the ν = 2/3 honeycomb) has phases π, ±π/3. The
    reference is the pattern phase of the one that fits the filling (π above half filling,
    else 0), so perfect patterns sit at bin centres, never on the edges between two choices.
    """
    n = positions.shape[-2]
    reference = np.pi if n > supercell.n_cells / 2 else 0.0
    phase = crystal_order_per_sample(positions, supercell).phase  # translating by a_1 shifts it by −2π/3
    m = np.mod(np.round((phase - reference) / (2 * np.pi / 3)), 3)
    return positions + m[..., None, None] * MOIRE_VECTORS[0]


def observe_depth(group, rows: np.ndarray, supercell: Supercell, grid: int, q_max: float, phi_deg: float) -> DepthObservables:
    """Observables from the records ``rows`` (all at one depth) of a sample store."""
    positions = samples.read(group, "positions", (rows, slice(None), slice(None), slice(None)))
    if not np.all(np.isfinite(positions)):  # unwritten (deleted) chunks read as NaN
        bad = int(np.sum(~np.all(np.isfinite(positions), axis=(1, 2, 3))))
        raise samples.SampleStoreError(f"sample store {store.location(group)} is damaged: {bad} records have no positions (deleted chunks?)")
    positions = np.swapaxes(positions, 0, 1)  # (walker, record, N, 2): walkers are the independent samples
    energies = {name: chain_average(samples.read(group, name, (rows, slice(None)))) for name in ENERGY_PARTS}
    has_order = supercell.L1 % 3 == 0 and supercell.L2 % 3 == 0
    density = density_on_grid(positions, supercell, grid, independent_axes=1)
    aligned = density_on_grid(aligned_positions(positions, supercell), supercell, grid, independent_axes=1) if has_order else density
    q, _ = supercell_q_vectors(supercell, q_max)
    return DepthObservables(
        depth=float(group["depth"][int(rows[0])]),
        records=len(rows),
        walkers=positions.shape[0],
        energies=energies,
        acceptance=float(np.mean(samples.read(group, "acceptance", (rows,)))),
        density=density.value,
        density_error=density.error,
        density_cell=fold_to_moire_cell(density.value, supercell),
        density_aligned=aligned.value,
        structure=structure_factor(positions, q, independent_axes=1, supercell=supercell),
        pair=pair_correlation(positions, supercell, G_BINS, independent_axes=1),
        order=crystal_order(positions, supercell, independent_axes=1) if has_order else None,
        site_order=site_order(positions, supercell, phi_deg, independent_axes=1) if has_order else None,
    )


def depth_rows(group) -> dict[float, np.ndarray]:
    """Record indices per distinct depth (sessions at the same depth are pooled)."""
    n = store.dimension_length(group, "record")
    depth = samples.read(group, "depth", (slice(0, n),))
    if not np.all(np.isfinite(depth)):
        raise samples.SampleStoreError(f"sample store {store.location(group)} is damaged: {int(np.sum(~np.isfinite(depth)))} records have no depth (deleted chunks?)")
    return {float(v): np.flatnonzero(depth == v) for v in np.unique(depth)}


def observe_store(sample_store: Path, grid: int = 96, q_max: float | None = None, plots_dir: Path | None = None, out_store: Path | None = None) -> tuple[list[DepthObservables], dict[str, Any]]:
    """Measure every depth of a sample store; write the observables store and plots. Returns results and attrs.

    ``q_max`` (1/a_M) defaults to twice the shortest moiré reciprocal vector; the
    observables go to ``out_store`` (default: the group ``observables`` inside the sample store).
    """
    group = samples.open_samples(sample_store)
    L1, L2 = group.attrs["supercell"]
    supercell = Supercell(int(L1), int(L2))
    grid = _compatible_grid(grid, supercell)
    q_max = q_max or 2.0 * float(np.linalg.norm(MOIRE_G[0]))
    phi = float(group.attrs["phi_deg"])
    results = [observe_depth(group, rows, supercell, grid, q_max, phi) for _, rows in sorted(depth_rows(group).items())]
    attrs = {k: group.attrs[k] for k in ("config_toml", "run_dir", "n_electrons", "supercell", "phi_deg", "energy_unit_meV", "trained_depths_meV") if k in group.attrs}
    attrs["sample_store"] = str(Path(sample_store).resolve())
    out_store = Path(out_store) if out_store else Path(sample_store) / "observables"
    write_observables(out_store, results, supercell, attrs)
    if plots_dir is not None:
        plot_depths(Path(plots_dir), results, supercell, phi)
    return results, attrs


def _compatible_grid(grid: int, supercell: Supercell) -> int:
    """The grid rounded up to a multiple of L1 and L2 (so the density folds onto one moiré cell)."""
    step = np.lcm(supercell.L1, supercell.L2)
    return int(-(-max(grid, step) // step) * step)


OBS = store.Variable
OBSERVABLE_VARIABLES = {
    "depth": OBS(("depth",), "float64", "meV", "moiré depth V"),
    "records": OBS(("depth",), "int64", "1", "records used"),
    "walkers": OBS(("depth",), "int64", "1", "independent Markov chains"),
    "acceptance": OBS(("depth",), "float64", "1", "mean Metropolis acceptance"),
    **{
        f"{name}{suffix}": OBS(("depth",), "float64", unit, f"{label} per electron{extra}")
        for name, label in (("energy", "total energy"), ("kinetic", "kinetic energy"), ("potential", "moiré potential energy"), ("interaction", "interaction energy"))
        for suffix, unit, extra in (
            ("", "meV", ""),
            ("_error", "meV", ": standard error (spread of the walkers' chain means; blocking with fewer than 16 walkers)"),
            ("_tau", "record", ": integrated autocorrelation time (½ for independent records; NaN where the records are too few to measure it)"),
        )
    },
    **{
        f"{name}_converged": OBS(("depth",), "bool", "1", f"blocking of the walker-averaged {name} series found blocks longer than its correlation (False: more records needed to measure τ)")
        for name in ("energy", "kinetic", "potential", "interaction")
    },
    "density": OBS(("depth", "s1", "s2"), "float64", "a_M^-2", "electron density on a grid over the supercell (fractional coordinates s1, s2)"),
    "density_error": OBS(("depth", "s1", "s2"), "float64", "a_M^-2", "standard error of the density (chains as independent samples)"),
    "density_cell": OBS(("depth", "c1", "c2"), "float64", "a_M^-2", "density folded into one moiré cell (fractional coordinates of a_1, a_2)"),
    "density_aligned": OBS(("depth", "s1", "s2"), "float64", "a_M^-2", "density with each configuration translated to a common crystal pattern"),
    "q": OBS(("q", "xy"), "float64", "1/a_M", "wave vectors of the supercell reciprocal lattice"),
    "q_norm": OBS(("q",), "float64", "1/a_M", "|q|"),
    "structure_factor": OBS(("depth", "q"), "float64", "1", "S(q) = <|rho_q|^2>/N"),
    "structure_factor_error": OBS(("depth", "q"), "float64", "1", "standard error of S(q)"),
    "structure_factor_connected": OBS(("depth", "q"), "float64", "1", "S(q) - |<rho_q>|^2/N"),
    "r": OBS(("r",), "float64", "a_M", "pair distance (bin centres)"),
    "pair_correlation": OBS(("depth", "r"), "float64", "1", "g(r), 1 for uncorrelated particles"),
    "pair_correlation_error": OBS(("depth", "r"), "float64", "1", "standard error of g(r)"),
    "order_parameter": OBS(("depth",), "float64", "1", "crystal order m^2 = 4<|rho_K|^2>/N^2 over the six K points (1 for a perfect honeycomb crystal)"),
    "order_parameter_error": OBS(("depth",), "float64", "1", "standard error of m^2"),
    "site_order": OBS(("depth",), "float64", "1", "site-projected crystal order m^2_site (electrons moved to their nearest moire site; 1 for the honeycomb crystal)"),
    "site_order_error": OBS(("depth",), "float64", "1", "standard error of m^2_site"),
}


def write_observables(path: Path, results: list[DepthObservables], supercell: Supercell, attrs: dict[str, Any]) -> None:
    """Write (replace) an observables store atomically: build beside it, then swap directories."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    first = results[0]
    sizes = {"s1": first.density.shape[0], "s2": first.density.shape[1], "c1": first.density_cell.shape[0], "c2": first.density_cell.shape[1],
             "q": len(first.structure.q), "xy": 2, "r": len(first.pair.r)}
    static = {"q", "q_norm", "r"}
    variables = {k: v for k, v in OBSERVABLE_VARIABLES.items() if k not in static}
    n_el = int(attrs.get("n_electrons", 0))
    try:
        m = supercell.n_cells
        references = {
            "order_parameter_liquid": 4.0 / n_el if n_el else None,
            "site_order_random_sites": random_site_order(n_el, m),
        }
        group = store.create(tmp, variables, sizes, {"kind": "observables", **attrs, **references})
        for name in static:
            var = OBSERVABLE_VARIABLES[name]
            value = {"q": first.structure.q, "q_norm": np.linalg.norm(first.structure.q, axis=-1), "r": first.pair.r}[name]
            array = group.create_array(name, shape=value.shape, dtype=var.dtype, dimension_names=var.dims)
            array[...] = value
            array.attrs.update({"units": var.units, "description": var.description})
        nan = float("nan")
        rows = [
            {
                "depth": r.depth, "records": r.records, "walkers": r.walkers, "acceptance": r.acceptance,
                **{f"{k}{s}": getattr(v, field) for k, v in r.energies.items()
                   for s, field in (("", "mean"), ("_error", "error"), ("_tau", "tau"), ("_converged", "converged"))},
                "density": r.density, "density_error": r.density_error, "density_cell": r.density_cell, "density_aligned": r.density_aligned,
                "structure_factor": r.structure.value, "structure_factor_error": r.structure.error, "structure_factor_connected": r.structure.connected,
                "pair_correlation": r.pair.g, "pair_correlation_error": r.pair.error,
                "order_parameter": r.order.value if r.order else nan, "order_parameter_error": r.order.error if r.order else nan,
                "site_order": r.site_order.value if r.site_order else nan, "site_order_error": r.site_order.error if r.site_order else nan,
            }
            for r in results
        ]
        store.append_rows(group, rows)
    except (OSError, store.StoreError) as error:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = os_reason(error) if isinstance(error, OSError) else error.reason
        raise store.StoreError(f"cannot write observables to {path}: {reason}") from None
    old = path.with_name(path.name + ".old")
    try:
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except OSError as error:
        raise store.StoreError(f"cannot write observables to {path}: {os_reason(error)}") from None
    shutil.rmtree(old, ignore_errors=True)
    _consolidate_parent(path)


def _consolidate_parent(path: Path) -> None:
    """Re-consolidate the QERNEL store that holds ``path`` as a group (the sample store, for its ``observables``)."""
    parent = path.parent
    if not (parent / "zarr.json").exists():
        return
    try:
        store.consolidate(parent)
    except OSError:
        pass  # the observables are written; a reader of the parent store then reads its metadata file by file


def plot_depths(plots_dir: Path, results: list[DepthObservables], supercell: Supercell, phi_deg: float) -> list[Path]:
    """density_V*.png and structure_V*.png for every depth."""
    from qernel_cli import plots

    plots_dir.mkdir(parents=True, exist_ok=True)
    written = []
    has_order = supercell.L1 % 3 == 0 and supercell.L2 % 3 == 0
    k_norm = float(np.linalg.norm(ordering_vectors(supercell)[0])) if has_order else None
    for r in results:
        tag = f"V{r.depth:07.3f}meV"
        path = plots_dir / f"density_{tag}.png"
        plots.density_figure(path, supercell, phi_deg, r.depth, r.density, r.density_cell, r.density_aligned if has_order else None)
        written.append(path)
        path = plots_dir / f"structure_{tag}.png"
        q_norm = np.linalg.norm(r.structure.q, axis=-1)
        plots.structure_figure(path, r.depth, q_norm, r.structure.value, r.structure.error, r.pair.r, r.pair.g, r.pair.error, k_norm)
        written.append(path)
    return written
