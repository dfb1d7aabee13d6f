"""Benchmark the 2D Ewald energy on the ν = 2/3 house family (3×3 … 15×15 moiré cells).

For each supercell: build an EwaldSum (default κ for that N), jit(vmap) it over a
batch of random walkers, and report compile time and the median cost per
configuration (after block_until_ready). Optionally the same for the forces
(jit(vmap(grad))).

    python benchmarks/ewald.py --json          # full table, JSON on stdout
    python benchmarks/ewald.py --quick --json  # tiny smoke run (for tests)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time

from qernel_cli import configure_jax

configure_jax()

import jax  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from qernel_cli.hamiltonian.ewald import EwaldSum  # noqa: E402
from qernel_cli.lattice import Supercell  # noqa: E402

FAMILY = [(3, 6), (6, 24), (9, 54), (12, 96), (15, 150)]  # (L, N) at ν = 2/3


def _time(fn, x, repeats: int) -> tuple[float, float]:
    """(compile + first call seconds, median seconds per later call)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(x))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def run(batch: int, repeats: int, family, grad: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for L, n in family:
        supercell = Supercell(L, L)
        start = time.perf_counter()
        ewald = EwaldSum(supercell.cell, n_electrons=n)
        build_s = time.perf_counter() - start
        walkers = jnp.asarray(rng.uniform(size=(batch, n, 2)) @ supercell.cell)

        energy = jax.jit(jax.vmap(lambda x: ewald(x)))
        compile_s, per_call = _time(energy, walkers, repeats)
        row = {
            "L": L,
            "n_electrons": n,
            "kappa": float(ewald.kappa),
            "kappa_sqrt_area": float(ewald.kappa * np.sqrt(ewald.area)),
            "n_images": ewald.n_images,
            "n_gvectors": ewald.n_gvectors,
            "gvector_grid": list(ewald.weight_grid.shape),
            "build_s": round(build_s, 4),
            "compile_s": round(compile_s, 3),
            "us_per_config": round(per_call / batch * 1e6, 2),
            "mean_energy_per_electron": float(jnp.mean(energy(walkers))) / n,
        }
        if grad:
            forces = jax.jit(jax.vmap(jax.grad(lambda x: ewald(x))))
            compile_s, per_call = _time(forces, walkers, repeats)
            row["grad_compile_s"] = round(compile_s, 3)
            row["grad_us_per_config"] = round(per_call / batch * 1e6, 2)
        rows.append(row)
        print(f"N={n:4d}  {row['us_per_config']:9.2f} µs/config", file=sys.stderr)
    device = jax.devices()[0]
    return {
        "benchmark": "ewald_energy",
        "units": "energies in 1/a_M (moiré units, U = 1); timings per configuration",
        "batch": batch,
        "repeats": repeats,
        "dtype": "float64",
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "n_devices": jax.device_count(),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "results": rows,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON (default: also JSON, indented)")
    parser.add_argument("--quick", action="store_true", help="small batch, N = 6 and 24 only")
    parser.add_argument("--batch", type=int, default=None, help="walkers per batch (default 256; 8 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 7; 2 with --quick)")
    parser.add_argument("--no-grad", action="store_true", help="skip the force (jax.grad) timings")
    args = parser.parse_args(argv)
    family = FAMILY[:2] if args.quick else FAMILY
    batch = args.batch or (8 if args.quick else 256)
    repeats = args.repeats or (2 if args.quick else 7)
    result = run(batch, repeats, family, grad=not args.no_grad)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
