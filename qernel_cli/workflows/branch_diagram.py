"""``qernel phasediagram`` of a two-branch run: both branches on one depth grid, the lower one per depth, their crossing.

PD_DIR/liquid/, PD_DIR/crystal/  each branch's phase diagram (workflows.phasediagram: samples,
                                 observables, figures; resumable)
PD_DIR/phasediagram.json         both branches per depth, which is lower, the crossing V_c with its
                                 error and the depths where the branches are distinct states
PD_DIR/branches.png              E/N of both branches, their difference and crossing, m²_site of both
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from qernel_cli.observables.branches import branch_crossing, hysteresis_window, lower_branch
from qernel_cli.observables.sites import random_site_order
from qernel_cli.observables.transition import estimate_transition
from qernel_cli.stores import branches
from qernel_cli.workflows.phasediagram import phase_diagram


def _column(rows: list[dict], key: str) -> np.ndarray:
    return np.array([np.nan if r[key] is None else r[key] for r in rows], dtype=float)


def branch_phase_diagram(
    run_dir: Path,
    depths: np.ndarray,
    out_dir: Path,
    *,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Each branch's phase diagram on the grid ``depths`` (meV), then the comparison; returns the JSON summary.

    ``options`` are :func:`qernel_cli.workflows.phasediagram.phase_diagram`'s (walkers, records, top_up, grid, seed, warn).
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    branches.check_trained(run_dir)
    names = list(branches.BRANCHES)
    results = {}
    for b, (name, path) in enumerate(branches.branch_dirs(run_dir).items()):
        def branch_progress(i, n, values, b=b):
            if progress:
                progress(b * n + i, len(names) * n, values)

        results[name] = phase_diagram(path, depths, out_dir / name, progress=branch_progress, **options)
    summary = compare(run_dir, out_dir, results)
    (out_dir / "phasediagram.json").write_text(json.dumps(summary, indent=2))
    return summary


def compare(run_dir: Path, out_dir: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The two-branch summary from both branches' phase-diagram summaries (same depths); draws branches.png."""
    liquid, crystal = results["liquid"]["depths"], results["crystal"]["depths"]
    v = _column(liquid, "V_meV")
    e = {name: (_column(rows, "energy_meV"), _column(rows, "energy_error_meV")) for name, rows in (("liquid", liquid), ("crystal", crystal))}
    m = {name: (_column(rows, "site_order"), _column(rows, "site_order_error")) for name, rows in (("liquid", liquid), ("crystal", crystal))}
    delta = e["crystal"][0] - e["liquid"][0]
    delta_error = np.hypot(e["crystal"][1], e["liquid"][1])
    crossing = branch_crossing(v, delta, delta_error) if len(v) >= 2 else None
    ground = _ground_transition(v, delta, liquid, crystal)
    has_order = bool(np.all(np.isfinite(m["liquid"][0])) and np.all(np.isfinite(m["crystal"][0])))
    window = hysteresis_window(v, *m["liquid"], *m["crystal"]) if has_order else None
    rows = [
        {
            "V_meV": float(v[i]),
            "liquid_energy_meV": float(e["liquid"][0][i]),
            "liquid_energy_error_meV": float(e["liquid"][1][i]),
            "crystal_energy_meV": float(e["crystal"][0][i]),
            "crystal_energy_error_meV": float(e["crystal"][1][i]),
            "crystal_minus_liquid_meV": float(delta[i]),
            "crystal_minus_liquid_error_meV": float(delta_error[i]),
            "lower": lower_branch(delta[i], delta_error[i]),
            "liquid_site_order": liquid[i]["site_order"],
            "liquid_site_order_error": liquid[i]["site_order_error"],
            "crystal_site_order": crystal[i]["site_order"],
            "crystal_site_order_error": crystal[i]["site_order_error"],
        }
        for i in range(len(v))
    ]
    n = results["liquid"]["n_electrons"]
    reference = _random_order(run_dir, n)
    from qernel_cli import plots

    plots.branches_figure(
        out_dir / "branches.png", v, e, m if has_order else {},
        (crossing.depth, crossing.error) if crossing is not None and crossing.found else None,
        (window["from_meV"], window["to_meV"]) if window and window["from_meV"] is not None else None,
        reference,
    )
    return {
        "run_dir": str(run_dir),
        "out_dir": str(out_dir),
        "n_electrons": n,
        "protocol": "two branches: the same model trained from the liquid (Bloch) and from the crystal start; the lower energy is the ground-state estimate",
        "crossing": None if crossing is None else crossing.as_dict(),
        "hysteresis": window,
        "ground_state_transition": ground,
        "depths": rows,
        "branches": {name: {"out_dir": r["out_dir"], "transition": r["transition"]} for name, r in results.items()},
    }


def _ground_transition(v: np.ndarray, delta: np.ndarray, liquid: list[dict], crystal: list[dict]) -> dict | None:
    """The single-branch transition estimates (order-parameter step, E_int slope change) on the lower branch's curve.

    At each depth the branch with the lower mean energy stands for the ground
    state; its m²_site and E_int/N are fitted as one phase diagram. Where the
    lower branch changes at the crossing the curve jumps there by construction,
    so this estimate is not independent of the crossing; each branch's own
    estimate is in ``branches``.
    """
    if len(v) < 3:
        return None
    rows = [c if d < 0 else l for d, l, c in zip(delta, liquid, crystal)]
    order, order_error = _column(rows, "site_order"), _column(rows, "site_order_error")
    if not np.all(np.isfinite(order)):
        order = order_error = np.full(len(v), np.nan)
    t = estimate_transition(v, order, order_error, _column(rows, "interaction_meV"), _column(rows, "interaction_error_meV"))
    return t.as_dict() | {"branch_per_depth": ["crystal" if d < 0 else "liquid" for d in delta]}


def _random_order(run_dir: Path, n_electrons: int) -> float:
    """m²_site of randomly occupied sites for the run's supercell (the liquid's reference line)."""
    config = branches.stored_manifest(run_dir)
    return random_site_order(n_electrons, config.supercell.L1 * config.supercell.L2)
