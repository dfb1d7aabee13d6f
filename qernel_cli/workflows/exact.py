"""``qernel exact``: exact ground-state energies of a few electrons for a config, at given depths.

For every depth the band basis grows from the fewest bands that hold the
electrons to ``--bands`` per momentum; each step's ground state (lowest over
all momentum sectors) is a variational upper bound, and the sweep is
extrapolated with a power-law tail (:mod:`qernel_cli.exact.band_sweep`). Energies are reported per
electron in meV, with the ground state's kinetic, moiré and interaction parts
and its crystal momentum. The correlation energy per electron is the best
single determinant of band orbitals (the lowest diagonal element of H in the
largest basis) minus the extrapolated energy (the bound where there is none).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

from qernel_cli.config import Config
from qernel_cli.errors import QernelError
from qernel_cli.exact.band_sweep import BandStep, Extrapolation, resources, sweep
from qernel_cli.exact.diagonalise import FewElectrons

SECONDS_PER_PAIR_ENTRY = 6e-6
"""Rough wall time of one Lanczos solve per entry of the pair operator (measured on a 2-core CPU: 6 electrons, 216k states, 20 s)."""


class ExactError(QernelError):
    """The exact diagonalisation cannot be done as asked."""


def physical_memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def plan(config: Config, max_bands: int, max_memory_gib: float) -> str:
    """One line stating the size, memory and rough time of the largest basis; raises ExactError if it would not fit."""
    cell, el = config.supercell_geometry, config.electrons
    need = -(-max(el.n_up, el.n_down) // cell.n_cells)
    if max_bands < need:
        raise ExactError(f"--bands {max_bands} holds {max_bands * cell.n_cells} orbitals per spin, fewer than the {max(el.n_up, el.n_down)} electrons; use --bands {need} or more")
    big = resources(cell, el.n_up, el.n_down, max_bands)
    gib = big.memory_bytes / 2**30
    if gib > max_memory_gib:
        raise ExactError(
            f"{el.n_up + el.n_down} electrons in {big.n_orbitals} orbitals ({max_bands} bands) need ≈{gib:.1f} GiB "
            f"({big.states:,} states per momentum sector), more than --max-memory {max_memory_gib:.1f} GiB; use fewer --bands"
        )
    sectors = (cell.n_cells + 2) // 2
    seconds = SECONDS_PER_PAIR_ENTRY * math.comb(el.n_up + el.n_down, 2) * big.states * sectors
    return (
        f"largest basis: {big.n_orbitals} orbitals ({max_bands} bands × {cell.n_cells} momenta), "
        f"{big.states:,} states per sector, ≈{gib:.2f} GiB, roughly {seconds / 60:.1f} min per depth"
    )


def _step_row(step: BandStep, config: Config) -> dict[str, Any]:
    e = config.material_units.energy_unit_meV / config.n_electrons
    cell = config.supercell_geometry
    g = step.ground
    return {
        "n_bands": step.n_bands,
        "n_orbitals": step.n_orbitals,
        "states": g.dimension,
        "energy_per_electron_meV": g.energy * e,
        "kinetic_per_electron_meV": g.kinetic * e,
        "moire_per_electron_meV": g.potential * e,
        "interaction_per_electron_meV": g.interaction * e,
        "momentum": [g.momentum // cell.L2, g.momentum % cell.L2],
        "determinant_per_electron_meV": step.determinant * e,
        "sector_energies_per_electron_meV": {f"{r.momentum // cell.L2},{r.momentum % cell.L2}": r.energy * e for r in step.sectors},
        "seconds": step.seconds,
    }


def _extrapolation_row(x: Extrapolation, config: Config) -> dict[str, Any]:
    e = config.material_units.energy_unit_meV / config.n_electrons
    return {
        "extrapolated_per_electron_meV": None if x.energy is None else x.energy * e,
        "extrapolation_error_meV": None if x.error is None else x.error * e,
        "extrapolation": x.note,
    }


def exact_energies(
    config: Config,
    depths_meV: list[float],
    max_bands: int,
    n_shells: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The JSON-ready result of ``qernel exact`` (energies per electron in meV)."""
    material = config.material_units
    strength = material.coulomb_strength if config.hamiltonian.coulomb else 0.0
    rows = []
    for V in depths_meV:
        system = FewElectrons(
            config.supercell_geometry, material.depth_to_moire(V), material.phi_deg, strength,
            config.electrons.n_up, config.electrons.n_down,
        )
        steps, extrapolation = sweep(
            system, max_bands, n_shells,
            progress=(lambda line, V=V: progress(f"V = {V:g} meV: {line}")) if progress else None,
        )
        last = _step_row(steps[-1], config)
        exact = _extrapolation_row(extrapolation, config)
        best = exact["extrapolated_per_electron_meV"]
        rows.append({
            "V_meV": float(V),
            "bands": [_step_row(s, config) for s in steps],
            "bound_per_electron_meV": last["energy_per_electron_meV"],
            **exact,
            "determinant_per_electron_meV": last["determinant_per_electron_meV"],
            "correlation_per_electron_meV": last["determinant_per_electron_meV"] - (last["energy_per_electron_meV"] if best is None else best),
        })
    return {
        "supercell": [config.supercell.L1, config.supercell.L2],
        "n_up": config.electrons.n_up,
        "n_down": config.electrons.n_down,
        "material": {
            "a_M_nm": config.material.a_M_nm, "m_star": config.material.m_star,
            "epsilon": config.material.epsilon, "phi_deg": config.material.phi_deg,
        },
        "coulomb_strength": strength,
        "energy_unit_meV": material.energy_unit_meV,
        "plane_wave_shells": n_shells,
        "depths": rows,
    }
