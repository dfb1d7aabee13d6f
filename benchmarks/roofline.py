"""Floors of the step's parts on this machine: XLA's flop count of each part over the matrix-multiply rate measured in the same run.

No code runs faster than the machine's best matrix-multiply rate on every
flop it must do, so ``flops / peak rate`` is a lower bound on each part's
time that holds for any implementation of the same arithmetic (a floor, not
an estimate: both numbers are measured here). This script measures, in one
process:

* the machine's rates: square float32 and float64 matrix products (n = 2048,
  the peak), and the float32 product with the shape that dominates the
  trunk's jet ((walkers · 2N · N) × width by width × width, width 64: the
  rate that part could reach if it were nothing but such products);
* per system (the reference model of ``benchmarks/run.py`` on the ν = 2/3
  presets, as ``components.py``): XLA's flop count per walker of log ψ, of
  the trunk, of the trunk's jet, of the whole forward Laplacian with gradient
  and of the log-derivatives ∂ log ψ/∂θ, and per step of SPRING's kernel
  O Oᵀ (2 · (2 walkers)² · P);
* the floors: each count over the float32 peak; the step's floor = sweeps ×
  walkers × log ψ (twice per sweep with lattice hops) + walkers × (Laplacian +
  log-derivatives) + kernel, over the same peak;
* the kernel as BLAS's symmetric rank-k update (``ssyrk``: one triangle, half
  the flops of the general product XLA counts), the fastest way to form it
  on this CPU.

With ``--components`` (a JSON of ``components.py`` from the same machine) the
measured times are joined and each part's ``measured / floor`` is reported:
how far it runs from the machine's best rate.

    python benchmarks/roofline.py --cases 6 24 --components benchmarks/results/components-cpu.json \\
        --out benchmarks/results/roofline-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from components import CASES, STEP_WALKERS, _timed, reference_system  # noqa: E402
from report import emit  # noqa: E402

BATCH = 16
"""Walkers of the programs whose flops are counted (counts are per walker)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def matmul_rate(m: int, k: int, n: int, dtype: str, repeats: int = 5) -> float:
    """Measured rate (flop/s) of one (m × k) @ (k × n) product in ``dtype``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.normal(size=(m, k)), dtype=dtype)
    b = jnp.asarray(rng.normal(size=(k, n)), dtype=dtype)
    _, seconds = _timed(jax.jit(jnp.matmul), a, b, repeats=repeats)
    return 2.0 * m * k * n / seconds


def symmetric_kernel_s(rows: int, columns: int, repeats: int = 3) -> float:
    """Measured seconds of the cheapest product that yields O Oᵀ for a (rows × columns) float32 O:
    BLAS's symmetric rank-k update (ssyrk, one triangle: half the flops of a general product)."""
    import numpy as np
    import scipy.linalg.blas

    a = np.asarray(np.random.default_rng(0).normal(size=(rows, columns)), dtype=np.float32, order="F")
    scipy.linalg.blas.ssyrk(1.0, a)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        scipy.linalg.blas.ssyrk(1.0, a)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def flops_of(fn, *args) -> float:
    """XLA's flop count of ``jax.jit(fn)(*args)``."""
    from qernel_cli.model.summary import compiled_cost

    return float(compiled_cost(fn, *args).get("flops", float("nan")))


def count(n: int, seed: int = 0) -> dict:
    """Flops per walker of each part of the reference model at N = n, and of the SPRING kernel per step."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qernel_cli.model import parameter_count
    from qernel_cli.vmc import spring
    from qernel_cli.vmc.mcmc import Walkers
    from qernel_cli.vmc.step import log_derivatives

    walkers = STEP_WALKERS[n]
    run, _, x, c = reference_system(n, BATCH, np.random.default_rng(seed))
    params, static = run.params, run.static
    model = eqx.combine(params, static)

    def m(p):
        return eqx.combine(p, static)

    parts = {
        "log_psi": lambda p, xi, ci: m(p)(xi, ci),
        "trunk": lambda p, xi, ci: m(p).hidden(xi, ci),
        "trunk_jet": lambda p, xi, ci: m(p).trunk_jet(xi, ci),
        "log_psi_laplacian": lambda p, xi, ci: m(p).forward_laplacian(xi, ci),
    }
    per_walker = {}
    for name, fn in parts.items():
        per_walker[name] = flops_of(jax.vmap(fn, in_axes=(None, 0, 0)), params, x, c) / BATCH
        _log(f"  N={n} {name}: {per_walker[name] / 1e6:.2f} MFLOP/walker")
    matmul = jnp.float32 if run.settings.matmul_dtype == "float32" else jnp.float64
    few = Walkers(positions=x[None], conditions=c[:1], log_abs=jnp.zeros((1, BATCH)), width=jnp.ones(1))
    per_walker["log_derivatives"] = flops_of(lambda p, w: log_derivatives(p, static, w, 0, matmul), params, few) / BATCH
    _log(f"  N={n} log_derivatives: {per_walker['log_derivatives'] / 1e6:.2f} MFLOP/walker")
    P = parameter_count(model)
    rows = 2 * walkers
    per_step = {
        "spring_kernel": 2.0 * rows * rows * P,
        # a sweep evaluates log ψ once for the all-electron move and once more for the lattice hop
        "sweeps": run.settings.mcmc_steps * (2 if run.settings.lattice_hops else 1) * walkers * per_walker["log_psi"],
        "local_energies": walkers * per_walker["log_psi_laplacian"],
        "log_derivatives": walkers * per_walker["log_derivatives"],
    }
    # XLA's own count of the kernel at a smaller row count checks the closed form above.
    small = 32
    blocks = [jnp.ones((1, small // 2, 2, P), jnp.float32)]
    counted = flops_of(lambda j: spring.centred_kernel(spring._rows(j, jnp.float32), 1), blocks)
    return {
        "n_electrons": n,
        "preset": CASES[n],
        "parameters": P,
        "step_walkers": walkers,
        "sweeps_per_step": run.settings.mcmc_steps,
        "trunk_width": run.config.model.width,
        "flops_per_walker": per_walker,
        "flops_per_step": per_step,
        "kernel_closed_form_check": {"rows": small, "xla": counted, "closed_form": 2.0 * small * small * P},
    }


def floors(system: dict, peak: float, measured: dict | None) -> dict:
    """Seconds each part cannot go below at ``peak`` flop/s; with ``measured`` (a components.py case), measured / floor."""
    walkers = system["step_walkers"]
    per_walker = {k: v / peak for k, v in system["flops_per_walker"].items()}
    per_step = {k: v / peak for k, v in system["flops_per_step"].items()}
    per_step["step"] = sum(per_step.values())
    out = {"per_walker_s": per_walker, "per_step_s": per_step}
    if measured is not None and measured.get("step_walkers") == walkers:
        mw, parts = measured["per_walker_s"], measured["step_parts_s"]
        out["measured_over_floor"] = {k: mw[k] / per_walker[k] for k in per_walker}
        step_times = {
            "spring_kernel": measured["per_step_s"]["spring_kernel"],
            "sweeps": parts["sweeps"],
            "local_energies": parts["local_energies"],
            "log_derivatives": parts["log_derivatives"],
            "step": measured["per_step_s"]["step"],
        }
        out["measured_step_over_floor"] = {k: step_times[k] / per_step[k] for k in step_times}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[6, 24], choices=sorted(CASES))
    parser.add_argument("--components", type=Path, help="components.py JSON of this machine, to join measured times")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    import jax

    from qernel_cli import configure_jax

    configure_jax()  # before the first computation

    measured = {}
    if args.components:
        measured = {case["n_electrons"]: case for case in json.loads(args.components.read_text())["cases"]}
    report: dict = {
        "benchmark": "roofline",
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "loadavg_at_start": os.getloadavg(),
        "rates_flop_per_s": {},
        "systems": [],
    }
    rates = report["rates_flop_per_s"]
    rates["float32_square_2048"] = matmul_rate(2048, 2048, 2048, "float32")
    rates["float64_square_2048"] = matmul_rate(2048, 2048, 2048, "float64")
    _log(f"peak float32 {rates['float32_square_2048'] / 1e9:.1f} GFLOP/s, float64 {rates['float64_square_2048'] / 1e9:.1f}")
    peak = max(rates.values())
    for n in args.cases:
        _log(f"N = {n}")
        system = count(n)
        width = system["trunk_width"]
        key = f"float32_trunk_jet_shape_{n}"
        rates[key] = matmul_rate(BATCH * 2 * n * n, width, width, "float32")
        _log(f"  {key}: {rates[key] / 1e9:.1f} GFLOP/s")
        system["floors_at_peak"] = floors(system, peak, measured.get(n))
        rows = 2 * system["step_walkers"]
        system["spring_kernel_ssyrk_s"] = symmetric_kernel_s(rows, system["parameters"])
        _log(f"  ssyrk {rows} × {system['parameters']}: {system['spring_kernel_ssyrk_s']:.3f} s")
        report["systems"].append(system)
    report["peak_flop_per_s"] = max(v for k, v in rates.items() if "square" in k)
    report["loadavg_at_end"] = os.getloadavg()
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
