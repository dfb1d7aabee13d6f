"""Zarr stores with named dimensions and units (open with ``xarray.open_zarr``).

Each array carries ``dimension_names`` and a ``units`` attribute; the group
carries provenance (qernel/jax/equinox/folx versions, device, config). Rows
are appended one training step at a time; on resume a store is truncated to
the checkpoint's step count, so steps are neither lost nor duplicated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from qernel_cli.errors import QernelError

STORE_FORMAT = "qernel-store/1"


class StoreError(QernelError):
    """A store is missing, corrupt, or was written by an incompatible version."""


@dataclasses.dataclass(frozen=True)
class Variable:
    """One stored quantity: dimensions (first is the growing one), dtype, units, description."""

    dims: tuple[str, ...]
    dtype: str
    units: str
    description: str


def provenance() -> dict[str, Any]:
    """Versions and device, recorded in every store for reproducibility."""
    import equinox
    import folx
    import jax

    from qernel_cli import __version__

    return {
        "qernel_version": __version__,
        "jax_version": jax.__version__,
        "equinox_version": equinox.__version__,
        "folx_version": getattr(folx, "__version__", "unknown"),
        "zarr_version": zarr.__version__,
        "python_version": platform.python_version(),
        "device": str(jax.devices()[0].device_kind),
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
    }


def create(path: Path, variables: dict[str, Variable], sizes: dict[str, int], attrs: dict[str, Any]) -> zarr.Group:
    """Create a new store with empty (length-0 along the first dimension) arrays."""
    group = zarr.open_group(str(path), mode="w-")
    group.attrs.update({"format": STORE_FORMAT, **provenance(), **attrs})
    for name, var in variables.items():
        _create_array(group, name, var, sizes, 0)
    return group


def _create_array(group: zarr.Group, name: str, var: Variable, sizes: dict[str, int], length: int) -> None:
    """An array of ``length`` fill values (NaN for floats, 0 otherwise) along its growing dimension."""
    shape = (length, *(sizes[d] for d in var.dims[1:]))
    fill = np.nan if np.dtype(var.dtype).kind == "f" else 0
    array = group.create_array(
        name, shape=shape, chunks=(256, *shape[1:]), dtype=var.dtype, dimension_names=var.dims, fill_value=fill
    )
    array.attrs.update({"units": var.units, "description": var.description})


def add_missing(group: zarr.Group, variables: dict[str, Variable], sizes: dict[str, int], length: int) -> list[str]:
    """Add the variables a store written by an older version lacks, as ``length`` fill values; returns their names."""
    missing = [name for name in variables if name not in group]
    for name in missing:
        _create_array(group, name, variables[name], sizes, length)
    return missing


def open_existing(path: Path, mode: str = "r") -> zarr.Group:
    """Open a store written by QERNEL, with a one-line error if it is missing or foreign."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"store not found: {path}")
    try:
        group = zarr.open_group(str(path), mode=mode)
        fmt = group.attrs.get("format")
    except Exception as error:
        raise StoreError(f"cannot open store {path}: {type(error).__name__}: {error}".splitlines()[0]) from None
    if fmt != STORE_FORMAT:
        raise StoreError(f"{path} is not a QERNEL store of format {STORE_FORMAT!r} (found {fmt!r})")
    return group


def length(group: zarr.Group, name: str) -> int:
    return int(group[name].shape[0])


def dimension_length(group: zarr.Group, dim: str) -> int:
    """Shortest length of the arrays that grow along ``dim`` (a torn append leaves some one row longer)."""
    lengths = [array.shape[0] for _, array in group.arrays() if _growing_dim(array) == dim]
    return int(min(lengths)) if lengths else 0


def _growing_dim(array: zarr.Array) -> str | None:
    names = array.metadata.dimension_names
    return names[0] if names else None


def append(group: zarr.Group, rows: dict[str, Any]) -> None:
    """Append one row to each named array (the growing first dimension)."""
    for name, value in rows.items():
        array = group[name]
        value = np.asarray(value, dtype=array.dtype)
        array.append(value[None, ...], axis=0)


def truncate(group: zarr.Group, n: int, dim: str) -> None:
    """Cut every array that grows along ``dim`` to its first ``n`` rows (used on resume)."""
    for _, array in group.arrays():
        if _growing_dim(array) == dim and array.shape[0] > n:
            array.resize((n, *array.shape[1:]))


def append_rows(group: zarr.Group, rows: list[dict[str, Any]]) -> None:
    """Append several rows at once (one resize per array; cheaper than row by row)."""
    if not rows:
        return
    for name in rows[0]:
        array = group[name]
        block = np.stack([np.asarray(row[name], dtype=array.dtype) for row in rows])
        array.append(block, axis=0)


def repair(group: zarr.Group, dim: str) -> int:
    """Cut a torn append (arrays of unequal length along ``dim``) back to the common length; returns it."""
    n = dimension_length(group, dim)
    truncate(group, n, dim)
    return n


LOCK_SUFFIX = ".lock"


class StoreLocked(StoreError):
    """Another live process is writing the store."""


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Exclusive writer lock on a store (a lock file ``STORE.lock`` beside it holding the writer's pid).

    A lock left behind by a process that no longer exists is taken over; a
    live writer makes this raise :class:`StoreLocked` instead of letting two
    writers corrupt the store.
    """
    path = Path(path)
    lock = path.with_name(path.name + LOCK_SUFFIX)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise StoreLocked(f"store {path} is being written by another process (pid {pid}); wait for it to finish") from None
            lock.unlink(missing_ok=True)  # stale lock of a dead writer
            continue
        except OSError as error:
            raise StoreError(f"cannot write to store {path}: {error.strerror or error}") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    else:
        raise StoreLocked(f"store {path} is locked ({lock}); remove the lock file if no qernel process is running")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
