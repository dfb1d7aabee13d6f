"""``qernel sample``: equilibrated walkers of a trained run at given depths, appended to a sample store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from qernel_cli.stores import samples, store
from qernel_cli.errors import QernelError
from qernel_cli.interrupt import deferred_interrupt
from qernel_cli.vmc.sampling import sample
from qernel_cli.stores.run_dir import CONFIG_FILE
from qernel_cli.workflows.train import load_trained
from qernel_cli.workflows.requests import check_sampling

FLUSH_ROWS = 64
"""Rows buffered before one append to the store (bounded memory, few store writes)."""


class SampleError(QernelError):
    """Sampling cannot be done as asked."""


class SamplingInterrupted(QernelError):
    exit_code = 130


def sample_to_store(
    run_dir: Path,
    depths_meV: list[float],
    out_store: Path,
    *,
    walkers: int | None = None,
    records: int = 200,
    sweeps: int | None = None,
    burn_in: int | None = None,
    seed: int = 0,
    warn: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Sample every depth and append the records to ``out_store``; returns a JSON-able summary."""
    if records < 1:
        raise SampleError(f"--records must be at least 1, got {records}")
    _, depths = check_sampling(run_dir, depths_meV, out_store, walkers, warn)  # before the slow model build
    run, state, header = load_trained(run_dir)
    cfg = run.config
    walkers = walkers or cfg.sampler.walkers
    sweeps = sweeps or cfg.sampler.steps_per_iteration
    burn_in = cfg.sampler.burn_in if burn_in is None else burn_in
    if walkers < 1 or sweeps < 1 or burn_in < 0:
        raise SampleError("--walkers and --sweeps must be positive and --burn-in non-negative")
    unit = run.energy_unit_meV
    n_el = cfg.n_electrons
    attrs = {
        "config_toml": (Path(run_dir) / CONFIG_FILE).read_text(),
        "run_dir": str(Path(run_dir).resolve()),
        "training_steps": int(header.get("step", 0)),
        "n_electrons": n_el,
        "supercell": [cfg.supercell.L1, cfg.supercell.L2],
        "phi_deg": cfg.material.phi_deg,
        "energy_unit_meV": unit,
        "coulomb_strength_U": run.physics.coulomb_strength,
        "trained_depths_meV": [cfg.hamiltonian.V_min_meV, cfg.hamiltonian.V_max_meV],
    }
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 11)
    with deferred_interrupt() as interrupt, samples.open_for_append(out_store, walkers, n_el, attrs) as (group, session):
        buffer: list[dict] = []
        acceptance: list[np.ndarray] = []

        def on_record(r: int, record: dict[str, np.ndarray]) -> None:
            buffer.extend(samples.record_rows(record, depths, session, (r + 1) * sweeps, unit, n_el))
            acceptance.append(record["acceptance"])
            if len(buffer) >= FLUSH_ROWS:
                store.append_rows(group, buffer)
                buffer.clear()
            if progress:
                progress(r + 1, records, {"energy": float(np.mean(record["total"])) * unit / n_el, "acceptance": float(np.mean(record["acceptance"]))})

        taken = sample(
            run, state.params, state.walkers, depths / unit,
            walkers=walkers, records=records, sweeps=sweeps, burn_in=burn_in,
            key=jax.random.fold_in(key, session), on_record=on_record, stop=interrupt.requested,
        )
        store.append_rows(group, buffer)
        total = store.dimension_length(group, "record")
    summary = {
        "store": str(out_store),
        "session": session,
        "depths_meV": depths.tolist(),
        "walkers": walkers,
        "records_per_depth": taken,
        "sweeps_per_record": sweeps,
        "acceptance": np.mean(acceptance, axis=0).tolist() if acceptance else [],
        "records_in_store": total,
    }
    if taken < records:
        raise SamplingInterrupted(f"interrupted after {taken} of {records} records; they are saved in {out_store}")
    return summary
