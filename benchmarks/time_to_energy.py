"""Time to energy, QERNEL against the peer (mg607/PeriodicWave, run unchanged from outside).

The user's real measure: how low the variational energy gets in a given wall
time on the same machine. At N = 6 (spin-polarised ν = 2/3, 3 × 3 supercell,
default material) this script runs, one after the other on this machine:

* the peer at each single depth V (its own Psiformer and KFAC, via the shared
  harness ``run_pw.py``, stopped by its own ``--walltime``);
* QERNEL's ``moire-tiny`` preset at the same single depth
  (``V_min_meV = V_max_meV = V``), stopped by Ctrl-C (SIGINT: it checkpoints);
* QERNEL's default family run (``qernel train --preset moire-tiny``, 0–30 meV)
  in segments, each followed by ``qernel sample`` + ``qernel observe`` at the
  same depths (the evaluation's time is not counted: it is what a user does
  after training).

Both codes use 256 walkers and 10 Metropolis sweeps per step. Wall time counts
from the launch of each process (imports, compilation and pre-training
included). The energy "reached" at time t is the mean per-electron energy of the
training batches in the trailing window (t − window, t]; its error is the
standard error of those batch means (blocked in 8 blocks). The wall time one
code needs to reach the other's 20-minute energy is the first t at which its
trailing mean is at or below that energy.

    python benchmarks/time_to_energy.py run --peer ../shared/peer --work /tmp/tte
    python benchmarks/time_to_energy.py analyse --work /tmp/tte \\
        --json benchmarks/results/time-to-energy-cpu.json --plot docs/images/peer-time-to-energy.png

``run`` skips the legs already finished in ``--work`` (so it can be resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from peer import PEER_ENV, peer_command  # noqa: E402

N_ELECTRONS = 6
CELLS = 3
WALKERS = 256
SWEEPS = 10
BURN_IN = 100


def _qernel() -> list[str]:
    return [sys.executable, "-m", "qernel_cli"]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_peer_leg(harness: Path, work: Path, depth: float, minutes: float, seed: int) -> None:
    """The peer at one depth for ``minutes`` of wall time; its trace in ``work/peer_V{depth}``."""
    out = work / f"peer_V{depth:g}"
    if (out / "done.json").exists():
        return
    cmd = peer_command(harness, cells=CELLS, nup=N_ELECTRONS, depth=depth, walkers=WALKERS, sweeps=SWEEPS, burn_in=BURN_IN,
                       iterations=10_000_000, save=out, extra=("--walltime", f"{minutes:g}", "--seed", str(seed)))
    _log(f"peer V = {depth:g} meV for {minutes:g} min")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(out / "run.log", "w") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **PEER_ENV}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"peer run failed ({done.returncode}); see {out / 'run.log'}")
    (out / "done.json").write_text(json.dumps({"launched": t0, "wall_s": time.time() - t0, "cmd": cmd}))


def _train_until(cmd: list[str], run_dir: Path, log_path: Path, deadline_s: float | None) -> float:
    """Run ``qernel train``; SIGINT it ``deadline_s`` after launch. Returns the launch time."""
    t0 = time.time()
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        while proc.poll() is None:
            if deadline_s is not None and time.time() - t0 > deadline_s:
                proc.send_signal(signal.SIGINT)
                proc.wait()
                break
            time.sleep(1.0)
    if proc.returncode not in (0, 130) and not (deadline_s is not None and proc.returncode != 0 and (run_dir / "checkpoint.npz").exists()):
        raise SystemExit(f"qernel train failed ({proc.returncode}); see {log_path}")
    return t0


def _launch_offset(run_dir: Path, launched: float) -> float:
    """Seconds from the process launch to the start of train()'s clock (imports, JAX start-up):
    ``config.toml`` is written right before that clock starts."""
    return (run_dir / "config.toml").stat().st_mtime - launched


def run_qernel_single(work: Path, depth: float, minutes: float, seed: int, overrides: list[str] = ()) -> None:
    """QERNEL's moire-tiny (with ``--set`` ``overrides``) at one depth for ``minutes`` of wall time."""
    out = work / f"qernel_V{depth:g}"
    if (out / "done.json").exists():
        return
    run_dir = out / "run"
    out.mkdir(parents=True, exist_ok=True)
    cmd = _qernel() + [
        "train", "--preset", "moire-tiny", "--out", str(run_dir), "--force", "--quiet", "--steps", "1000000",
        "--seed", str(seed), "--set", f"hamiltonian.V_min_meV={depth:g}", "--set", f"hamiltonian.V_max_meV={depth:g}",
    ]
    for item in overrides:
        cmd += ["--set", item]
    _log(f"QERNEL V = {depth:g} meV for {minutes:g} min")
    t0 = _train_until(cmd, run_dir, out / "run.log", 60.0 * minutes)
    (out / "done.json").write_text(json.dumps({"launched": t0, "offset_s": _launch_offset(run_dir, t0), "cmd": cmd}))


def run_qernel_family(work: Path, depths: list[float], segments: list[int], seed: int) -> None:
    """QERNEL's default family run, evaluated at ``depths`` after each segment of steps."""
    out = work / "qernel_family"
    run_dir = out / "run"
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "segments.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"segments": []}
    for steps in segments:
        if any(s["steps"] == steps for s in state["segments"]):
            continue
        first = not state["segments"]
        cmd = _qernel() + ["train", "--out", str(run_dir), "--quiet", "--steps", str(steps)]
        cmd += ["--preset", "moire-tiny", "--force", "--seed", str(seed)] if first else ["--resume"]
        _log(f"QERNEL family run to {steps} steps")
        t0 = _train_until(cmd, run_dir, out / "run.log", None)
        if first:
            state["launched"] = t0
            state["offset_s"] = _launch_offset(run_dir, t0)
        wall = _last_wall_time(run_dir)
        store = out / f"sample_{steps}.zarr"
        sample = _qernel() + ["sample", str(run_dir), "--out", str(store), "--quiet", "--seed", str(seed), "--records", "100"]
        for v in depths:
            sample += ["--depth", f"{v:g}"]
        subprocess.run(sample, cwd=ROOT, check=True, capture_output=True, text=True)
        observed = subprocess.run(_qernel() + ["observe", str(store), "--json"], cwd=ROOT, check=True, capture_output=True, text=True)
        state["segments"].append({"steps": steps, "wall_time_s": wall, "observe": json.loads(observed.stdout)})
        state_file.write_text(json.dumps(state, indent=1))


def _last_wall_time(run_dir: Path) -> float:
    """Wall time (s, train()'s clock) at the last stored step."""
    import zarr

    group = zarr.open_group(str(run_dir / "train.zarr"), mode="r")
    return float(group["wall_time"][-1])


def run(args: argparse.Namespace) -> None:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / "setup.json").write_text(json.dumps(vars(args) | {"started": time.time()}, indent=1, default=str))
    for v in args.depths:
        run_peer_leg(Path(args.peer), work, v, args.minutes, args.seed)
        run_qernel_single(work, v, args.minutes, args.seed, args.qernel_set or [])
    if args.family_segments:
        run_qernel_family(work, args.depths, args.family_segments, args.seed)
    _log("all legs done")


# ----------------------------------------------------------------------------- analysis


def load_peer(work: Path, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """(wall time since launch s, energy per electron meV) per peer iteration."""
    trace = np.loadtxt(work / f"peer_V{depth:g}" / "trace.tsv", comments="#", ndmin=2)
    return trace[:, 1], trace[:, 4]


def load_qernel(work: Path, depth: float) -> tuple[np.ndarray, np.ndarray]:
    """(wall time since launch s, energy per electron meV) per QERNEL step (mean over its walker groups)."""
    import zarr

    leg = work / f"qernel_V{depth:g}"
    meta = json.loads((leg / "done.json").read_text())
    group = zarr.open_group(str(leg / "run" / "train.zarr"), mode="r")
    accepted = np.asarray(group["accepted"][:]) == 1
    t = np.asarray(group["wall_time"][:]) + meta["offset_s"]
    e = np.asarray(group["energy"][:]).mean(axis=1)
    return t[accepted], e[accepted]


def trailing(t: np.ndarray, e: np.ndarray, at: float, window: float) -> tuple[float, float, int]:
    """Mean energy of the batches in (at − window, at], its blocked standard error, their number."""
    sel = (t > at - window) & (t <= at)
    x = e[sel]
    if x.size < 8:
        return float("nan"), float("nan"), int(x.size)
    blocks = np.array([b.mean() for b in np.array_split(x, 8)])
    return float(x.mean()), float(blocks.std(ddof=1) / np.sqrt(8)), int(x.size)


def first_time_at_or_below(t: np.ndarray, e: np.ndarray, target: float, window: float) -> float | None:
    """First wall time at which the trailing mean is ≤ target (None if never)."""
    for at in t:
        mean, _, n = trailing(t, e, at, window)
        if n >= 8 and mean <= target:
            return float(at)
    return None


def analyse(args: argparse.Namespace) -> None:
    work = Path(args.work)
    setup = json.loads((work / "setup.json").read_text())
    minutes = float(setup["minutes"])
    horizon = 60.0 * minutes
    window = args.window
    result: dict = {
        "benchmark": "time_to_energy",
        "system": {"n_electrons": N_ELECTRONS, "supercell": f"{CELLS}x{CELLS}", "filling": "2/3", "spin": "polarised",
                   "material": "default (a_M 8.031 nm, m* 0.35, eps 5, phi 45 deg)"},
        "walkers": WALKERS, "sweeps_per_step": SWEEPS, "minutes_per_run": minutes, "window_s": window,
        "peer": "mg607/PeriodicWave unchanged (its Psiformer + KFAC, float32) via ../shared/peer/run_pw.py",
        "qernel": "qernel train --preset moire-tiny (SPRING, float64) at V_min_meV = V_max_meV = V",
        "nproc": os.cpu_count(),
        "depths": [],
    }
    curves = {}
    for v in setup["depths"]:
        tp, ep = load_peer(work, v)
        tq, eq = load_qernel(work, v)
        curves[v] = (tp, ep, tq, eq)
        peer_e, peer_err, _ = trailing(tp, ep, horizon, window)
        q_e, q_err, _ = trailing(tq, eq, horizon, window)
        t_q = first_time_at_or_below(tq, eq, peer_e, window)
        t_p = first_time_at_or_below(tp, ep, q_e, window)
        result["depths"].append({
            "V_meV": v,
            "peer": {"energy_at_horizon_meV": peer_e, "error_meV": peer_err, "steps": int(tp.size),
                     "s_per_step_median": float(np.median(np.diff(tp))), "first_step_s": float(tp[0])},
            "qernel": {"energy_at_horizon_meV": q_e, "error_meV": q_err, "steps": int(tq.size),
                       "s_per_step_median": float(np.median(np.diff(tq))), "first_step_s": float(tq[0])},
            "qernel_time_to_peer_energy_s": t_q,
            "peer_time_to_qernel_energy_s": t_p,
            "ratio_qernel_time_to_peer_horizon": None if t_q is None else t_q / horizon,
        })
    family = work / "qernel_family" / "segments.json"
    if family.exists():
        fam = json.loads(family.read_text())
        points = []
        for seg in fam["segments"]:
            for d in seg["observe"]["depths"]:
                points.append({"steps": seg["steps"], "wall_s": seg["wall_time_s"] + fam["offset_s"],
                               "V_meV": d["V_meV"], "energy_meV": d["energy_meV"], "error_meV": d["energy_error_meV"]})
        result["family_run"] = {"command": "qernel train --preset moire-tiny (V 0-30 meV), evaluated by qernel sample + observe",
                                "points": points}
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    if args.plot:
        plot(curves, result, Path(args.plot), window, horizon)


def _trailing_curve(t: np.ndarray, e: np.ndarray, window: float) -> tuple[np.ndarray, np.ndarray]:
    grid = np.linspace(window, t.max(), 200)
    means = np.array([trailing(t, e, g, window)[0] for g in grid])
    return grid, means


def plot(curves: dict, result: dict, path: Path, window: float, horizon: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4.2), squeeze=False)
    family = result.get("family_run", {}).get("points", [])
    for ax, (v, (tp, ep, tq, eq)) in zip(axes[0], curves.items()):
        for t, e, colour, name in ((tp, ep, "tab:orange", "PeriodicWave (KFAC)"), (tq, eq, "tab:blue", "QERNEL, single depth")):
            gx, gy = _trailing_curve(t, e, window)
            ax.plot(gx / 60, gy, color=colour, label=f"{name}, {window:g} s trailing mean")
        fam = [p for p in family if abs(p["V_meV"] - v) < 1e-9]
        if fam:
            ax.errorbar([p["wall_s"] / 60 for p in fam], [p["energy_meV"] for p in fam], yerr=[p["error_meV"] for p in fam],
                        fmt="s", color="tab:green", label="QERNEL family run 0–30 meV (evaluated)")
        entry = next(d for d in result["depths"] if d["V_meV"] == v)
        ax.axhline(entry["peer"]["energy_at_horizon_meV"], color="tab:orange", ls=":", lw=1)
        lo = min(entry["peer"]["energy_at_horizon_meV"], entry["qernel"]["energy_at_horizon_meV"])
        ax.set_ylim(lo - 0.6, lo + 2.4)
        ax.axvline(horizon / 60, color="grey", lw=0.8)
        ax.set_xlabel("wall time since launch (min), 2-core CPU")
        ax.set_ylabel("E / N (meV)")
        ax.set_title(f"N = {N_ELECTRONS}, ν = 2/3, V = {v:g} meV")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the legs one after the other")
    r.add_argument("--peer", required=True, help="the shared peer harness (../shared/peer)")
    r.add_argument("--work", required=True, help="directory for the runs (outside the repository)")
    r.add_argument("--depths", type=float, nargs="+", default=[15.0, 25.0])
    r.add_argument("--minutes", type=float, default=20.0)
    r.add_argument("--family-segments", type=int, nargs="*", default=[100, 200, 400])
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--qernel-set", action="append", help="config override for QERNEL's single-depth legs (repeatable), e.g. pretrain.target=crystal")
    a = sub.add_parser("analyse", help="curves, crossing times, JSON and plot")
    a.add_argument("--work", required=True)
    a.add_argument("--json", required=True)
    a.add_argument("--plot", default=None)
    a.add_argument("--window", type=float, default=120.0, help="trailing window (s)")
    args = parser.parse_args()
    run(args) if args.command == "run" else analyse(args)


if __name__ == "__main__":
    main()
