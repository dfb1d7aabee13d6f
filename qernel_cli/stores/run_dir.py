"""The run directory of ``qernel train``: its files, its creation, and the checks made before anything is computed.

A run directory holds

* ``config.toml``: the resolved configuration (written atomically, once);
* ``checkpoint.npz``: parameters, optimiser state, walkers, RNG key, step
  (atomic, every ``training.checkpoint_minutes``, on Ctrl-C and at the end);
* ``train.zarr``: one row per optimisation step (``qernel_cli.stores.train.TRAIN_VARIABLES``).

Nothing here imports JAX: the command line refuses a directory it cannot use
(not a run, no checkpoint, a damaged checkpoint or config, a new run over an
old one) in well under a second, before the numerics are loaded.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from qernel_cli.stores import checkpoint, store
from qernel_cli.stores.atomic import replace_file
from qernel_cli.config import Config, from_dict, read_toml
from qernel_cli.errors import QernelError, os_reason

CONFIG_FILE = "config.toml"
CHECKPOINT_FILE = "checkpoint.npz"
TRAIN_STORE = "train.zarr"


class RunError(QernelError):
    """A run directory that cannot be used as asked."""


def stored_config(run_dir: Path, steps: int | None = None) -> Config:
    """The run's stored config (with ``training.steps = steps`` if given), read without writing anything."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(f"{run_dir} is not a QERNEL run directory (no {CONFIG_FILE})")
    data = read_toml(run_dir / CONFIG_FILE)
    # Runs stored before model.envelope_interpolation existed interpolated their envelopes linearly.
    if isinstance(data.get("model"), dict) and "envelope_interpolation" not in data["model"]:
        data["model"]["envelope_interpolation"] = "linear"
    # Runs stored before model.envelope_momenta existed kept each orbital's Bloch momentum.
    if isinstance(data.get("model"), dict) and "envelope_momenta" not in data["model"]:
        data["model"]["envelope_momenta"] = "fixed"
    stored = from_dict(data)
    if steps is not None:
        stored = dataclasses.replace(stored, training=dataclasses.replace(stored.training, steps=steps))
    return stored


def check_new(out_dir: Path, *, force: bool) -> None:
    """Refuse to start a new run in ``out_dir`` if that would overwrite anything but a QERNEL run given ``force`` (reads only)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not force:
            raise RunError(f"{out_dir} already exists and is not empty; use --resume to continue it or --force to overwrite")
        if not (out_dir / CONFIG_FILE).is_file():
            raise RunError(f"refusing to --force over {out_dir}: it is not a QERNEL run directory (no {CONFIG_FILE})")


def check_resumable(out_dir: Path, steps: int | None = None) -> Config:
    """The config to resume ``out_dir`` with; refuses a checkpoint that does not load, or one lost after steps were stored (reads only).

    Without a checkpoint the run was stopped before its first one and starts
    over, unless ``train.zarr`` already holds optimisation steps.
    """
    out_dir = Path(out_dir)
    if not (out_dir / CONFIG_FILE).is_file():
        raise RunError(f"cannot resume: {out_dir} is not a QERNEL run directory (no {CONFIG_FILE})")
    config = stored_config(out_dir, steps)
    ckpt = out_dir / CHECKPOINT_FILE
    if ckpt.exists():
        checkpoint.read_header(ckpt)
        return config
    try:
        stored = store.dimension_length(store.open_existing(out_dir / TRAIN_STORE), "step")
    except Exception:  # noqa: BLE001
        stored = 0  # no store, or one cut short while being created: nothing to resume from
    if stored:
        raise RunError(
            f"cannot resume: {ckpt} is missing but {out_dir / TRAIN_STORE} holds {stored} steps; "
            "restore the checkpoint, or start a new run (--force deletes this one)"
        )
    return config


def check_trained(run_dir: Path) -> Config:
    """The config of a run that has a readable checkpoint to sample from (reads only)."""
    run_dir = Path(run_dir)
    config = stored_config(run_dir)
    if not (run_dir / CHECKPOINT_FILE).is_file():
        raise RunError(f"{run_dir} has no checkpoint yet (train it first, or --resume an interrupted run)")
    checkpoint.read_header(run_dir / CHECKPOINT_FILE)
    return config


def prepare(out_dir: Path, config: Config | None, *, resume: bool, force: bool, steps: int | None = None) -> Config:
    """Create (or reopen with ``resume``) a run directory; returns the config to use.

    On resume the stored config is used (``steps`` may extend the run) and the
    temporary files of checkpoint writes cut short by a killed process are
    removed. Never deletes data unless ``force`` is given, and even then only a
    directory that is a QERNEL run (has config.toml).
    """
    out_dir = Path(out_dir)
    if resume:
        config = check_resumable(out_dir, steps)
        checkpoint.remove_stale_temporaries(out_dir / CHECKPOINT_FILE)
        return config
    if config is None:
        raise RunError("a config (preset) is needed to start a new run")
    check_new(out_dir, force=force)
    create(out_dir, CONFIG_FILE, config.to_toml())
    return config


def create(out_dir: Path, name: str, text: str) -> None:
    """Empty ``out_dir`` (a run the caller's check allowed to be overwritten), create it and write ``text`` to its file ``name`` atomically."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        shutil.rmtree(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot write run directory {out_dir}: {os_reason(error)}") from None
    atomic_write(out_dir / name, text)


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic.replace_file``): readers see the old file or the whole new one."""
    try:
        replace_file(path, text.encode("utf-8"))
    except OSError as error:
        raise RunError(f"cannot write {path}: {os_reason(error)}") from None
