"""The observables store: one record per depth (:class:`DepthObservables`) and its zarr layout, written atomically."""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from qernel_cli.errors import os_reason
from qernel_cli.lattice import Supercell
from qernel_cli.observables.blocking import ChainAverage
from qernel_cli.observables.sites import random_site_order
from qernel_cli.stores import store


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

    def store_row(self) -> dict[str, Any]:
        """The row of the observables store: one value per variable of :data:`OBSERVABLE_VARIABLES` but q, q_norm, r."""
        nan = float("nan")
        return {
            "depth": self.depth, "records": self.records, "walkers": self.walkers, "acceptance": self.acceptance,
            **{f"{name}{suffix}": getattr(value, field) for name, value in self.energies.items() for suffix, field in ENERGY_FIELDS},
            "density": self.density, "density_error": self.density_error, "density_cell": self.density_cell, "density_aligned": self.density_aligned,
            "structure_factor": self.structure.value, "structure_factor_error": self.structure.error,
            "structure_factor_connected": self.structure.connected,
            "pair_correlation": self.pair.g, "pair_correlation_error": self.pair.error,
            "order_parameter": self.order.value if self.order else nan, "order_parameter_error": self.order.error if self.order else nan,
            "site_order": self.site_order.value if self.site_order else nan,
            "site_order_error": self.site_order.error if self.site_order else nan,
        }

    def summary(self) -> dict[str, Any]:
        """The scalars as JSON (``observe --json``, ``phasediagram.json``): the store's names, the unit in the key.

        ``V_meV``, ``records``, ``walkers``, ``acceptance``; for each of energy,
        kinetic, potential and interaction (meV per electron): ``{name}_meV``,
        ``{name}_error_meV``, ``{name}_tau_records`` (null where too few
        records to measure τ) and ``{name}_converged``; ``order_parameter``,
        ``site_order`` and their ``_error`` (null where not defined).
        """
        row: dict[str, Any] = {"V_meV": self.depth, "records": self.records, "walkers": self.walkers, "acceptance": self.acceptance}
        for name, value in self.energies.items():
            row[f"{name}_meV"] = value.mean
            row[f"{name}_error_meV"] = value.error
            row[f"{name}_tau_records"] = None if math.isnan(value.tau) else value.tau
            row[f"{name}_converged"] = bool(value.converged)
        for name, estimate in (("order_parameter", self.order), ("site_order", self.site_order)):
            row[name] = estimate.value if estimate else None
            row[f"{name}_error"] = estimate.error if estimate else None
        return row


ENERGY_FIELDS = (("", "mean"), ("_error", "error"), ("_tau", "tau"), ("_converged", "converged"))
"""Store-variable suffix and :class:`ChainAverage` field of each energy column."""


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
            ("_tau", "record", ": integrated autocorrelation time (1 for independent records; NaN where the records are too few to measure it)"),
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
        store.append_rows(group, [r.store_row() for r in results])
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
