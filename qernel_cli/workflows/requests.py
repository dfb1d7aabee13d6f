"""What ``qernel sample`` and ``qernel phasediagram`` are asked to do, checked before the numerics load.

Nothing here imports JAX or the model: a request that cannot be done (a depth
grid that does not parse, a non-finite depth, a directory that is not a trained
run, a damaged checkpoint, a store that cannot take the new records) is refused
in well under a second. The workflows repeat these checks themselves, so that
they hold for callers other than the command line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from qernel_cli.stores import branches, run_dir, samples, store
from qernel_cli.config import Config
from qernel_cli.errors import QernelError


class RequestError(QernelError):
    """A command's arguments ask for something that cannot be done."""


def parse_depths(spec: str) -> np.ndarray:
    """'start:stop:count' (inclusive, meV) or a comma-separated list of depths in meV."""
    try:
        if ":" in spec:
            start, stop, count = spec.split(":")
            start, stop, count = float(start), float(stop), int(count)
            if count < 2 or not (math.isfinite(start) and math.isfinite(stop)) or stop <= start:
                raise ValueError
            return np.linspace(start, stop, count)
        depths = np.array(sorted({float(v) for v in spec.split(",")}))
        if len(depths) < 1 or not np.all(np.isfinite(depths)):
            raise ValueError
        return depths
    except ValueError:
        raise RequestError(
            f"--depths must be START:STOP:COUNT with START < STOP and COUNT ≥ 2 (e.g. 0:30:16) or a list like 5,10,20; got {spec!r}"
        ) from None


def check_depths(depths_meV: list[float], config: Config, warn: Callable[[str], None] | None = None) -> np.ndarray:
    """Finite depths (meV); with ``warn``, a warning for those outside the trained range (the model extrapolates there)."""
    if len(depths_meV) == 0:
        raise RequestError("give at least one --depth (meV)")
    for v in depths_meV:
        if not math.isfinite(v):
            raise RequestError(f"depth must be a finite number of meV, got {v!r}")
    v_min, v_max = config.hamiltonian.V_min_meV, config.hamiltonian.V_max_meV
    outside = [v for v in depths_meV if v < v_min - 1e-9 or v > v_max + 1e-9]
    if outside and warn is not None:
        warn(
            f"depths {', '.join(f'{v:g}' for v in outside)} meV lie outside the trained range "
            f"[{v_min:g}, {v_max:g}] meV: the model extrapolates there"
        )
    return np.asarray(depths_meV, dtype=np.float64)


def check_sampling(
    trained: Path, depths_meV: list[float], out_store: Path, walkers: int | None, warn: Callable[[str], None] | None = None
) -> tuple[Config, np.ndarray]:
    """The run's config and the depths (meV) of a `qernel sample` request; refuses what cannot be sampled or appended."""
    if branches.is_branched(trained):
        names = " or ".join(str(p) for p in branches.branch_dirs(trained).values())
        raise RequestError(f"{trained} holds two branches (liquid and crystal); sample one of them: {names}")
    config = run_dir.check_trained(trained)
    depths = check_depths(depths_meV, config, warn)
    if walkers is not None and walkers > config.sampler.walkers:
        raise RequestError(
            f"--walkers {walkers} exceeds the {config.sampler.walkers} distinct trained configurations that chains start from "
            f"(copies would be correlated); use at most {config.sampler.walkers} and more --records"
        )
    if Path(out_store).exists():
        if owner := store.lock_owner(out_store):
            raise store.StoreLocked(f"store {out_store} is being written by another process (pid {owner}); wait for it to finish")
        config_toml = (Path(trained) / run_dir.CONFIG_FILE).read_text()
        samples.check_appendable(out_store, walkers or config.sampler.walkers, config.n_electrons, {"config_toml": config_toml})
    return config, depths


def check_phase_diagram(trained: Path, spec: str, out_dir: Path) -> np.ndarray:
    """The depths (meV) of a `qernel phasediagram` request; refuses a grid that does not parse, an untrained run, an --out that is a file."""
    depths = parse_depths(spec)
    if branches.is_branched(trained):
        branches.check_trained(trained)
    else:
        run_dir.check_trained(trained)
    check_output_dir(out_dir)
    return depths


def check_output_dir(out_dir: Path) -> None:
    """Refuse an output directory that is an existing file."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise RequestError(f"--out {out_dir} is a file, not a directory")
