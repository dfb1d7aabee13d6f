"""Which processes a run spans, read from the options and the environment without loading JAX.

The command line decides before JAX loads whether a new run may check its
directory alone (a single process) or must leave that to process 0 (several
processes might already see its files); :mod:`qernel_cli.parallel` joins the
processes with the same description.
"""

from __future__ import annotations

import dataclasses
import os

from qernel_cli.errors import QernelError


class ParallelError(QernelError):
    """Devices or processes cannot be set up as asked."""


@dataclasses.dataclass(frozen=True)
class Distributed:
    """How to join a multi-process run (all None: a single process)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @classmethod
    def from_env(cls, coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> "Distributed":
        """Fill what the options leave open from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID."""

        def env_int(name: str) -> int | None:
            value = os.environ.get(name)
            if value is None or value == "":
                return None
            try:
                return int(value)
            except ValueError:
                raise ParallelError(f"{name}={value!r} is not an integer") from None

        return cls(
            coordinator=coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None,
            num_processes=num_processes if num_processes is not None else env_int("JAX_NUM_PROCESSES"),
            process_id=process_id if process_id is not None else env_int("JAX_PROCESS_ID"),
        )

    @property
    def requested(self) -> bool:
        return self.num_processes is not None and self.num_processes > 1


def joins_other_processes(num_processes: int | None, distributed: bool) -> bool:
    """Whether this process may be one of several (``--num-processes`` > 1, ``JAX_NUM_PROCESSES`` > 1 or ``--distributed``).

    An unreadable ``JAX_NUM_PROCESSES`` counts as several: :func:`qernel_cli.parallel.initialize` reports it.
    """
    if distributed:
        return True
    try:
        return Distributed.from_env(num_processes=num_processes).requested
    except ParallelError:
        return True
