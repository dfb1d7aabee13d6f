"""QERNEL against the peer code (mg607/PeriodicWave, run unchanged from outside), side by side on this machine.

The peer is built and timed by the team's harness in ``../shared/peer/``
(``setup.sh`` once, then ``timing.sh``: KFAC iterations of its Psiformer at N
spin-up electrons on an L × L moiré supercell, 256 walkers, 10 Metropolis steps
per iteration, V = 15 meV, float32). This script

1. runs ``timing.sh`` (``--run-peer``) or reads its JSON (``--peer-json``,
   measured right before on the same machine: the machine is shared, so only
   ratios measured close together mean anything);
2. runs QERNEL's side with ``benchmarks/run.py`` on the same systems with the
   matched reference model (4 layers, 4 heads of 16, MLP 64, 4 determinants,
   float32 trunk), the peer's walkers and sweeps per step, at the presets
   ``moire-tiny`` (N = 6, 3 × 3) and ``moire24`` (N = 24, 6 × 6);
3. writes one JSON with both sides and the ratios QERNEL / peer (< 1: QERNEL
   is faster or smaller) of what both sides measured: seconds per optimisation
   step, launch to the end of the first step, peak resident memory. QERNEL's
   per-walker costs (log ψ, forward Laplacian, folx Laplacian) are included;
   the peer's are listed under ``not_measured_on_peer`` until its harness
   reports them.

Nothing of the peer is imported or copied here: it runs in its own
environment, as a user would run it.

    python benchmarks/peer.py --run-peer ../shared/peer --out benchmarks/results/peer-cpu.json
    python benchmarks/peer.py --peer-json peer.json --cases 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report import emit  # noqa: E402
PRESET_FOR_N = {6: ("moire-tiny", 3), 24: ("moire24", 6), 54: ("moire54", 9)}
"""Spin-polarised ν = 2/3 systems that both codes run: N → (QERNEL preset, L of the L × L supercell)."""


def peer_command(harness: Path, *, cells: int, nup: int, depth: float, walkers: int, sweeps: int, burn_in: int,
                 iterations: int, save: Path, extra: tuple[str, ...] = ()) -> list[str]:
    """The command line that runs the peer through the harness's ``run_pw.py`` in its own venv (``$PEER_HOME``)."""
    home = Path(os.environ.get("PEER_HOME", Path.home() / ".cache" / "qernel-peer"))
    return [str(home / "venv" / "bin" / "python"), str(harness / "run_pw.py"),
            "--cells", str(cells), "--nup", str(nup), "--V", f"{depth:g}", "--batch", str(walkers),
            "--iterations", str(iterations), "--mcmc-steps", str(sweeps), "--burn-in", str(burn_in),
            "--save-path", str(save), *extra]


PEER_ENV = {"JAX_PLATFORMS": "cpu"}
"""Added to the environment of every peer process (the peer runs on the CPU, as measured)."""


def run_peer(harness: Path, cases: list[int], walkers: int, sweeps: int, iters: int, warmup: int) -> dict:
    """``timing.sh`` of the shared harness for the given N; its JSON."""
    env = {
        **os.environ,
        "CASES": " ".join(f"{n}:{PRESET_FOR_N[n][1]}" for n in cases),
        "WALKERS": str(walkers),
        "MCMC": str(sweeps),
        "ITERS": str(iters),
        "WARMUP": str(warmup),
    }
    done = subprocess.run(["bash", str(harness / "timing.sh")], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"peer timing failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def _peer_iteration_s(trace: Path, warmup: int) -> tuple[float, int]:
    """(median seconds per iteration after ``warmup`` iterations, timed iterations) of a ``run_pw.py`` trace."""
    rows = [line.split("\t") for line in trace.read_text().splitlines() if line and not line.startswith("#")]
    timed = [float(r[2]) for r in rows[warmup:]]
    if not timed:
        raise SystemExit(f"the peer wrote no timed iteration to {trace}")
    return statistics.median(timed), len(timed)


def run_peer_components(
    harness: Path, cases: list[int], walkers: int, sweeps: int, more_sweeps: int, iters: int, warmup: int
) -> dict:
    """The peer's iteration taken apart from outside, by differences of whole iterations.

    For each N the peer is run twice more through the harness's ``run_pw.py``
    with ``--optimizer none`` (an evaluation iteration: Metropolis steps and the
    local energies of all walkers, no gradient, no KFAC), with ``sweeps`` and
    ``more_sweeps`` Metropolis steps per iteration. Then, with t_eval and
    t_more their median iteration times:

    * one Metropolis step of all walkers = (t_more − t_eval)/(more_sweeps − sweeps);
      per walker it bounds the cost of one log ψ from above;
    * local energies of all walkers = t_eval − sweeps × (one Metropolis step);
    * the optimiser's share of a training iteration (parameter gradients,
      KFAC's curvature statistics and update) = t_kfac − t_eval, with t_kfac
      from ``timing.sh`` (see :func:`compare_components`).
    """
    out: dict = {"method": "run_pw.py --optimizer none at two sweep counts; differences of median iteration times",
                 "walkers": walkers, "sweeps": sweeps, "more_sweeps": more_sweeps, "warmup_iters": warmup,
                 "timed_iters": iters, "cases": []}
    with tempfile.TemporaryDirectory() as tmp:
        for n in cases:
            entry: dict = {"N": n}
            for key, count in (("eval_s", sweeps), ("eval_more_sweeps_s", more_sweeps)):
                save = Path(tmp) / f"N{n}_{count}"
                cmd = peer_command(harness, cells=PRESET_FOR_N[n][1], nup=n, depth=15, walkers=walkers, sweeps=count, burn_in=10,
                                   iterations=warmup + iters, save=save, extra=("--optimizer", "none"))
                done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **PEER_ENV}, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"peer evaluation run failed ({done.returncode}): {done.stdout[-1000:]}{done.stderr[-1000:]}")
                entry[key], entry["timed_iters"] = _peer_iteration_s(save / "trace.tsv", warmup)
            out["cases"].append(split_evaluation(entry, sweeps, more_sweeps))
    return out


def split_evaluation(entry: dict, sweeps: int, more_sweeps: int) -> dict:
    """``entry`` with its evaluation iterations (``eval_s`` at ``sweeps``, ``eval_more_sweeps_s`` at ``more_sweeps``)
    split into one Metropolis step, the sweeps and the local energies (seconds, all walkers)."""
    step = (entry["eval_more_sweeps_s"] - entry["eval_s"]) / (more_sweeps - sweeps)
    return {**entry, "metropolis_step_s": step, "sweeps_s": sweeps * step, "local_energies_s": entry["eval_s"] - sweeps * step}


def run_qernel_components(cases: list[int]) -> dict:
    """``benchmarks/components.py`` (reference model, the step's walkers) for the given N; its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "components.json"
        argv = [sys.executable, str(HERE / "components.py"), "--out", str(out), "--cases", *map(str, cases)]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"QERNEL component benchmark failed ({done.returncode}): {done.stderr[-2000:]}")
        return json.loads(out.read_text())


def compare_components(peer: dict, peer_parts: dict, components: dict) -> list[dict]:
    """Per N: the step's parts on both sides (seconds per step at the same walkers and sweeps) and QERNEL / peer.

    Peer: Metropolis sweeps and local energies from :func:`run_peer_components`,
    the optimiser's share = its training iteration (``timing.sh``) − its evaluation
    iteration. QERNEL: sweeps, local energies (walkers × (forward Laplacian +
    Ewald + moiré potential)) and the optimiser's share (walkers ×
    log-derivatives + SPRING direction), each timed as its own program by
    ``components.py``; its whole step from the same run.
    """
    training = {case["N"]: case.get("median_s_per_iter") for case in peer["cases"]}
    ours = {entry["n_electrons"]: entry for entry in components["cases"]}
    rows = []
    for part in peer_parts["cases"]:
        n = part["N"]
        q = ours.get(n)
        if q is None or training.get(n) is None:
            continue
        walkers = q["step_walkers"]
        if walkers != peer_parts["walkers"]:
            continue
        parts = q["step_parts_s"]
        qernel_side = {
            "sweeps_s": parts["sweeps"],
            "log_psi_per_walker_ms": 1e3 * q["per_walker_s"]["log_psi"],
            "local_energies_s": parts["local_energies"],
            "local_energy_per_walker_ms": 1e3 * parts["local_energies"] / walkers,
            "optimizer_s": parts["log_derivatives"] + parts["spring_direction"],
            "step_s": q["per_step_s"]["step"],
        }
        peer_side = {
            "sweeps_s": part["sweeps_s"],
            "log_psi_per_walker_ms": 1e3 * part["metropolis_step_s"] / walkers,
            "local_energies_s": part["local_energies_s"],
            "local_energy_per_walker_ms": 1e3 * part["local_energies_s"] / walkers,
            "optimizer_s": training[n] - part["eval_s"],
            "step_s": training[n],
        }
        rows.append({
            "N": n,
            "qernel": qernel_side,
            "peer": peer_side,
            "qernel_over_peer": {key: _ratio(qernel_side[key], peer_side[key]) for key in qernel_side},
        })
    return rows


def run_qernel(cases: list[int], walkers: int, sweeps: int, steps: int, timeout: float) -> dict:
    """``benchmarks/run.py`` (reference model) on the presets of the given N with the peer's walkers and sweeps; its JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        argv = [sys.executable, str(HERE / "run.py"), "--json", "--out", str(out), "--steps", str(steps), "--walkers", str(walkers),
                "--timeout", str(timeout), "--skip-hessian-above", "0", "--set", f"sampler.steps_per_iteration={sweeps}"]
        for n in cases:
            argv += ["--preset", PRESET_FOR_N[n][0]]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"QERNEL benchmark failed ({done.returncode}): {done.stderr[-2000:]}")
        return json.loads(out.read_text())


def _ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def compare(peer: dict, qernel: dict) -> list[dict]:
    """One row per N that both sides measured."""
    rows = []
    by_n = {entry["n_electrons"]: entry for entry in qernel["presets"] if "n_electrons" in entry}
    for case in peer["cases"]:
        n = case["N"]
        q = by_n.get(n)
        if q is None:
            continue
        step = q.get("step", {})
        q_rss = step.get("peak_rss_GiB")
        p_rss = case.get("peak_rss_GB")
        qernel_side = {
            "preset": q["preset"],
            "parameters": q.get("parameters"),
            "walkers": step.get("walkers"),
            "sweeps_per_step": step.get("mcmc_sweeps_per_step"),
            "optimizer": step.get("optimizer"),
            "step_s": step.get("step_s_median"),
            "launch_to_first_step_s": step.get("time_to_first_step_s"),
            "peak_rss_GB": None if q_rss is None else q_rss * 2**30 / 1e9,
            "log_psi_per_walker_ms": 1e3 * q["forward"]["per_walker_s"] if "per_walker_s" in q.get("forward", {}) else None,
            "forward_laplacian_per_walker_ms": (
                1e3 * q["forward_laplacian"]["per_walker_s"] if "per_walker_s" in q.get("forward_laplacian", {}) else None
            ),
            "folx_laplacian_per_walker_ms": (
                1e3 * q["folx_laplacian"]["per_walker_s"] if "per_walker_s" in q.get("folx_laplacian", {}) else None
            ),
        }
        peer_side = {
            "cells": case.get("cells"),
            "walkers": peer.get("walkers"),
            "sweeps_per_step": peer.get("mcmc_steps_per_iter"),
            "optimizer": peer.get("optimizer"),
            "step_s": case.get("median_s_per_iter"),
            "launch_to_first_step_s": case.get("start_to_iter0_done_s"),
            "peak_rss_GB": p_rss,
        }
        rows.append({
            "N": n,
            "qernel": qernel_side,
            "peer": peer_side,
            "qernel_over_peer": {
                key: _ratio(qernel_side[key], peer_side[key]) for key in ("step_s", "launch_to_first_step_s", "peak_rss_GB")
            },
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-peer", type=Path, metavar="HARNESS", help="the shared harness folder (runs its timing.sh first)")
    source.add_argument("--peer-json", type=Path, help="JSON of the harness's timing.sh, measured right before")
    parser.add_argument("--cases", default="6,24", help="electron counts, comma-separated (6, 24, 54)")
    parser.add_argument("--walkers", type=int, default=256)
    parser.add_argument("--sweeps", type=int, default=10, help="Metropolis sweeps per step")
    parser.add_argument("--peer-iters", type=int, default=25, help="timed peer iterations (after --peer-warmup)")
    parser.add_argument("--peer-warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="timed QERNEL steps after the first")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per QERNEL preset")
    parser.add_argument("--components", action="store_true",
                        help="also take both steps apart: the peer by evaluation runs at two sweep counts, QERNEL by components.py")
    parser.add_argument("--more-sweeps", type=int, default=30, help="the peer's second sweep count (--components)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    cases = [int(n) for n in args.cases.split(",")]
    unknown = [n for n in cases if n not in PRESET_FOR_N]
    if unknown:
        raise SystemExit(f"no matched system for N = {unknown}; known: {sorted(PRESET_FOR_N)}")

    t0 = time.perf_counter()
    if args.run_peer:
        peer = run_peer(args.run_peer, cases, args.walkers, args.sweeps, args.peer_iters, args.peer_warmup)
    else:
        peer = json.loads(args.peer_json.read_text())
    if peer.get("walkers") != args.walkers or peer.get("mcmc_steps_per_iter") != args.sweeps:
        raise SystemExit(f"the peer ran {peer.get('walkers')} walkers × {peer.get('mcmc_steps_per_iter')} sweeps; "
                         f"give --walkers/--sweeps to match")
    peer_parts = None
    if args.components:
        peer_parts = run_peer_components(
            args.run_peer or HERE.parent.parent / "shared" / "peer", cases, args.walkers, args.sweeps, args.more_sweeps,
            max(10, args.peer_iters // 2), args.peer_warmup,
        )
    qernel = run_qernel(cases, args.walkers, args.sweeps, args.steps, args.timeout)
    result = {
        "benchmark": "peer",
        "cases": compare(peer, qernel),
        "peer": peer,
        "qernel": qernel,
    }
    if peer_parts is None:
        result["not_measured_on_peer"] = ["log_psi_per_walker", "local_energy_per_walker", "natural_gradient_solve", "sweeps"]
    else:
        components = run_qernel_components(cases)
        result["components"] = compare_components(peer, peer_parts, components)
        result["peer_components"] = peer_parts
        result["qernel_components"] = components
    result["wall_s"] = time.perf_counter() - t0
    emit(result, args.out, indent=2)


if __name__ == "__main__":
    main()
