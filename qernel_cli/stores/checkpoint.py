"""Atomic, resumable checkpoints without pickle.

A checkpoint is one ``.npz`` file holding the leaves of a pytree (parameters,
optimiser state, walkers, RNG key, step) under their tree paths, plus a JSON
header. It is written to a temporary file in the same directory, flushed and
fsynced, then renamed over the old one, so a crash leaves either the previous
or the new checkpoint, never a torn file. Restoring needs a template pytree of
the same structure (built from the run's config); arrays are placed on the
default device, so a run can resume on a different device count.

Reading a header needs no JAX (it is imported by the functions that move
arrays): the command line checks a checkpoint before it loads the numerics.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from qernel_cli.stores.atomic import TMP_SUFFIX, replace_file
from qernel_cli.errors import QernelError, os_reason

FORMAT = "qernel-checkpoint/1"


class CheckpointError(QernelError):
    """A checkpoint is missing, corrupt or does not match the run's model."""


def _leaves_with_names(tree: Any) -> list[tuple[str, Any]]:
    import jax

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]


def save(path: Path, tree: Any, header: dict[str, Any]) -> None:
    """Atomically write ``tree`` (a pytree of arrays/scalars) and a JSON-able ``header`` to ``path``."""
    import jax

    path = Path(path)
    arrays = {f"leaf{i:05d}": np.asarray(jax.device_get(leaf)) for i, (_, leaf) in enumerate(_leaves_with_names(tree))}
    names = [name for name, _ in _leaves_with_names(tree)]
    meta = json.dumps({"format": FORMAT, "names": names, "header": header})
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.frombuffer(meta.encode(), dtype=np.uint8), **arrays)
    try:
        replace_file(path, buffer.getvalue())
    except OSError as error:
        kept = "the previous checkpoint is intact" if path.exists() else "no checkpoint was written"
        raise CheckpointError(f"cannot write checkpoint {path}: {os_reason(error)}; {kept}") from None


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed process left beside ``path``.

    Only the run's single writer calls this (on resume), so no live write is
    disturbed. Returns the files removed.
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f"{path.name}.*{TMP_SUFFIX}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def read_header(path: Path) -> dict[str, Any]:
    """The JSON header of a checkpoint."""
    return _load(path)[0]["header"]


def _load(path: Path) -> tuple[dict[str, Any], Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        meta = json.loads(bytes(data["__meta__"]).decode())
    except Exception as error:  # zipfile/ValueError/KeyError/JSON errors all mean "corrupt"
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({type(error).__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"checkpoint {path} has format {found!r}, expected {FORMAT!r} (written by another version of QERNEL?)")
    if not isinstance(meta.get("names"), list) or not isinstance(meta.get("header"), dict):
        raise CheckpointError(f"checkpoint {path} is corrupt (its metadata lacks the leaf names or the header)")
    return meta, data


def restore(path: Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Load a checkpoint into the structure of ``template``; returns (tree, header)."""
    import jax

    meta, data = _load(path)
    expected = _leaves_with_names(template)
    if [name for name, _ in expected] != meta["names"]:
        raise CheckpointError(f"checkpoint {path} does not match this model/config (different parameter structure)")
    leaves = []
    for i, (name, like) in enumerate(expected):
        try:
            value = data[f"leaf{i:05d}"]
        except Exception as error:  # a damaged archive member (bad CRC, truncated) or a missing one
            raise CheckpointError(f"checkpoint {path} is corrupt: cannot read {name} ({type(error).__name__})") from None
        like_shape = np.shape(like)
        if value.shape != like_shape:
            raise CheckpointError(f"checkpoint {path}: {name} has shape {value.shape}, the model expects {like_shape}")
        leaves.append(jax.numpy.asarray(value) if isinstance(like, jax.Array) else value)
    treedef = jax.tree_util.tree_structure(template)
    return jax.tree_util.tree_unflatten(treedef, leaves), meta["header"]
