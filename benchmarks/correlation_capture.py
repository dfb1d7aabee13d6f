"""Captured correlation energy: VMC against exact diagonalisation on small systems.

For a few small spin-polarised systems (N = 2, 3, 4 electrons; different
supercells, materials, depths; weak and strong coupling) this script runs

* ``qernel exact`` (band basis, every momentum sector, bands 1 … B, power-law
  extrapolation): the exact energy E_0 ± its extrapolation error and the best
  single Slater determinant of band orbitals E_det;
* ``qernel train`` on the same system at that single depth
  (``V_min_meV = V_max_meV``) with the moire-tiny protocol plus the overrides
  given (``--set``), timed from launch to exit (compilation, pre-training,
  training and the final evaluation included);

and reports the captured fraction of the correlation energy

    f = (E_det − E_VMC) / (E_det − E_0),
    σ_f = √(σ_VMC² + f² σ_0²) / (E_det − E_0),

with the VMC energy the mean of the final evaluation's walker groups (equal
in size, each with its blocked error; a single-depth run evaluates every
group at V), and the
variational check E_VMC ≥ E_0 − 3σ. Energies are per electron in meV.

    python benchmarks/correlation_capture.py run --work /tmp/cc [--systems A B] [--set training.steps=2000 ...]
    python benchmarks/correlation_capture.py family --work /tmp/cc --system B --range 0 30 [--set ...]
    python benchmarks/correlation_capture.py analyse --work /tmp/cc --json benchmarks/results/correlation-capture-cpu.json

``family`` trains one model over a range of depths on a system and runs
``qernel exact`` at the depths of its final evaluation (the stratum centres),
for the same comparison depth by depth. ``run`` skips the exact results and trainings already in ``--work`` (delete a
``vmc_<name>`` folder to retrain it); the protocol's overrides are stored with
each training and printed by ``analyse``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class System:
    """One small system: a label, moire-tiny overrides, its depth (meV) and the exact sweep's band count."""

    label: str
    overrides: tuple[str, ...]
    depth: float
    bands: int


def _system(L1: int, L2: int, n: int, filling: str, **material: float) -> tuple[str, ...]:
    out = [f"supercell.L1={L1}", f"supercell.L2={L2}", f"electrons.n_up={n}", f"electrons.filling={filling}"]
    return tuple(out + [f"material.{k}={v:g}" for k, v in material.items()])


SYSTEMS = {
    "A": System("N = 2 on 2×1, WSe2/WS2 (a_M 8.03 nm, m* 0.35, ε 5, φ 45°), V = 15 meV", _system(2, 1, 2, "1"), 15.0, 24),
    "B": System("N = 3 on 2×2, weak coupling (a_M 6 nm, m* 0.5, ε 10, φ 60°), V = 8 meV",
                _system(2, 2, 3, "3/4", a_M_nm=6.0, m_star=0.5, epsilon=10.0, phi_deg=60.0), 8.0, 16),
    "C": System("N = 3 on 3×3, ν = 1/3, strong coupling (a_M 10 nm, m* 0.4, ε 4, φ 30°), V = 15 meV",
                _system(3, 3, 3, "1/3", a_M_nm=10.0, m_star=0.4, epsilon=4.0, phi_deg=30.0), 15.0, 12),
    "D": System("N = 4 on 2×2, ν = 1 (a_M 8.03 nm, m* 0.35, ε 8, φ 45°), V = 20 meV",
                _system(2, 2, 4, "1", epsilon=8.0), 20.0, 10),
}


def _qernel() -> list[str]:
    return [sys.executable, "-m", "qernel_cli"]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _exact(out: Path, system: System, depths: list[float]) -> None:
    """``qernel exact`` on ``system`` at ``depths`` (meV) into ``out``."""
    sets = [a for o in system.overrides for a in ("--set", o)]
    cmd = _qernel() + ["exact", "--preset", "moire-tiny", *sets, "--depths", ",".join(f"{v!r}" for v in depths),
                       "--bands", str(system.bands), "--out", str(out), "--quiet"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


SINGLE_BRANCH = ("model.envelope_momenta=fixed", "pretrain.target=bloch")
"""The single run from the Bloch start that docs/validation.md measured (the preset now trains two branches);
``--set`` overrides given after it win."""


def _train(work: Path, name: str, sets: list[str], protocol: list[str]) -> None:
    """``qernel train`` into ``work/vmc_<name>``, timed from launch to exit (stored with the protocol in vmc_<name>.json)."""
    run_dir = work / f"vmc_{name}"
    sets = [*SINGLE_BRANCH, *sets]
    cmd = _qernel() + ["train", "--preset", "moire-tiny", *[a for o in sets for a in ("--set", o)], "--out", str(run_dir)]
    t0 = time.time()
    with open(work / f"vmc_{name}.log", "w") as log:
        done = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name}: training failed ({done.returncode}); see {work / f'vmc_{name}.log'}")
    (work / f"vmc_{name}.json").write_text(json.dumps({"launch_to_exit_s": time.time() - t0, "protocol": protocol, "cmd": cmd}))
    _log(f"{name}: done in {(time.time() - t0) / 60:.1f} min")


def run_exact(work: Path, name: str, system: System) -> None:
    out = work / f"exact_{name}.json"
    if not out.exists():
        _log(f"{name}: qernel exact, {system.bands} bands")
        _exact(out, system, [system.depth])


def run_vmc(work: Path, name: str, system: System, protocol: list[str]) -> None:
    if (work / f"vmc_{name}" / "summary.json").exists():
        return
    _log(f"{name}: qernel train {' '.join(protocol) or '(moire-tiny protocol)'}")
    sets = [f"hamiltonian.V_min_meV={system.depth:g}", f"hamiltonian.V_max_meV={system.depth:g}", *system.overrides, *protocol]
    _train(work, name, sets, protocol)


def run_family(args: argparse.Namespace) -> None:
    """One family model over [V_min, V_max] on a system, then ``qernel exact`` at its evaluation depths."""
    work, system, name = Path(args.work).resolve(), SYSTEMS[args.system], f"family_{args.system}"
    run_dir = work / f"vmc_{name}"
    work.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "summary.json").exists():
        _log(f"{name}: qernel train over {args.range[0]:g}–{args.range[1]:g} meV {' '.join(args.set)}")
        sets = [f"hamiltonian.V_min_meV={args.range[0]:g}", f"hamiltonian.V_max_meV={args.range[1]:g}", *system.overrides, *args.set]
        _train(work, name, sets, args.set)
    out = work / f"exact_{name}.json"
    if not out.exists():
        depths = [d["V_meV"] for d in json.loads((run_dir / "summary.json").read_text())["depths"]]
        _log(f"{name}: qernel exact at {', '.join(f'{v:g}' for v in depths)} meV")
        _exact(out, system, depths)


def family_rows(work: Path) -> list[dict]:
    """Per depth of each family run in ``work``: the family model's energy against the exact one."""
    rows = []
    for summary_path in sorted(work.glob("vmc_family_*/summary.json")):
        name = summary_path.parent.name.removeprefix("vmc_")
        exact_path = work / f"exact_{name}.json"
        if not exact_path.exists():
            continue
        summary = json.loads(summary_path.read_text())
        meta = json.loads((work / f"vmc_{name}.json").read_text())
        exact_depths = json.loads(exact_path.read_text())["depths"]
        for d, x in zip(summary["depths"], exact_depths):
            if abs(d["V_meV"] - x["V_meV"]) > 1e-6:
                raise SystemExit(f"{name}: depths of the family run and of the exact result differ")
            exact, exact_err = x["extrapolated_per_electron_meV"], x["extrapolation_error_meV"]
            f, f_err = captured(x["determinant_per_electron_meV"], d["energy_per_electron_meV"], d["energy_error_meV"], exact, exact_err)
            rows.append({
                "system": name.removeprefix("family_"), "V_meV": d["V_meV"],
                "exact_meV": exact, "exact_error_meV": exact_err, "determinant_meV": x["determinant_per_electron_meV"],
                "vmc_meV": d["energy_per_electron_meV"], "vmc_error_meV": d["energy_error_meV"],
                "captured_fraction": f, "captured_fraction_error": f_err,
                "vmc_steps": summary["steps"], "launch_to_exit_min": meta["launch_to_exit_s"] / 60.0, "protocol": meta["protocol"],
                "resolved": trained_protocol(summary_path.parent), "warnings": summary["warnings"],
            })
    return rows


def run(args: argparse.Namespace) -> None:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for name in args.systems:
        run_exact(work, name, SYSTEMS[name])
    for name in args.systems:
        run_vmc(work, name, SYSTEMS[name], list(args.set))


def captured(det: float, vmc: float, vmc_err: float, exact: float, exact_err: float) -> tuple[float, float]:
    """f = (E_det − E_VMC)/(E_det − E_0) and its error (see the module docstring)."""
    ec = det - exact
    f = (det - vmc) / ec
    return f, math.sqrt(vmc_err**2 + (f * exact_err) ** 2) / ec


def combined(depths: list[dict]) -> tuple[float, float]:
    """Mean of the final evaluation's walker groups, equal in size (a single-depth run evaluates every group at V), and its error."""
    if len({d["V_meV"] for d in depths}) != 1:
        raise SystemExit("a single-depth run was expected")
    n = len(depths)
    mean = sum(d["energy_per_electron_meV"] for d in depths) / n
    return mean, math.sqrt(sum(d["energy_error_meV"] ** 2 for d in depths)) / n


def trained_protocol(run_dir: Path) -> dict:
    """The settings of a training that decide how close it gets (from its stored config): optimiser, pre-training, Jastrows, walkers."""
    config = tomllib.loads((run_dir / "config.toml").read_text())
    model = config["model"]
    return {
        "optimizer": config["optimizer"],
        "pretrain": config["pretrain"],
        "walkers": config["sampler"]["walkers"],
        "model": {k: model[k] for k in ("layers", "width", "determinants", "harmonics", "jastrow", "pair_jastrow_qmax", "radial_jastrow") if k in model},
    }


def analyse(args: argparse.Namespace) -> dict:
    work = Path(args.work).resolve()
    rows = []
    for name, system in SYSTEMS.items():
        exact_path, summary_path = work / f"exact_{name}.json", work / f"vmc_{name}" / "summary.json"
        if not (exact_path.exists() and summary_path.exists()):
            continue
        x = json.loads(exact_path.read_text())["depths"][0]
        exact = x["extrapolated_per_electron_meV"]
        exact_err = x["extrapolation_error_meV"]
        if exact is None:
            exact, exact_err = x["bound_per_electron_meV"], float("nan")
        summary = json.loads(summary_path.read_text())
        meta = json.loads((work / f"vmc_{name}.json").read_text())
        vmc, vmc_err = combined(summary["depths"])
        f, f_err = captured(x["determinant_per_electron_meV"], vmc, vmc_err, exact, exact_err)
        rows.append({
            "system": name,
            "label": system.label,
            "overrides": list(system.overrides),
            "V_meV": system.depth,
            "exact_bands": x["bands"][-1]["n_bands"],
            "exact_bound_meV": x["bound_per_electron_meV"],
            "exact_meV": exact,
            "exact_error_meV": exact_err,
            "determinant_meV": x["determinant_per_electron_meV"],
            "correlation_meV": x["determinant_per_electron_meV"] - exact,
            "vmc_meV": vmc,
            "vmc_error_meV": vmc_err,
            "vmc_above_exact_sigma": (vmc - exact) / math.hypot(vmc_err, exact_err if exact_err == exact_err else 0.0),
            "captured_fraction": f,
            "captured_fraction_error": f_err,
            "vmc_steps": summary["steps"],
            "launch_to_exit_min": meta["launch_to_exit_s"] / 60.0,
            "protocol": meta["protocol"],
            "resolved": trained_protocol(summary_path.parent),
            "warnings": summary["warnings"],
        })
    family = family_rows(work)
    result = {
        "benchmark": "correlation_capture",
        "machine": {"cpus": os.cpu_count()},
        "energies": "per electron, meV",
        "systems": rows,
        "family": family,
    }
    for r in rows:
        print(
            f"{r['system']}  exact {r['exact_meV']:.4f} ± {r['exact_error_meV']:.4f}  det {r['determinant_meV']:.4f}  "
            f"VMC {r['vmc_meV']:.4f} ± {r['vmc_error_meV']:.4f}  captured {100 * r['captured_fraction']:.1f} ± "
            f"{100 * r['captured_fraction_error']:.1f} %  ({r['launch_to_exit_min']:.1f} min, {r['vmc_steps']} steps)"
        )
    for r in family:
        print(
            f"family {r['system']} V = {r['V_meV']:6.3f}  exact {r['exact_meV']:.4f} ± {r['exact_error_meV']:.4f}  det {r['determinant_meV']:.4f}  "
            f"VMC {r['vmc_meV']:.4f} ± {r['vmc_error_meV']:.4f}  captured {100 * r['captured_fraction']:.1f} ± {100 * r['captured_fraction_error']:.1f} %"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--work", required=True)
    r.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    r.add_argument("--set", action="append", default=[], help="protocol override on top of moire-tiny (repeatable)")
    f = sub.add_parser("family")
    f.add_argument("--work", required=True)
    f.add_argument("--system", default="B", choices=list(SYSTEMS))
    f.add_argument("--range", nargs=2, type=float, default=[0.0, 30.0], metavar=("V_MIN", "V_MAX"))
    f.add_argument("--set", action="append", default=[], help="protocol override on top of moire-tiny (repeatable)")
    a = sub.add_parser("analyse")
    a.add_argument("--work", required=True)
    a.add_argument("--json")
    args = parser.parse_args()
    {"run": run, "family": run_family, "analyse": analyse}[args.command](args)


if __name__ == "__main__":
    main()
