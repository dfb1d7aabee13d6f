"""Zarr stores with named dimensions and units (open with ``xarray.open_zarr``).

Each array carries ``dimension_names`` and a ``units`` attribute; the group
carries provenance (qernel/jax/equinox/folx versions, device, config). Rows
are appended one training step at a time; on resume a store is truncated to
the checkpoint's step count, so steps are neither lost nor duplicated.

Every change made through this module (create, append, truncate, attributes)
ends by consolidating the group's metadata, so readers (``xarray.open_zarr``)
open a store with one read and see the shapes of the last complete write.
Training appends a row per step without it (consolidating costs tens of ms)
and consolidates every 10 s and at every checkpoint instead. QERNEL itself always reads the
live metadata of each array (``use_consolidated=False``), never the
consolidated copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from qernel_cli.errors import QernelError, os_reason

STORE_FORMAT = "qernel-store/1"


class StoreError(QernelError):
    """A store is missing, corrupt, or was written by an incompatible version.

    ``reason``: the cause alone (e.g. "disk full"), for callers that name the
    store themselves; the whole message unless given.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = message if reason is None else reason


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
    try:
        group = zarr.open_group(str(path), mode="w-")
        group.attrs.update({"format": STORE_FORMAT, **provenance(), **attrs})
        for name, var in variables.items():
            _create_array(group, name, var, sizes, 0)
        consolidate(group)
    except OSError as error:
        raise StoreError(f"cannot create store {path}: {os_reason(error)}", reason=os_reason(error)) from None
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
    if missing:
        consolidate(group)
    return missing


def consolidate(group: zarr.Group | Path) -> None:
    """Write the consolidated metadata of a group or of the store at a path (every array's shape and attributes in its ``zarr.json``).

    Raises OSError if the file system refuses (callers of this module's writers get a :class:`StoreError`).
    """
    with warnings.catch_warnings():  # zarr notes that format 3 has no consolidated metadata yet; zarr and xarray read it
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
        if isinstance(group, zarr.Group):
            zarr.consolidate_metadata(group.store, path=group.path or None)
        else:
            zarr.consolidate_metadata(str(group))


def checkpoint(group: zarr.Group) -> None:
    """Consolidate after appends made with ``consolidated=False`` (one-line :class:`StoreError` if refused)."""
    try:
        consolidate(group)
    except OSError as error:
        raise _write_error(group, error) from None


def set_attrs(group: zarr.Group, attrs: dict[str, Any]) -> None:
    """Update group attributes and re-consolidate (one-line :class:`StoreError` if the file system refuses)."""
    try:
        group.attrs.update(attrs)
        consolidate(group)
    except OSError as error:
        raise _write_error(group, error) from None


def open_existing(path: Path, mode: str = "r") -> zarr.Group:
    """Open a store written by QERNEL, with a one-line error if it is missing or foreign."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"store not found: {path}")
    try:
        group = zarr.open_group(str(path), mode=mode, use_consolidated=False)
        fmt = group.attrs.get("format")
    except OSError as error:
        raise StoreError(f"cannot open store {path}: {os_reason(error)}") from None
    except Exception as error:
        raise StoreError(f"cannot open store {path} (damaged or not a zarr store): {type(error).__name__}: {error}".splitlines()[0]) from None
    if fmt != STORE_FORMAT:
        if isinstance(fmt, str) and fmt.startswith(STORE_FORMAT.split("/")[0] + "/"):
            from qernel_cli import __version__

            raise StoreError(
                f"{path} was written by another version of QERNEL ({group.attrs.get('qernel_version', 'unknown')}, "
                f"format {fmt!r}); qernel {__version__} reads format {STORE_FORMAT!r}"
            )
        raise StoreError(f"{path} is not a QERNEL store of format {STORE_FORMAT!r} (found {fmt!r})")
    if mode != "r":
        discard_partial_writes(path)
    return group


_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def discard_partial_writes(path: Path) -> list[Path]:
    """Delete the temporary files of writes that a killed process left inside a store.

    zarr writes every file to ``NAME.<uuid>.partial`` and renames it into place;
    a process killed in between leaves the ``.partial`` file, which readers
    then warn about. Only the store's single writer calls this.
    """
    stale = [Path(root) / name for root, _, files in os.walk(path) for name in files if _PARTIAL.search(name)]
    for file in stale:
        file.unlink(missing_ok=True)
    return stale


def location(group: zarr.Group) -> str:
    """The file-system path of a store's group (for messages)."""
    root = getattr(group.store, "root", None)
    return str(Path(root) / group.path) if root is not None else str(group.store_path)


def _write_error(group: zarr.Group, error: OSError) -> StoreError:
    return StoreError(f"cannot write to store {location(group)}: {os_reason(error)}", reason=os_reason(error))


def check_intact(group: zarr.Group, dim: str, complete: tuple[str, ...] = ()) -> None:
    """Refuse a store whose arrays along ``dim`` lost chunks or hold unreadable ones (before appending to it).

    The arrays named in ``complete`` never hold a whole chunk of fill values,
    so each of their chunks was written and a missing one was deleted. The
    last chunk of every array is decoded, since an append rewrites it.
    """
    where = location(group)
    try:
        arrays = list(group.arrays())
    except Exception as error:  # a member's metadata does not parse
        raise StoreError(f"store {where} is damaged: cannot read the metadata of its arrays ({type(error).__name__})") from None
    for name, array in arrays:
        if _growing_dim(array) != dim or array.shape[0] == 0:
            continue
        try:
            if name in complete and array.nchunks_initialized < array.nchunks:
                raise StoreError(
                    f"store {where} is damaged: {name} lacks {array.nchunks - array.nchunks_initialized} "
                    f"of its {array.nchunks} chunks (files deleted?); write to a new store"
                )
            n = array.shape[0]
            array[(n - 1) // array.chunks[0] * array.chunks[0] : n]
        except StoreError:
            raise
        except Exception as error:  # a chunk that does not decode (truncated or overwritten file)
            raise StoreError(f"store {where} is damaged: cannot read {name} ({type(error).__name__}: {error})".splitlines()[0]) from None


def length(group: zarr.Group, name: str) -> int:
    return int(group[name].shape[0])


def dimension_length(group: zarr.Group, dim: str) -> int:
    """Shortest length of the arrays that grow along ``dim`` (a torn append leaves some one row longer)."""
    lengths = [array.shape[0] for _, array in group.arrays() if _growing_dim(array) == dim]
    return int(min(lengths)) if lengths else 0


def _growing_dim(array: zarr.Array) -> str | None:
    names = array.metadata.dimension_names
    return names[0] if names else None


def append(group: zarr.Group, rows: dict[str, Any], consolidated: bool = True) -> None:
    """Append one row to each named array (the growing first dimension); see :func:`append_rows`."""
    append_rows(group, [rows], consolidated)


def truncate(group: zarr.Group, n: int, dim: str) -> None:
    """Cut every array that grows along ``dim`` to its first ``n`` rows (used on resume)."""
    try:
        for _, array in group.arrays():
            if _growing_dim(array) == dim and array.shape[0] > n:
                array.resize((n, *array.shape[1:]))
        consolidate(group)
    except OSError as error:
        raise _write_error(group, error) from None


def append_rows(group: zarr.Group, rows: list[dict[str, Any]], consolidated: bool = True) -> None:
    """Append several rows at once (one resize per array; cheaper than row by row).

    With ``consolidated=False`` the consolidated metadata keeps the earlier
    shapes until the caller's next :func:`checkpoint`.

    If the file system refuses a write (disk full, read-only), the arrays
    grown so far are cut back (as far as the file system still allows) and a
    one-line :class:`StoreError` is raised; earlier rows are never touched.
    """
    if not rows:
        return
    grown: list[tuple[zarr.Array, int]] = []
    try:
        for name in rows[0]:
            array = group[name]
            block = np.stack([np.asarray(row[name], dtype=array.dtype) for row in rows])
            grown.append((array, array.shape[0]))
            array.append(block, axis=0)
        if consolidated:
            consolidate(group)
    except OSError as error:
        for array, n in grown:
            with contextlib.suppress(Exception):
                if array.shape[0] > n:
                    array.resize((n, *array.shape[1:]))
        raise _write_error(group, error) from None


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
    writers corrupt the store. The lock file appears with its pid already in
    it (written beside it, then hard-linked into place), so another process
    never reads a half-made lock.
    """
    path = Path(path)
    lock = path.with_name(path.name + LOCK_SUFFIX)
    for _ in range(2):
        try:
            if _create_lock(lock):
                break
        except OSError as error:
            raise StoreError(f"cannot write to store {path}: {os_reason(error)}") from None
        pid = lock_owner(path)
        if pid:
            raise StoreLocked(f"store {path} is being written by another process (pid {pid}); wait for it to finish") from None
        lock.unlink(missing_ok=True)  # stale lock of a dead writer
    else:
        raise StoreLocked(f"store {path} is locked ({lock}); remove the lock file if no qernel process is running")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _create_lock(lock: Path) -> bool:
    """Atomically create ``lock`` holding this process's pid; False if it exists."""
    tmp = lock.with_name(f"{lock.name}.{os.getpid()}.tmp")
    tmp.write_text(str(os.getpid()))
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def lock_owner(path: Path) -> int | None:
    """The pid of the live process that holds the writer lock of store ``path``, else None."""
    lock = Path(path).with_name(Path(path).name + LOCK_SUFFIX)
    try:
        pid = int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return None
    return pid if pid and _alive(pid) else None


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
