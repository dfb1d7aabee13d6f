"""``qernel phasediagram``: sample and observe a grid of depths, locate the liquid–crystal transition.

PD_DIR/samples.zarr      the sample store (all depths; resumable: depths already
                         sampled with enough records are not sampled again)
PD_DIR/phasediagram.zarr observables per depth (see workflows.observe) and, in its
                         attributes, the transition estimate
PD_DIR/phasediagram.png  energy components, E_int/N and the crystal order versus V
PD_DIR/plots/            density, S(q) and g(r) figures per depth
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qernel_cli.stores import samples, store
from qernel_cli.errors import QernelError, os_reason
from qernel_cli.observables.sites import random_site_order
from qernel_cli.observables.transition import estimate_transition
from qernel_cli.workflows.observe import blocking_warning, depth_rows, observe_store, unconverged_depths
from qernel_cli.workflows.requests import check_output_dir
from qernel_cli.workflows.sample import sample_to_store

SAMPLES = "samples.zarr"
OBSERVABLES = "phasediagram.zarr"
DEPTHS_PER_BATCH = 4
TOP_UP_SEED_STRIDE = 1_000_003
"""Seed offset between top-up rounds (larger than any record count of one round, so no session's seed repeats)."""


class PhaseDiagramError(QernelError):
    """The phase diagram cannot be made as asked."""


def records_per_depth(sample_store: Path) -> dict[float, int]:
    """How many records the sample store holds at each depth (empty if it does not exist yet)."""
    if not Path(sample_store).exists() or store.dimension_length(store.open_existing(sample_store), "record") == 0:
        return {}
    return {v: len(rows) for v, rows in depth_rows(samples.open_samples(sample_store)).items()}


def _sample_missing(run_dir, sample_store: Path, target: dict[float, int], *, walkers, seed: int, warn, progress) -> None:
    """Sample until every depth v of ``target`` has ``target[v]`` records (new sessions for the missing ones)."""
    have = records_per_depth(sample_store)
    # Depths with fewer records than asked (new, or cut short by an interruption) get a new
    # session for the missing ones; depths sampled with the same need share batches.
    needs: dict[int, list[float]] = {}
    for v, records in target.items():
        need = records - have.get(float(v), 0)
        if need > 0:
            needs.setdefault(need, []).append(float(v))
    total = sum(target.values())
    done = total - sum(need * len(vs) for need, vs in needs.items())
    for need, todo in sorted(needs.items()):
        for b in range(0, len(todo), DEPTHS_PER_BATCH):
            batch = todo[b : b + DEPTHS_PER_BATCH]

            def batch_progress(i, n, values, offset=done, size=len(batch)):
                if progress:
                    progress(offset + i * size, total, values)

            sample_to_store(run_dir, batch, sample_store, walkers=walkers, records=need, seed=seed + done, warn=warn, progress=batch_progress)
            done += need * len(batch)


def phase_diagram(
    run_dir: Path,
    depths: np.ndarray,
    out_dir: Path,
    *,
    walkers: int | None = None,
    records: int = 100,
    top_up: int = 0,
    grid: int = 96,
    seed: int = 0,
    warn: Callable[[str], None] = lambda message: None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Sample (what is missing), observe every depth, estimate the transition; returns the JSON summary.

    ``top_up`` rounds: after observing, every depth whose energy blocking did
    not converge (records too few for its autocorrelation time) gets as many
    records again (doubling them), and the store is observed anew; depths still
    unconverged after the last round are named in a warning.
    """
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PhaseDiagramError(f"cannot create output directory {out_dir}: {os_reason(error)}") from None
    sample_store = out_dir / SAMPLES
    _sample_missing(run_dir, sample_store, {float(v): records for v in depths}, walkers=walkers, seed=seed, warn=warn, progress=progress)
    results, attrs = observe_store(sample_store, grid=grid, plots_dir=out_dir / "plots", out_store=out_dir / OBSERVABLES)
    for round_ in range(top_up):
        bad = unconverged_depths([r for r in results if np.any(np.isclose(r.depth, depths))])
        if not bad:
            break
        have = records_per_depth(sample_store)
        # each round its own seeds: topped-up records are new chains, never repeats of earlier sessions
        _sample_missing(run_dir, sample_store, {v: 2 * have[v] for v in bad}, walkers=walkers, seed=seed + TOP_UP_SEED_STRIDE * (round_ + 1),
                        warn=warn, progress=progress)
        results, attrs = observe_store(sample_store, grid=grid, plots_dir=out_dir / "plots", out_store=out_dir / OBSERVABLES)
    results = [r for r in results if np.any(np.isclose(r.depth, depths))]
    if message := blocking_warning(results):
        warn(message + (" or --top-up" if not top_up else ""))
    v = np.array([r.depth for r in results])
    e_int = np.array([(r.energies["interaction"].mean, r.energies["interaction"].error) for r in results])
    site = all(r.site_order is not None for r in results)
    if site:
        order = np.array([[r.site_order.value, r.site_order.error] for r in results])
    else:
        order = np.full((len(results), 2), np.nan)
    transition = estimate_transition(v, order[:, 0], order[:, 1], e_int[:, 0], e_int[:, 1]) if len(v) >= 3 else None
    store.set_attrs(store.open_existing(out_dir / OBSERVABLES, mode="a"), {"transition": transition.as_dict() if transition else None})
    _figure(out_dir / "phasediagram.png", results, order, transition, attrs)
    summary = {
        "run_dir": str(run_dir),
        "out_dir": str(out_dir),
        "n_electrons": attrs.get("n_electrons"),
        "order_parameter": "site-projected crystal order m²_site" if site else None,
        "transition": transition.as_dict() if transition else None,
        "depths": [r.summary() for r in results],
    }
    (out_dir / "phasediagram.json").write_text(json.dumps(summary, indent=2))
    return summary


def _figure(path: Path, results, order: np.ndarray, transition, attrs: dict) -> None:
    from qernel_cli import plots

    v = np.array([r.depth for r in results])
    series = {
        name: (np.array([r.energies[key].mean for r in results]), np.array([r.energies[key].error for r in results]))
        for name, key in (("total", "energy"), ("kinetic", "kinetic"), ("moiré", "potential"), ("interaction", "interaction"))
    }
    n, m = attrs["n_electrons"], attrs["supercell"][0] * attrs["supercell"][1]
    reference = random_site_order(n, m)
    band = (transition.depth, transition.error) if transition and math.isfinite(transition.depth) else None
    plots.phase_diagram_figure(path, v, series, (order[:, 0], order[:, 1]), band, reference)
