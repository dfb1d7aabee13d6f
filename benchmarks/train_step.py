"""Whole VMC optimisation steps per preset: compile time, seconds per step, steps/s, peak memory.

Each preset runs in its own subprocess (so peak resident memory is its own).
The step is the real one of ``qernel train`` (``qernel_cli.vmc.step.make_step``):
Metropolis sweeps at every walker group's depth, local energies (folx forward
Laplacian + Ewald), per-sample log-derivatives and the SPRING update. Walkers
start from the model's initial chains (no pre-training: it does not change the
cost of a step).

Usage: ``python benchmarks/train_step.py [--json] [--presets moire-tiny moire54]
[--walkers 256 32] [--steps 5] [--set model.dtype=float32 ...]``. Prints one
JSON document (``--json``) or a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_WALKERS = {"moire-tiny": 256, "moire24": 256, "moire54": 32, "moire96": 8, "moire150": 4}


def measure(preset: str, walkers: int, steps: int, overrides: list[str]) -> dict:
    """Time the first (compiling) step and ``steps`` more; report peak RSS of this process."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import qernel_cli  # noqa: F401  (float64)
    from qernel_cli.config import resolve
    from qernel_cli.vmc.family import stratum_centres
    from qernel_cli.vmc.mcmc import initial_walkers
    from qernel_cli.vmc.step import TrainState, init_opt_state, log_abs_fn, make_step
    from qernel_cli.vmc.train import build

    groups = min(4, walkers)
    while walkers % groups:
        groups -= 1
    config = resolve(preset, [f"sampler.walkers={walkers}", f"training.depths_per_step={groups}", *overrides])
    t0 = time.perf_counter()
    run = build(config)
    key = jax.random.PRNGKey(0)
    conditions = jnp.asarray(stratum_centres(run.n_groups, run.physics.v_min, run.physics.v_max))[:, None]
    state = TrainState(
        params=run.params,
        opt_state=init_opt_state(run.hyper, run.params),
        walkers=initial_walkers(
            log_abs_fn(eqx.combine(run.params, run.static)), key, run.physics.supercell, conditions,
            run.walkers_per_group, config.n_electrons, config.sampler.move_width,
        ),
        key=key,
        step=jnp.zeros((), jnp.int64),
    )
    step = make_step(run.static, run.physics, run.hyper, run.ewald)
    fault = jnp.zeros(())
    t1 = time.perf_counter()
    state, stats = step(state, fault)
    jax.block_until_ready(state)
    first = time.perf_counter() - t1
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, stats = step(state, fault)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    m = config.model
    return {
        "preset": preset,
        "n_electrons": config.n_electrons,
        "walkers": walkers,
        "depth_groups": groups,
        "mcmc_sweeps_per_step": config.sampler.steps_per_iteration,
        "model": {"layers": m.layers, "width": m.width, "heads": m.heads, "kv_heads": m.kv_heads, "mlp_width": m.mlp_width,
                  "experts": m.experts, "determinants": m.determinants, "dtype": m.dtype},
        "parameters": int(sum(x.size for x in jax.tree.leaves(run.params))),
        "setup_s": t1 - t0,
        "first_step_s": first,
        "time_to_first_step_s": time.perf_counter() - t0 - sum(times),
        "step_s_median": median,
        "step_s_all": times,
        "steps_per_s": 1.0 / median,
        "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "all_finite": bool(stats["accepted"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["moire-tiny", "moire54"])
    parser.add_argument("--walkers", nargs="+", type=int, help="walkers per preset (default per preset)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after the compiling one")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    walkers = args.walkers or [DEFAULT_WALKERS.get(p, 64) for p in args.presets]
    if args.worker:
        print(json.dumps(measure(args.presets[0], walkers[0], args.steps, args.overrides)))
        return
    import jax

    results = []
    for preset, w in zip(args.presets, walkers):
        cmd = [sys.executable, __file__, "--worker", "--presets", preset, "--walkers", str(w), "--steps", str(args.steps)]
        cmd += [x for o in args.overrides for x in ("--set", o)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            results.append({"preset": preset, "walkers": w, "error": (done.stderr.strip().splitlines() or ["?"])[-1]})
        else:
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{preset}: {results[-1]}", file=sys.stderr)
    report = {
        "benchmark": "train_step",
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "cpu_count": __import__("os").cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "overrides": args.overrides,
        "presets": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for r in results:
            print(f"{r['preset']:>11}  walkers {r['walkers']:>4}  " + (
                f"first step {r['first_step_s']:.1f} s  step {r['step_s_median']:.3f} s  "
                f"{r['steps_per_s']:.3f} steps/s  peak {r['peak_rss_GiB']:.2f} GiB" if "error" not in r else r["error"]))


if __name__ == "__main__":
    main()
