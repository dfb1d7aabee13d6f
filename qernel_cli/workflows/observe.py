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

from pathlib import Path
from typing import Any

import numpy as np

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
from qernel_cli.observables.blocking import chain_average
from qernel_cli.observables.sites import site_order
from qernel_cli.stores import samples, store
from qernel_cli.stores.observables import DepthObservables, write_observables

ENERGY_PARTS = ("energy", "kinetic", "potential", "interaction")
G_BINS = 60


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
