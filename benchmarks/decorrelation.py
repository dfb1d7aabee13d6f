"""What the lattice hops buy: decorrelation of the sampling chains per unit of cost, with and without hops.

Each Metropolis sweep with ``sampler.lattice_hops`` evaluates log ψ twice (the
all-electron Gaussian move, then a single-electron hop to a neighbouring
moiré site); without hops once. This script samples a trained run at given
depths with variants of (hops, sweeps between records) and measures, per
variant and depth, the integrated autocorrelation time τ (Sokal window, τ = 1
for independent records; :func:`qernel_cli.observables.blocking.autocorrelation_time`)
of every walker's chain of

* the local energy per electron,
* the crystal order m² = 4⟨|ρ_K|²⟩/N² of the configuration,
* the crystal pattern Re Σ_{K₁..K₃} ρ_K / N (which of the three degenerate
  √3×√3 patterns the configuration is in: it changes only when electrons move
  between sites),

and the cost: log ψ evaluations per record and measured seconds per record.
The efficiency of a variant is 1/(τ × cost): the variant with the larger one
gives smaller error bars for the same time. Compare variants of equal cost
(hops with S sweeps against no hops with 2S sweeps) or use the seconds.

    python benchmarks/decorrelation.py RUN_DIR --depths 10,22,28 --out benchmarks/results/decorrelation-cpu.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from report import emit  # noqa: E402

VARIANTS = ((True, 10), (False, 20), (False, 10))
"""(lattice hops, sweeps between records): hops with 10 sweeps costs as much as no hops with 20."""


def _with_hops(run_dir: Path, hops: bool, where: Path) -> Path:
    """A copy of the run directory (config and checkpoint) whose sampler uses ``hops``."""
    from qernel_cli.stores.run_dir import CHECKPOINT_FILE, CONFIG_FILE

    copy = where / f"run-hops-{hops}"
    if copy.exists():
        return copy
    copy.mkdir()
    shutil.copy(run_dir / CHECKPOINT_FILE, copy / CHECKPOINT_FILE)
    text = (run_dir / CONFIG_FILE).read_text()
    if "lattice_hops = " not in text:
        raise SystemExit(f"{run_dir / CONFIG_FILE} has no sampler.lattice_hops")
    (copy / CONFIG_FILE).write_text(text.replace(f"lattice_hops = {str(not hops).lower()}", f"lattice_hops = {str(hops).lower()}"))
    return copy


def measure(run_dir: Path, depths_meV: list[float], walkers: int, records: int, burn_in: int, seed: int) -> dict:
    import jax
    import numpy as np

    from qernel_cli import configure_jax

    configure_jax()  # before the first computation
    from qernel_cli.lattice import Supercell
    from qernel_cli.observables.structure import crystal_order_per_sample
    from qernel_cli.observables.blocking import autocorrelation_time
    from qernel_cli.vmc.sampling import sample
    from qernel_cli.workflows.train import load_trained

    out: dict = {"benchmark": "decorrelation", "run_dir": str(run_dir), "depths_meV": depths_meV, "walkers": walkers,
                 "records": records, "burn_in_sweeps": burn_in, "variants": []}
    with tempfile.TemporaryDirectory() as tmp:
        for hops, sweeps in VARIANTS:
            run, state, _ = load_trained(_with_hops(run_dir, hops, Path(tmp)))
            assert run.settings.lattice_hops == hops
            n = run.config.n_electrons
            cell = Supercell(run.config.supercell.L1, run.config.supercell.L2)
            energy, positions, stamps = [], [], []

            def on_record(r, record):
                energy.append(np.asarray(record["total"]) / n)
                positions.append(np.asarray(record["positions"]))
                stamps.append(time.perf_counter())

            t0 = time.perf_counter()
            sample(run, state.params, state.walkers, np.asarray(depths_meV) / run.energy_unit_meV, walkers=walkers, records=records,
                   sweeps=sweeps, burn_in=burn_in, key=jax.random.PRNGKey(seed), on_record=on_record)
            energy, positions = np.stack(energy), np.stack(positions)  # (R, D, W), (R, D, W, n, 2)
            order = crystal_order_per_sample(positions, cell)
            pattern = np.real(np.sum(order.rho[..., :3], axis=-1)) / n
            per_record = float(np.median(np.diff(stamps[records // 4:])))  # after the compile of the first records
            evaluations = sweeps * (2 if hops else 1)
            rows = []
            for d, v in enumerate(depths_meV):
                taus = {name: autocorrelation_time(series[:, d]) for name, series in
                        (("energy", energy), ("m2", order.m2), ("pattern", pattern))}
                rows.append({"V_meV": v, "tau_records": taus,
                             "efficiency_per_evaluation": {k: 1.0 / (t * evaluations) for k, t in taus.items()},
                             "efficiency_per_second": {k: 1.0 / (t * per_record) for k, t in taus.items()}})
            out["variants"].append({"lattice_hops": hops, "sweeps_per_record": sweeps, "log_psi_evaluations_per_record": evaluations,
                                    "seconds_per_record": per_record, "total_s": time.perf_counter() - t0, "depths": rows})
            print(f"hops={hops} sweeps={sweeps}: {per_record:.3f} s/record; " + "; ".join(
                f"V={r['V_meV']:g}: τ E {r['tau_records']['energy']:.1f} m² {r['tau_records']['m2']:.1f} pattern {r['tau_records']['pattern']:.1f}"
                for r in rows), file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a trained run directory")
    parser.add_argument("--depths", default="10,22,28", help="depths in meV, comma-separated")
    parser.add_argument("--walkers", type=int, default=256)
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--burn-in", type=int, default=100, help="sweeps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = measure(args.run_dir, [float(v) for v in args.depths.split(",")], args.walkers, args.records, args.burn_in, args.seed)
    emit(result, args.out, indent=2)


if __name__ == "__main__":
    main()
