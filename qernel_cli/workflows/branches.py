"""``qernel train`` with ``pretrain.target = "both"``: the liquid and the crystal branch, one after the other.

Each branch is an ordinary run (:func:`qernel_cli.workflows.train.train`) in
its own directory of the two-branch run (:mod:`qernel_cli.stores.branches`),
with the same config, seed and steps, started from its own pre-training
target. Resuming continues the branch that was interrupted and starts the
ones not begun; a branch already trained to the asked steps is not touched.
The summary holds both branches' summaries and, at every evaluation depth,
which branch is lower and by how much.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from jax.sharding import Mesh

from qernel_cli import parallel, supervisor
from qernel_cli.config import Config
from qernel_cli.observables.branches import lower_branch
from qernel_cli.stores import branches, run_dir
from qernel_cli.workflows.train import train


def _finished(path: Path, steps: int) -> dict[str, Any] | None:
    """The summary of a branch already trained to ``steps`` steps (None if it is not)."""
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("steps", -1) >= steps and (path / run_dir.CHECKPOINT_FILE).is_file() else None


def train_branches(
    config: Config | None,
    out_dir: Path,
    *,
    resume: bool = False,
    force: bool = False,
    steps: int | None = None,
    reporter: Any | None = None,
    mesh: Mesh | None = None,
    branch: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) both branches, or only ``branch``; returns the two-branch summary (also written to ``summary.json``).

    With one branch the comparison follows once the other branch has finished
    too (its summary read from its directory); until then ``pending`` names it.
    """
    out_dir = Path(out_dir)
    main = parallel.is_main_process()
    if main:
        config = branches.prepare(out_dir, config, resume=resume, force=force, steps=steps, branch=branch)
    parallel.barrier("qernel-branches-dir")
    if not main:
        config = branches.check_resumable(out_dir, steps) if resume else config
    results = {}
    for name, path in branches.branch_dirs(out_dir).items():
        done = _finished(path, config.training.steps)
        if done is not None or (branch is not None and name != branch):
            if done is not None:
                results[name] = done
            continue
        supervisor.phase(f"branch {name}")
        begun = (path / run_dir.CONFIG_FILE).is_file()
        results[name] = train(
            None if begun else branches.branch_config(config, name), path,
            resume=begun, steps=config.training.steps if begun else None, reporter=reporter, mesh=mesh,
        )
    if len(results) < len(branches.BRANCHES):
        pending = [name for name in branches.BRANCHES if name not in results]
        fingerprint = "/".join(r["parameter_fingerprint"] for r in results.values())
        return {"run_dir": str(out_dir), "branches": results, "depths": [], "pending": pending, "parameter_fingerprint": fingerprint, "warnings": []}
    summary = branch_summary(out_dir, results)
    if main:
        run_dir.atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def compare_depth(liquid: dict[str, Any], crystal: dict[str, Any]) -> dict[str, Any]:
    """One evaluation depth of both branches (summary rows): the difference E_crystal − E_liquid (meV per electron) and the lower branch."""
    delta = crystal["energy_per_electron_meV"] - liquid["energy_per_electron_meV"]
    error = math.hypot(crystal["energy_error_meV"], liquid["energy_error_meV"])
    return {
        "V_meV": liquid["V_meV"],
        "liquid_energy_per_electron_meV": liquid["energy_per_electron_meV"],
        "liquid_energy_error_meV": liquid["energy_error_meV"],
        "crystal_energy_per_electron_meV": crystal["energy_per_electron_meV"],
        "crystal_energy_error_meV": crystal["energy_error_meV"],
        "crystal_minus_liquid_meV": delta,
        "crystal_minus_liquid_error_meV": error,
        "lower": lower_branch(delta, error),
    }


def branch_summary(out_dir: Path, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The two-branch summary: both branches' summaries and the comparison at every evaluation depth."""
    liquid, crystal = results["liquid"], results["crystal"]
    return {
        "run_dir": str(out_dir),
        "protocol": "two branches: the same model trained from the liquid (Bloch) and from the crystal start",
        "description": liquid.get("description"),
        "n_electrons": liquid.get("n_electrons"),
        "steps": min(liquid["steps"], crystal["steps"]),
        "wall_time_s": liquid["wall_time_s"] + crystal["wall_time_s"],
        "parameter_fingerprint": f"{liquid['parameter_fingerprint']}/{crystal['parameter_fingerprint']}",
        "energy_unit_meV": liquid.get("energy_unit_meV"),
        "depths": [compare_depth(a, b) for a, b in zip(liquid["depths"], crystal["depths"])],
        "branches": results,
        "warnings": [f"{name}: {w}" for name, s in results.items() for w in s.get("warnings", [])],
    }
