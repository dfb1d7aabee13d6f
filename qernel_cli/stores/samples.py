"""The sample store written by ``qernel sample``: walker positions and local energies per depth.

Layout (growing dimension ``record``; one record = all walkers at one depth
after ``sweeps`` Metropolis sweeps):

=================  ===============================  ======  ====================================
array              dimensions                       units   meaning
=================  ===============================  ======  ====================================
depth              (record,)                        meV     moiré depth V of the record
session            (record,)                        1       which ``qernel sample`` call wrote it
sweep              (record,)                        1       Metropolis sweeps since recording began
acceptance         (record,)                        1       Metropolis acceptance of those sweeps
positions          (record, walker, electron, xy)   a_M     electron positions (wrapped in the supercell)
energy             (record, walker)                 meV     local energy per electron
kinetic            (record, walker)                 meV     kinetic local energy per electron (real part)
kinetic_imag       (record, walker)                 meV     imaginary part of the kinetic local energy
potential          (record, walker)                 meV     moiré potential energy per electron
interaction        (record, walker)                 meV     Coulomb (Ewald) energy per electron
=================  ===============================  ======  ====================================

Appending (a new session at the same or other depths) never rewrites earlier
records; a torn append (process killed mid-write) is cut back to the last
complete record when the store is next opened for writing. One writer at a
time (lock file); the walker count is fixed by the first session.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import zarr

from qernel_cli.stores import store
from qernel_cli.errors import os_reason

V = store.Variable
SAMPLE_VARIABLES = {
    "depth": V(("record",), "float64", "meV", "moiré depth V of the record"),
    "session": V(("record",), "int64", "1", "index of the `qernel sample` call that wrote the record"),
    "sweep": V(("record",), "int64", "1", "Metropolis sweeps since recording began (per session and depth)"),
    "acceptance": V(("record",), "float64", "1", "Metropolis acceptance rate of the sweeps before the record"),
    "positions": V(("record", "walker", "electron", "xy"), "float64", "a_M", "electron positions, Cartesian, wrapped into the supercell"),
    "energy": V(("record", "walker"), "float64", "meV", "local energy per electron"),
    "kinetic": V(("record", "walker"), "float64", "meV", "kinetic local energy per electron (real part)"),
    "kinetic_imag": V(("record", "walker"), "float64", "meV", "imaginary part of the kinetic local energy per electron (averages to 0)"),
    "potential": V(("record", "walker"), "float64", "meV", "moiré potential energy per electron"),
    "interaction": V(("record", "walker"), "float64", "meV", "Coulomb (Ewald) interaction energy per electron"),
}
KIND = "samples"
COMPLETE = ("depth", "acceptance", "positions", "energy")
"""Arrays that never hold a chunk of only fill values (NaN): a missing chunk of theirs was deleted."""


class SampleStoreError(store.StoreError):
    """The sample store cannot be used as asked."""


@contextlib.contextmanager
def open_for_append(path: Path, walkers: int, n_electrons: int, attrs: dict[str, Any]) -> Iterator[tuple[zarr.Group, int]]:
    """Create or reopen (locked, repaired) a sample store; yields the group and the new session index.

    The writer lock is taken first, so a second writer is refused before it
    reads or creates anything. An existing store must come from the same run
    (same config), use the same number of walkers and electrons, and be intact;
    a new store that cannot be created completely is removed again.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SampleStoreError(f"cannot create store {path}: {os_reason(error)}") from None
    with store.write_lock(path):
        if path.exists():
            check_appendable(path, walkers, n_electrons, attrs)
            group = store.open_existing(path, mode="a")
            store.repair(group, "record")
            sessions = group["session"][:]
            yield group, int(sessions.max()) + 1 if sessions.size else 0
            return
        sizes = {"walker": walkers, "electron": n_electrons, "xy": 2}
        try:
            group = store.create(path, SAMPLE_VARIABLES, sizes, {"kind": KIND, **attrs})
        except store.StoreError:
            shutil.rmtree(path, ignore_errors=True)  # ours, created just now under the lock: nothing to keep
            raise
        except Exception as error:  # zarr's ContainsGroupError etc.
            raise SampleStoreError(f"cannot create store {path}: {type(error).__name__}: {error}".splitlines()[0]) from None
        yield group, 0


def check_appendable(path: Path, walkers: int, n_electrons: int, attrs: dict[str, Any]) -> None:
    """Refuse (one line) to append to an existing store that is foreign, damaged or of another run or shape.

    Reads only; cheap enough to call before building the model.
    """
    group = store.open_existing(path, mode="r")
    if group.attrs.get("kind") != KIND:
        raise SampleStoreError(f"{path} is a QERNEL {group.attrs.get('kind')!r} store, not a sample store")
    _check_variables(group, path)
    if group.attrs.get("config_toml") != attrs["config_toml"]:
        raise SampleStoreError(f"{path} holds samples of a different run/config; write to a new store")
    shape = group["positions"].shape
    if (shape[1], shape[2]) != (walkers, n_electrons):
        raise SampleStoreError(f"{path} holds {shape[1]} walkers of {shape[2]} electrons; use --walkers {shape[1]} or a new store")
    store.check_intact(group, "record", complete=COMPLETE)


def _check_variables(group: zarr.Group, path: Path) -> None:
    missing = []
    for name in SAMPLE_VARIABLES:
        try:
            node = group[name]
        except KeyError:
            node = None
        except Exception as error:  # metadata that does not parse (truncated or overwritten zarr.json)
            raise SampleStoreError(f"sample store {path} is damaged: cannot read the metadata of {name} ({type(error).__name__})") from None
        if not isinstance(node, zarr.Array):
            missing.append(name)
    if missing:
        raise SampleStoreError(f"sample store {path} is damaged: missing {', '.join(missing)}")


def read(group: zarr.Group, name: str, selection: tuple | None = None) -> np.ndarray:
    """Read an array of a sample store (orthogonal ``selection``, default all); a damaged chunk is a one-line error."""
    try:
        array = group[name]
        return np.asarray(array[...] if selection is None else array.get_orthogonal_selection(selection))
    except Exception as error:  # undecodable chunk (truncated or overwritten file), unreadable file
        raise SampleStoreError(
            f"sample store {store.location(group)} is damaged: cannot read {name} ({type(error).__name__}: {error})".splitlines()[0]
        ) from None


def open_samples(path: Path) -> zarr.Group:
    """Open a sample store for reading (one-line errors for missing, foreign or empty stores)."""
    group = store.open_existing(path, mode="r")
    if group.attrs.get("kind") != KIND:
        raise SampleStoreError(f"{path} is a QERNEL {group.attrs.get('kind')!r} store, not a sample store (written by `qernel sample`)")
    _check_variables(group, path)
    if store.dimension_length(group, "record") == 0:
        raise SampleStoreError(f"sample store {path} holds no records yet")
    return group


def record_rows(record: dict[str, np.ndarray], depths_meV: np.ndarray, session: int, sweep: int, unit: float, n_el: int) -> list[dict[str, np.ndarray]]:
    """Split one sampling snapshot (all depths) into store rows (one per depth), energies per electron in meV."""
    rows = []
    for d, v in enumerate(depths_meV):
        rows.append({
            "depth": v,
            "session": session,
            "sweep": sweep,
            "acceptance": record["acceptance"][d],
            "positions": record["positions"][d],
            "energy": record["total"][d] * unit / n_el,
            "kinetic": record["kinetic"][d] * unit / n_el,
            "kinetic_imag": record["kinetic_imag"][d] * unit / n_el,
            "potential": record["potential"][d] * unit / n_el,
            "interaction": record["interaction"][d] * unit / n_el,
        })
    return rows
