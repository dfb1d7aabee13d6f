"""Devices, processes and where the walkers live (data parallelism).

QERNEL parallelises over walkers: a 1-D device mesh with axis ``"walkers"``
holds an equal share of every walker group on each device; parameters,
optimiser state, RNG key and all statistics are replicated. The VMC step runs
under ``jax.shard_map`` with explicit collectives (see ``vmc.step``); the
lighter phases of training (pre-training, burn-in, evaluation) are plain
``jit`` functions of the same sharded arrays, partitioned by XLA. ``qernel
sample`` runs on one device.

The same code runs on one device, on several local devices (GPUs, or CPU
devices made with ``--devices N``) and on several processes
(``jax.distributed``): arrays are then global, every process runs the same
program, only process 0 writes files, and host-side decisions (stop, write a
checkpoint) are agreed between processes.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from qernel_cli.processes import Distributed, ParallelError

AXIS = "walkers"
"""Name of the mesh axis over which walkers are split."""


def initialize(distributed: Distributed, *, auto: bool = False) -> None:
    """Join the multi-process run described by ``distributed`` (or, with ``auto``, by the cluster's environment).

    Must be called before the first JAX computation. On CPU, cross-process
    collectives use gloo.
    """
    if not (distributed.requested or auto):
        return
    d = distributed
    if d.num_processes is not None and d.num_processes < 1:
        raise ParallelError(f"--num-processes must be ≥ 1, got {d.num_processes}")
    if d.process_id is not None and d.num_processes is not None and not 0 <= d.process_id < d.num_processes:
        raise ParallelError(f"--process-id must be in [0, {d.num_processes}), got {d.process_id}")
    if d.requested and (d.coordinator is None or d.process_id is None):
        raise ParallelError("a multi-process run needs --coordinator HOST:PORT and --process-id (or JAX_COORDINATOR_ADDRESS, JAX_PROCESS_ID)")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(d.coordinator, d.num_processes, d.process_id)
    except (RuntimeError, ValueError) as error:
        raise ParallelError(f"cannot join the multi-process run: {str(error).splitlines()[0]}") from None


def request_cpu_devices(n: int) -> None:
    """Ask for ``n`` CPU devices (takes effect only before the backend starts; harmless on GPU hosts)."""
    if n < 1:
        raise ParallelError(f"--devices must be ≥ 1, got {n}")
    jax.config.update("jax_num_cpu_devices", n)


def make_mesh(n_devices: int | None = None) -> Mesh:
    """A 1-D mesh over the first ``n_devices`` global devices (default: all)."""
    devices = jax.devices()
    n = len(devices) if n_devices is None else n_devices
    if n < 1 or n > len(devices):
        raise ParallelError(f"asked for {n} devices, but {len(devices)} are available ({devices[0].platform})")
    if jax.process_count() > 1 and n != len(devices):
        raise ParallelError("a multi-process run uses all devices of all processes; leave --devices unset")
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main_process() -> bool:
    """True in the process that writes files (process 0)."""
    return jax.process_index() == 0


def check_divisible(walkers_per_group: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if walkers_per_group % n:
        raise ParallelError(
            f"{walkers_per_group} walkers per depth group cannot be split evenly over {n} devices; "
            f"choose sampler.walkers / training.depths_per_step as a multiple of {n}"
        )


def walker_spec(ndim: int) -> PartitionSpec:
    """Shard axis 1 (walkers within a group) of a (groups, walkers, ...) array."""
    return PartitionSpec(None, AXIS, *([None] * (ndim - 2)))


def place(tree: Any, specs: Any, mesh: Mesh) -> Any:
    """Global arrays with the given partition specs, built from values every process holds in full."""

    def one(leaf, spec):
        value = np.asarray(to_host(leaf))
        sharding = NamedSharding(mesh, spec)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    # ``specs`` may be a prefix of ``tree`` (one spec for a whole subtree such as the parameters).
    return jax.tree.map(
        lambda spec, subtree: jax.tree.map(lambda leaf: one(leaf, spec), subtree),
        specs,
        tree,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def to_host(tree: Any) -> Any:
    """NumPy copies of every leaf on every process (gathering shards held by other processes)."""

    def one(leaf):
        if not isinstance(leaf, jax.Array):
            return leaf
        if leaf.is_fully_addressable:
            return np.asarray(leaf)
        if leaf.is_fully_replicated:
            return np.asarray(leaf.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree.map(one, tree)


def agree(flag: bool) -> bool:
    """True on every process if it is true on any (a no-op for one process)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.asarray([int(flag)], dtype=np.int32))))


def barrier(name: str) -> None:
    """Wait until every process gets here (a no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
