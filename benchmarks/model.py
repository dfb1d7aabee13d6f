"""Wavefunction cost per preset: parameters, FLOPs, compile time, time per walker.

For each preset's model (``qernel_cli.config.resolve(name)``, built by
``make_wavefunction``) this measures, on the default JAX device:

* parameter count and XLA's FLOP estimate of one forward pass (one configuration);
* compile time (lower + compile, ahead of time) of the batched forward pass and
  of the batched forward pass + folx forward Laplacian + gradient
  (``hamiltonian.local_energy.laplacian_and_gradient(..., method="forward")``);
* the median wall time per walker of each (jit, vmap over walkers that each
  carry their own c, ``block_until_ready``).

Usage: ``python benchmarks/model.py [--json] [--presets moire-tiny moire54 ...]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import qernel_cli  # noqa: E402,F401  (enables float64)
from qernel_cli.config import resolve  # noqa: E402
from qernel_cli.hamiltonian.local_energy import laplacian_and_gradient  # noqa: E402
from qernel_cli.model import forward_flops, make_wavefunction, parameter_breakdown, parameter_count  # noqa: E402

# (walkers for the forward pass, walkers for forward + Laplacian, timed repeats of each)
DEFAULT_PLAN = {
    "moire-tiny": (64, 64, (7, 5)),
    "moire24": (32, 16, (5, 3)),
    "moire54": (16, 8, (5, 2)),
    "moire96": (8, 2, (3, 1)),
    "moire150": (8, 2, (3, 1)),
}


def _timed(fn, *args, repeats: int) -> tuple[float, list[float]]:
    """Median wall time of ``fn(*args)`` over ``repeats`` calls, after one warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def _compile(fn, *args):
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def benchmark_preset(
    name: str,
    *,
    forward_walkers: int,
    laplacian_walkers: int,
    repeats: tuple[int, int],
    top_k: int | None = None,
    laplacian: bool = True,
    shared_condition: bool = False,
    seed: int = 0,
) -> dict:
    config = resolve(name)
    start = time.perf_counter()
    model = make_wavefunction(config, jax.random.key(seed), top_k=top_k)
    build_s = time.perf_counter() - start
    params, static = eqx.partition(model, eqx.is_array)
    material = config.material_units
    v_lo = material.depth_to_moire(config.hamiltonian.V_min_meV)
    v_hi = material.depth_to_moire(config.hamiltonian.V_max_meV)
    rng = np.random.default_rng(seed)
    cell = config.supercell_geometry.cell

    def walkers(batch):
        positions = jnp.asarray(rng.uniform(0.0, 1.0, (batch, config.n_electrons, 2)) @ cell)
        if shared_condition:  # one c for the whole batch, as for walkers grouped per c
            return positions, jnp.asarray([0.5 * (v_lo + v_hi)])
        return positions, jnp.asarray(rng.uniform(v_lo, v_hi, (batch, 1)))

    c_axis = None if shared_condition else 0

    def forward(p, positions, conditions):
        m = eqx.combine(p, static)
        return jax.vmap(m, in_axes=(0, c_axis))(positions, conditions)

    def forward_laplacian(p, positions, conditions):
        m = eqx.combine(p, static)

        def one(x, c):
            log_psi = m(x, c)
            laplacian, gradient = laplacian_and_gradient(lambda y: m(y, c), x, method="forward")
            return log_psi, laplacian, gradient

        return jax.vmap(one, in_axes=(0, c_axis))(positions, conditions)

    result = {
        "preset": name,
        "n_electrons": config.n_electrons,
        "supercell": [config.supercell.L1, config.supercell.L2],
        "model": {
            **{k: getattr(config.model, k) for k in ("layers", "width", "heads", "kv_heads", "mlp_width", "experts")},
            "top_k": top_k,
            "shared_condition": shared_condition,
            **{k: getattr(config.model, k) for k in ("determinants", "film_hidden", "dtype")},
        },
        "parameters": parameter_count(model),
        "parameters_by_part": parameter_breakdown(model),
        "forward_flops": forward_flops(model),
        "build_s": round(build_s, 4),
    }

    x, c = walkers(forward_walkers)
    compiled, compile_s = _compile(forward, params, x, c)
    median, times = _timed(compiled, params, x, c, repeats=repeats[0])
    out = compiled(params, x, c)
    result["forward"] = {
        "walkers": forward_walkers,
        "compile_s": round(compile_s, 3),
        "median_s": median,
        "per_walker_s": median / forward_walkers,
        "repeats": len(times),
        "finite": bool(np.all(np.isfinite(np.asarray(out)))),
    }

    if not laplacian:
        return result
    x, c = walkers(laplacian_walkers)
    compiled, compile_s = _compile(forward_laplacian, params, x, c)
    # The first call also counts as a repeat here (no compilation left), to bound the run time.
    times = []
    for _ in range(repeats[1]):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(params, x, c))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    result["forward_laplacian"] = {
        "walkers": laplacian_walkers,
        "compile_s": round(compile_s, 3),
        "median_s": median,
        "per_walker_s": median / laplacian_walkers,
        "repeats": len(times),
        "finite": bool(all(np.all(np.isfinite(np.asarray(o))) for o in out)),
    }
    result["laplacian_over_forward"] = result["forward_laplacian"]["per_walker_s"] / result["forward"]["per_walker_s"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON document (default: a table)")
    parser.add_argument("--presets", nargs="+", default=["moire-tiny", "moire54", "moire150"])
    parser.add_argument("--walkers", type=int, default=None, help="override the forward-pass batch")
    parser.add_argument("--laplacian-walkers", type=int, default=None, help="override the Laplacian batch")
    parser.add_argument("--top-k", type=int, default=None, help="keep only the k most probable experts per c")
    parser.add_argument(
        "--shared-condition", action="store_true", help="one c for all walkers (default: each walker its own c)"
    )
    parser.add_argument("--skip-laplacian", action="store_true", help="time the forward pass only")
    args = parser.parse_args(argv)

    device = jax.devices()[0]
    report = {
        "benchmark": "model",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "presets": [],
    }
    for name in args.presets:
        fw, lw, repeats = DEFAULT_PLAN.get(name, (8, 2, (3, 1)))
        fw = args.walkers or fw
        lw = args.laplacian_walkers or lw
        entry = benchmark_preset(
            name, forward_walkers=fw, laplacian_walkers=lw, repeats=repeats, top_k=args.top_k, laplacian=not args.skip_laplacian,
            shared_condition=args.shared_condition,
        )
        report["presets"].append(entry)
        if not args.json:
            f = entry["forward"]
            line = (
                f"{name:>11}: N={entry['n_electrons']:4d} params={entry['parameters']:>9,d} "
                f"FLOPs/fwd={entry['forward_flops']:.3e} | forward: compile {f['compile_s']:.1f}s, "
                f"{1e3 * f['per_walker_s']:.3f} ms/walker (B={f['walkers']})"
            )
            if "forward_laplacian" in entry:
                lap = entry["forward_laplacian"]
                line += (
                    f" | forward+Laplacian: compile {lap['compile_s']:.1f}s, "
                    f"{1e3 * lap['per_walker_s']:.1f} ms/walker (B={lap['walkers']})"
                )
            print(line, flush=True)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
