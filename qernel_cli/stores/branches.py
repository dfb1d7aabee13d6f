"""A two-branch run directory: the same model trained from the liquid and from the crystal start.

With ``pretrain.target = "both"`` ``qernel train`` trains two runs of one
config, differing only in their start (the branch protocol of
docs/training.md): the liquid branch pre-trained on the non-interacting Bloch
determinant, the crystal branch on the classical Wigner crystal. Which of the
two is lower at a depth is measured, not assumed. The directory holds

* ``branches.toml``: the resolved config with ``pretrain.target = "both"``
  (written atomically, once; it marks the directory as a two-branch run);
* ``liquid/`` and ``crystal/``: ordinary run directories
  (:mod:`qernel_cli.stores.run_dir`), each with its own config, checkpoint
  and ``train.zarr``.

Nothing here imports JAX.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qernel_cli.config import Config, from_dict, read_toml
from qernel_cli.errors import os_reason
from qernel_cli.stores import run_dir
from qernel_cli.stores.run_dir import RunError

MANIFEST_FILE = "branches.toml"
BRANCHES: dict[str, str] = {"liquid": "bloch", "crystal": "crystal"}
"""Branch name → the pre-training target it starts from."""


def is_branched(path: Path) -> bool:
    """Whether ``path`` is a two-branch run directory (has ``branches.toml``)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def is_branched_config(config: Config) -> bool:
    """Whether ``config`` asks for the two-branch protocol."""
    return config.pretrain.target == "both"


def branch_config(config: Config, name: str) -> Config:
    """The config of branch ``name``: ``config`` started from that branch's pre-training target."""
    return dataclasses.replace(config, pretrain=dataclasses.replace(config.pretrain, target=BRANCHES[name]))


def branch_dirs(path: Path) -> dict[str, Path]:
    """The run directory of every branch, in the order liquid, crystal."""
    return {name: Path(path) / name for name in BRANCHES}


def stored_manifest(path: Path) -> Config:
    """The two-branch run's config (``pretrain.target = "both"``), read without writing anything."""
    try:
        return from_dict(read_toml(Path(path) / MANIFEST_FILE))
    except OSError as error:
        raise RunError(f"cannot read {Path(path) / MANIFEST_FILE}: {os_reason(error)}") from None


def check_new(out_dir: Path, *, force: bool) -> None:
    """Refuse a new two-branch run over anything but an empty directory, a QERNEL run or a two-branch run (with ``force``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        if not force:
            raise RunError(f"{out_dir} already exists and is not empty; use --resume to continue it or --force to overwrite")
        if not (is_branched(out_dir) or (out_dir / run_dir.CONFIG_FILE).is_file()):
            raise RunError(f"refusing to --force over {out_dir}: it is not a QERNEL run directory (no {MANIFEST_FILE} or {run_dir.CONFIG_FILE})")


def check_resumable(out_dir: Path, steps: int | None = None) -> Config:
    """The two-branch config to resume ``out_dir`` with; every branch already begun must be resumable (reads only)."""
    config = stored_manifest(out_dir)
    for path in branch_dirs(out_dir).values():
        if (path / run_dir.CONFIG_FILE).is_file():
            run_dir.check_resumable(path, steps)
    if steps is not None:
        config = dataclasses.replace(config, training=dataclasses.replace(config.training, steps=steps))
    return config


def check_trained(path: Path) -> Config:
    """The two-branch config of a run whose branches both have a readable checkpoint (reads only)."""
    config = stored_manifest(path)
    for name, branch in branch_dirs(path).items():
        if not (branch / run_dir.CONFIG_FILE).is_file():
            raise RunError(f"branch {name} of {path} has not started yet (continue with `qernel train --resume --out {path}`)")
        run_dir.check_trained(branch)
    return config


def check_joinable(out_dir: Path, config: Config, branch: str) -> bool:
    """Whether a new ``branch`` can join the two-branch run in ``out_dir`` (same config, branch not begun); refuses otherwise (reads only).

    False when ``out_dir`` is not a two-branch run (then it is created as a new one).
    """
    out_dir = Path(out_dir)
    if not is_branched(out_dir):
        return False
    if (out_dir / MANIFEST_FILE).read_text() != config.to_toml():
        raise RunError(f"{out_dir} holds a two-branch run of another config; use another --out, or --resume it")
    if (branch_dirs(out_dir)[branch] / run_dir.CONFIG_FILE).is_file():
        raise RunError(f"branch {branch} of {out_dir} has begun; continue it with --resume --branch {branch}")
    return True


def prepare(
    out_dir: Path, config: Config | None, *, resume: bool, force: bool, steps: int | None = None, branch: str | None = None
) -> Config:
    """Create (or reopen with ``resume``) a two-branch run directory; returns its config (``pretrain.target = "both"``).

    With ``branch`` a new run may join an existing two-branch run of the same
    config whose ``branch`` has not begun (the branches trained at once, in two processes).
    """
    out_dir = Path(out_dir)
    if resume:
        return check_resumable(out_dir, steps)
    if config is None or not is_branched_config(config):
        raise RunError('a two-branch run needs a config with pretrain.target = "both"')
    if branch is not None and not force and check_joinable(out_dir, config, branch):
        return config
    check_new(out_dir, force=force)
    run_dir.create(out_dir, MANIFEST_FILE, config.to_toml())
    return config
