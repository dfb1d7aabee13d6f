"""The family claim, tested: one model over all depths against single-depth runs with the same compute per depth.

A family run of a preset trains ``training.depths_per_step`` groups of
``sampler.walkers / depths_per_step`` walkers, one group per depth stratum,
for ``training.steps`` steps. At each of a few test depths this script trains
a single-depth run (``V_min_meV = V_max_meV``) with exactly the compute one
stratum gets in the family run: one group of the same walkers for the same
steps, with the same protocol (both branches, the lower one counts). Both are
then sampled at the test depth with the same number of local energies
(the family's phase diagram: its walkers × records; the single-depth run:
its own walkers, more records), so the two energies have comparable errors.

    python benchmarks/family_vs_single.py run --family RUN --family-pd PD --depths 4 16 28 --work /tmp/fvs [--set ...]
    python benchmarks/family_vs_single.py analyse --family RUN --family-pd PD --work /tmp/fvs --json benchmarks/results/family-vs-single-moire-tiny-cpu.json

``RUN`` is the family's (two-branch) run directory and ``PD`` its
``qernel phasediagram`` output, sampled at least at the test depths. The
JSON gives, per depth, both lower-branch energies per electron (meV) with
their errors, the difference in standard errors (positive: the family is
higher), and the wall time of every training and sampling, from which the
cost of a 16-depth phase diagram by the family model and by 16 single-depth
runs follows.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _qernel(*args: str, log: Path) -> float:
    """Run ``qernel ARGS`` (output to ``log``); wall seconds from launch to exit."""
    t0 = time.time()
    with open(log, "w") as out:
        done = subprocess.run([sys.executable, "-m", "qernel_cli", *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode:
        raise SystemExit(f"qernel {' '.join(args[:2])} failed ({done.returncode}); see {log}")
    return time.time() - t0


def _family_config(family: Path) -> dict:
    return tomllib.loads((family / "branches.toml").read_text())


def _lower(row: dict) -> tuple[float, float, str]:
    """(E/N, error, branch) of the lower branch at one phase-diagram depth (the lower mean when undecided)."""
    liquid = (row["liquid_energy_meV"], row["liquid_energy_error_meV"], "liquid")
    crystal = (row["crystal_energy_meV"], row["crystal_energy_error_meV"], "crystal")
    return min(liquid, crystal)


def run(args: argparse.Namespace) -> None:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    family = Path(args.family).resolve()
    cfg = _family_config(family)
    groups = cfg["training"]["depths_per_step"]
    walkers = cfg["sampler"]["walkers"] // groups
    pd_records = args.records * (cfg["sampler"]["walkers"] // walkers)
    timings = {}
    for v in args.depths:
        name = f"single_{v:g}"
        run_dir = work / name
        sets = [f"hamiltonian.V_min_meV={v:g}", f"hamiltonian.V_max_meV={v:g}", f"sampler.walkers={walkers}", "training.depths_per_step=1", *args.set]
        if not (run_dir / "summary.json").exists():
            print(f"{name}: qernel train, {walkers} walkers, {cfg['training']['steps']} steps", flush=True)
            timings[f"{name}_train_s"] = _qernel(
                "train", "--preset", str(family / "branches.toml"), *[a for s in sets for a in ("--set", s)], "--out", str(run_dir), "--quiet",
                log=work / f"{name}-train.log",
            )
        if not (run_dir / "pd" / "phasediagram.json").exists():
            print(f"{name}: qernel phasediagram at {v:g} meV, {pd_records} records of {walkers} walkers", flush=True)
            timings[f"{name}_sample_s"] = _qernel(
                "phasediagram", str(run_dir), "--depths", f"{v:g}", "--records", str(pd_records), "--out", str(run_dir / "pd"), "--quiet",
                log=work / f"{name}-pd.log",
            )
    old = json.loads((work / "timings.json").read_text()) if (work / "timings.json").exists() else {}
    (work / "timings.json").write_text(json.dumps(old | timings, indent=2))


def analyse(args: argparse.Namespace) -> None:
    work = Path(args.work).resolve()
    family = Path(args.family).resolve()
    family_pd = json.loads((Path(args.family_pd) / "phasediagram.json").read_text())
    rows = {round(r["V_meV"], 6): r for r in family_pd["depths"]}
    timings = json.loads((work / "timings.json").read_text())
    family_train_s = sum(json.loads((family / b / "summary.json").read_text())["wall_time_s"] for b in ("liquid", "crystal"))
    depths = []
    for single in sorted(work.glob("single_*/pd/phasediagram.json"), key=lambda p: float(p.parts[-3].split("_")[1])):
        s = json.loads(single.read_text())["depths"][0]
        v = s["V_meV"]
        e_s, err_s, branch_s = _lower(s)
        e_f, err_f, branch_f = _lower(rows[round(v, 6)])
        sigma = math.hypot(err_s, err_f)
        name = single.parts[-3]
        train_s = sum(json.loads((single.parent.parent / b / "summary.json").read_text())["wall_time_s"] for b in ("liquid", "crystal"))
        depths.append({
            "V_meV": v,
            "family_energy_meV": e_f, "family_energy_error_meV": err_f, "family_branch": branch_f,
            "single_energy_meV": e_s, "single_energy_error_meV": err_s, "single_branch": branch_s,
            "family_minus_single_meV": e_f - e_s, "family_minus_single_sigma": (e_f - e_s) / sigma,
            "single_train_wall_s": train_s, "single_train_launch_to_exit_s": timings.get(f"{name}_train_s"),
            "single_sample_launch_to_exit_s": timings.get(f"{name}_sample_s"),
        })
    n_grid = len(family_pd["depths"])
    single_train = sum(d["single_train_wall_s"] for d in depths) / max(len(depths), 1)
    result = {
        "family_run": str(family),
        "family_phase_diagram": str(args.family_pd),
        "definition": "single-depth run = one stratum's compute of the family run (same walkers per group and steps, both branches); "
                      "energies: the lower branch's, sampled with the same number of local energies; sigma = hypot of both errors",
        "depths": depths,
        "family_train_wall_s": family_train_s,
        "phase_diagram_depths": n_grid,
        "cost_16_single_depth_runs_train_wall_s": 16 * single_train,
        "cost_family_train_wall_s": family_train_s,
        "within_2_sigma_or_lower": all(d["family_minus_single_sigma"] <= 2.0 for d in depths),
    }
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "analyse"):
        p = sub.add_parser(name)
        p.add_argument("--family", required=True, help="the family's two-branch run directory")
        p.add_argument("--family-pd", required=True, help="its qernel phasediagram output directory")
        p.add_argument("--work", required=True)
        if name == "run":
            p.add_argument("--depths", type=float, nargs="+", required=True, help="test depths (meV), on the family's phase-diagram grid")
            p.add_argument("--records", type=int, default=100, help="records per depth of the family's phase diagram")
            p.add_argument("--set", action="append", default=[], help="extra overrides of the single-depth runs")
        else:
            p.add_argument("--json")
    args = parser.parse_args()
    {"run": run, "analyse": analyse}[args.command](args)


if __name__ == "__main__":
    main()
