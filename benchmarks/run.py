"""Cost of the wavefunction and of a whole VMC step across the ν = 2/3 presets, in one run.

For every preset (default: moire-tiny, moire24, moire54, moire96, moire150;
N = 6, 24, 54, 96, 150 electrons) a fresh subprocess (so that its peak memory
is its own, and a timeout or a crash loses only that preset) measures, on the
default JAX device:

* **step**: the real VMC optimisation step of ``qernel train``
  (``qernel_cli.vmc.step.make_step`` on ``qernel_cli.vmc.assembly.build`` /
  ``initial_state``; Metropolis sweeps, forward-Laplacian local energies,
  per-sample log-derivatives, SPRING or Adam update): the first step (compile
  included), the time from the launch of the subprocess to the end of that
  first step, the median seconds per step over ``--steps`` more steps, steps/s,
  seconds per step per walker, XLA compilations during the timed steps (should
  be 0), and whether every step was finite and accepted. It runs first, so that
  its time-to-first-step and peak memory are not those of the other phases;
* **forward**: the batched log ψ (``jax.vmap`` over walkers, each with its own
  condition c): ahead-of-time compile time (lower + compile) and median time
  per walker;
* **forward_laplacian**: the same for log ψ + QERNEL's forward Laplacian +
  gradient (``laplacian_and_gradient(model.at(c), ..., method="forward")``:
  hand-written jets of trunk, determinant head and Jastrows), what training uses;
* **folx_laplacian**: the same with folx's generic forward Laplacian of the
  whole log ψ (``method="folx"``) on the same walkers, the largest difference
  from QERNEL's, and the ratio folx / QERNEL time per walker;
* **hessian_laplacian**: the same for the Hessian-trace reference
  (``method="hessian"``, one Hessian-vector product per coordinate), on the
  first walkers of the forward-Laplacian batch (the largest difference between
  the two Laplacians is reported too), and the ratio hessian / forward time per
  walker: the forward-Laplacian speed-up. Skipped above
  ``--skip-hessian-above`` electrons;
* parameter count, walkers, N, supercell, peak resident memory
  (``ru_maxrss``, after each phase: it only grows) and, where the device
  reports it, peak device memory.

The parent then fits the cost-growth exponent α (per-walker time ∝ N^α, least
squares in log–log) over the presets with N ≥ 24 that produced the quantity,
separately for the forward pass, the forward Laplacian and the whole step, and
records machine facts (library versions, backend, device, CPU model, cores,
RAM, Python; no host name).

By default every preset runs the *reference model* (``--model reference``,
see :data:`REFERENCE_OVERRIDES`: layers, width, heads, MLP width,
determinants, 2 experts, FiLM hidden width 32, float32 and 10 sweeps per step
are the same for every N, so only N changes along the family; envelopes and
Jastrow factors stay the preset's). ``--model preset`` keeps each preset's own
model. ``--set key=value`` adds config overrides after those.

A preset's process that runs past ``--timeout`` seconds, or whose resident
memory exceeds ``--max-memory`` GiB, is killed; its entry then has ``error``
("timeout" or "memory: …"), ``failed_in`` (the phase that was running) and
whatever the phases before had measured. An exception inside one phase is
recorded in that phase (``{"error": …}``) and the other phases still run.

Usage::

    python benchmarks/run.py                                   # all five presets, a table
    python benchmarks/run.py --preset moire-tiny --preset moire24 --json
    python benchmarks/run.py --walkers-for moire150=8 --out results.json
    python benchmarks/run.py --set optimizer.name=adam --model preset

Progress goes to stderr; ``--json`` prints one JSON document to stdout,
``--out FILE`` also writes it to FILE.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRESETS = ["moire-tiny", "moire24", "moire54", "moire96", "moire150"]

REFERENCE_OVERRIDES = [
    "model.layers=4",
    "model.width=64",
    "model.heads=4",
    "model.kv_heads=2",
    "model.mlp_width=64",
    "model.determinants=4",
    "model.experts=2",
    "model.film_hidden=32",
    "model.dtype=float32",
    "sampler.steps_per_iteration=10",
]
"""``--model reference``: one trunk for every N (envelopes and Jastrow stay the preset's)."""

DEFAULT_WALKERS = {"moire-tiny": 256, "moire24": 256, "moire54": 32, "moire96": 8, "moire150": 4}
"""Walkers of the whole step per preset (``--walkers``, ``--walkers-for`` override)."""

DEPTHS_PER_STEP = 4
FIT_MIN_N = 24


@dataclasses.dataclass(frozen=True)
class WavefunctionPlan:
    """Batch sizes and timed repeats of the wavefunction measurements for one N."""

    forward_walkers: int
    laplacian_walkers: int
    hessian_walkers: int
    forward_repeats: int
    laplacian_repeats: int
    hessian_repeats: int
    warmup: bool  # one untimed call before the timed ones (Laplacians; the forward pass always has one)


def default_plan(n_electrons: int) -> WavefunctionPlan:
    """Small batches and few repeats for large N (the Laplacians cost ~N× the forward pass)."""
    if n_electrons <= 6:
        return WavefunctionPlan(64, 16, 16, 5, 3, 3, True)
    if n_electrons <= 24:
        return WavefunctionPlan(32, 8, 4, 5, 3, 2, True)
    if n_electrons <= 54:
        return WavefunctionPlan(16, 4, 2, 3, 2, 1, False)
    if n_electrons <= 96:
        return WavefunctionPlan(8, 2, 1, 3, 1, 1, False)
    return WavefunctionPlan(4, 2, 1, 3, 1, 1, False)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Worker: one preset, in its own process.


def _rss_GiB() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**30 if sys.platform == "darwin" else rss / 2**20  # bytes on macOS, KiB on Linux


def _device_peak_GiB(device) -> float | None:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001  (not every backend implements it)
        return None
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**30


class _CompileCounter:
    """Counts XLA backend compilations (to show that the timed steps do not recompile)."""

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0
        self.active = False
        try:
            import jax.monitoring

            jax.monitoring.register_event_duration_secs_listener(self._listen)
            self.active = True
        except Exception as error:  # noqa: BLE001  (private event name; counting is optional)
            log(f"  (XLA compilations not counted: {type(error).__name__})")

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event == self.EVENT:
            self.count += 1


def _finite_tree(tree) -> bool:
    import jax
    import numpy as np

    return bool(all(np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree.leaves(tree)))


def _error_text(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0][:300]}" if text else type(error).__name__


def _timed(fn, args, repeats: int, warmup: bool):
    """(median seconds, all timings, last output) of ``fn(*args)``; ``fn`` is already compiled."""
    import jax

    out = None
    if warmup:
        out = jax.block_until_ready(fn(*args))
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, out


def _measure_step(spec: dict, run, config, device, section: dict, write) -> None:
    """Time the first and ``steps`` more VMC steps into ``section`` (written out after every step)."""
    import jax
    import jax.numpy as jnp

    from qernel_cli.vmc.step import make_step
    from qernel_cli.vmc.assembly import initial_state

    t_setup = time.perf_counter()
    state = initial_state(run, jax.random.PRNGKey(spec["seed"]))
    jax.block_until_ready(state)
    step = make_step(run.static, run.physics, run.settings, run.ewald)
    walkers = config.sampler.walkers
    section.update(
        walkers=walkers,
        depth_groups=run.n_groups,
        mcmc_sweeps_per_step=config.sampler.steps_per_iteration,
        optimizer=config.optimizer.name,
        setup_s=section.get("setup_s", 0.0) + time.perf_counter() - t_setup,
    )
    fault = jnp.asarray(0.0)
    counter = _CompileCounter()

    t_first = time.perf_counter()
    state, stats = step(state, fault)
    jax.block_until_ready((state, stats))
    first_s = time.perf_counter() - t_first
    to_first_s = time.time() - spec["t0"]
    stats = jax.device_get(stats)
    finite = _finite_tree(stats)
    accepted = int(bool(stats["accepted"]))
    log(f"  step: first step {first_s:.2f} s (compile included), {to_first_s:.1f} s from launch")
    compiles_before = counter.count
    times: list[float] = []

    def record() -> None:
        section.update(
            first_step_s=first_s,
            time_to_first_step_s=to_first_s,
            timed_steps=len(times),
            step_s_all=times,
            finite=bool(finite),
            accepted_steps=accepted,
            total_steps=1 + len(times),
            recompiles_after_first=(counter.count - compiles_before) if counter.active else None,
            peak_rss_GiB=_rss_GiB(),
            device_peak_GiB=_device_peak_GiB(device),
        )
        write()

    record()
    for i in range(spec["steps"]):
        t = time.perf_counter()
        state, stats = step(state, fault)
        jax.block_until_ready((state, stats))
        times.append(time.perf_counter() - t)
        stats = jax.device_get(stats)
        finite = finite and _finite_tree(stats)
        accepted += int(bool(stats["accepted"]))
        log(f"  step {i + 2}: {times[-1]:.3f} s")
        record()
    if times:
        median = statistics.median(times)
        section.update(
            step_s_median=median,
            step_s_min=min(times),
            steps_per_s=1.0 / median,
            per_walker_step_s=median / walkers,
            first_step_minus_median_s=first_s - median,
        )
    write()


def _measure_wavefunction(spec: dict, run, result: dict, write, device) -> None:
    """Forward pass, forward Laplacian and Hessian-trace Laplacian per walker."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qernel_cli.hamiltonian.local_energy import laplacian_and_gradient

    n = run.config.n_electrons
    plan = default_plan(n)
    plan = dataclasses.replace(
        plan,
        **{k: v for k, v in spec["plan_overrides"].items() if v is not None},
    )
    # The Hessian walkers are the first ones of the Laplacian batch (to compare the two Laplacians).
    plan = dataclasses.replace(plan, hessian_walkers=min(plan.hessian_walkers, plan.laplacian_walkers))
    params, static = run.params, run.static
    rng = np.random.default_rng(spec["seed"])
    cell = np.asarray(run.physics.supercell.cell)
    v_lo, v_hi = run.physics.v_min, run.physics.v_max

    def walkers(batch):
        positions = rng.uniform(0.0, 1.0, (batch, n, 2)) @ cell
        conditions = rng.uniform(v_lo, v_hi, (batch, 1))
        return jnp.asarray(positions), jnp.asarray(conditions)

    def forward(p, x, c):
        model = eqx.combine(p, static)
        return jax.vmap(model)(x, c)

    def laplacian(method):
        def fn(p, x, c):
            model = eqx.combine(p, static)

            def one(xi, ci):
                lap, grad = laplacian_and_gradient(model.at(ci), xi, method=method)
                return lap, grad

            return jax.vmap(one)(x, c)

        return fn

    def measure(name, fn, x, c, repeats, warmup):
        log(f"  {name}: compiling (B={x.shape[0]})")
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(params, x, c).compile()
        compile_s = time.perf_counter() - start
        median, times, out = _timed(compiled, (params, x, c), repeats, warmup)
        batch = x.shape[0]
        section = {
            "walkers": batch,
            "compile_s": compile_s,
            "median_s": median,
            "per_walker_s": median / batch,
            "per_walker_min_s": min(times) / batch,
            "times_s": times,
            "warmup": bool(warmup),
            "finite": _finite_tree(out),
            "peak_rss_GiB": _rss_GiB(),
            "device_peak_GiB": _device_peak_GiB(device),
        }
        log(f"  {name}: compile {compile_s:.1f} s, {1e3 * section['per_walker_s']:.3f} ms/walker")
        return section, out

    def guarded(name, thunk):
        result["phase"] = name
        write()
        try:
            return thunk()
        except Exception as error:  # noqa: BLE001  (one failed phase must not lose the others)
            log(f"  {name}: failed: {type(error).__name__}: {error}")
            result[name] = {"error": _error_text(error)}
            write()
            return None

    result["plan"] = dataclasses.asdict(plan)
    x, c = walkers(plan.forward_walkers)
    got = guarded("forward", lambda: measure("forward", forward, x, c, plan.forward_repeats, True))
    if got:
        result["forward"] = got[0]
        write()

    x, c = walkers(plan.laplacian_walkers)
    got = guarded(
        "forward_laplacian",
        lambda: measure("forward_laplacian", laplacian("forward"), x, c, plan.laplacian_repeats, plan.warmup),
    )
    forward_out = None
    if got:
        result["forward_laplacian"], forward_out = got
        write()

    if spec.get("skip_folx"):
        result["folx_laplacian"] = {"skipped": "--skip-folx"}
    got = None if spec.get("skip_folx") else guarded(
        "folx_laplacian",
        lambda: measure("folx_laplacian", laplacian("folx"), x, c, plan.laplacian_repeats, plan.warmup),
    )
    if got:
        section, folx_out = got
        if forward_out is not None:
            section["max_abs_difference_vs_forward"] = float(np.max(np.abs(np.asarray(folx_out[0]) - np.asarray(forward_out[0]))))
            result["folx_over_forward_laplacian"] = section["per_walker_s"] / result["forward_laplacian"]["per_walker_s"]
            log(f"  folx / QERNEL forward Laplacian time per walker: {result['folx_over_forward_laplacian']:.2f}")
        result["folx_laplacian"] = section
        write()

    limit = spec["skip_hessian_above"]
    if limit is not None and n > limit:
        result["hessian_laplacian"] = {"skipped": f"N = {n} > --skip-hessian-above {limit}"}
        write()
        return
    h = plan.hessian_walkers
    got = guarded(
        "hessian_laplacian",
        lambda: measure("hessian_laplacian", laplacian("hessian"), x[:h], c[:h], plan.hessian_repeats, plan.warmup),
    )
    if not got:
        return
    section, hessian_out = got
    if forward_out is not None:
        lap_f, lap_h = np.asarray(forward_out[0])[:h], np.asarray(hessian_out[0])
        section["max_abs_difference_vs_forward"] = float(np.max(np.abs(lap_f - lap_h)))
        section["max_abs_laplacian"] = float(np.max(np.abs(lap_h)))
        fw = result["forward_laplacian"]["per_walker_s"]
        result["hessian_over_forward_laplacian"] = section["per_walker_s"] / fw
        log(f"  Hessian / forward Laplacian time per walker: {result['hessian_over_forward_laplacian']:.2f}")
    result["hessian_laplacian"] = section
    write()


def worker(spec: dict) -> None:
    """Measure one preset; the result file is rewritten (atomically) after every phase."""
    out_path = Path(spec["result_file"])
    result: dict = {"preset": spec["preset"]}

    def write() -> None:
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, out_path)

    sys.path.insert(0, str(ROOT))
    import jax

    from qernel_cli import configure_jax

    configure_jax()  # before the first computation
    from qernel_cli.config import resolve

    device = jax.devices()[0]
    result["device"] = {
        "backend": jax.default_backend(),
        "kind": getattr(device, "device_kind", str(device)),
        "count": jax.device_count(),
        "platform": device.platform,
        "matmul_precision": jax.config.jax_default_matmul_precision,
    }
    walkers = spec["walkers"]
    groups = min(DEPTHS_PER_STEP, walkers)
    while walkers % groups:
        groups -= 1
    overrides = [*spec["overrides"], f"sampler.walkers={walkers}", f"training.depths_per_step={groups}"]
    config = resolve(spec["preset"], overrides)
    result.update(
        n_electrons=config.n_electrons,
        supercell=[config.supercell.L1, config.supercell.L2],
        walkers=walkers,
        overrides=overrides,
        model=dataclasses.asdict(config.model),
        training=dataclasses.asdict(config.training),
    )
    write()
    log(f"{spec['preset']}: N = {config.n_electrons}, {walkers} walkers, {jax.default_backend()} ({result['device']['kind']})")

    from qernel_cli.vmc.assembly import build

    result["phase"] = "build"
    write()
    t_build = time.perf_counter()
    run = build(config)
    result["parameters"] = _parameter_count(run)
    build_s = time.perf_counter() - t_build
    if spec["skip_step"]:
        result["step"] = {"skipped": True}
    else:
        result["phase"] = "step"
        result["step"] = section = {"setup_s": build_s}
        try:
            _measure_step(spec, run, config, device, section, write)
        except Exception as error:  # noqa: BLE001  (the wavefunction phases still run)
            log(f"  step: failed: {type(error).__name__}: {error}")
            section["error"] = _error_text(error)
    write()
    _measure_wavefunction(spec, run, result, write, device)
    result["lower_bound"] = _lower_bound(run, config, result)
    result.pop("phase", None)
    result["peak_rss_GiB"] = _rss_GiB()
    result["device_peak_GiB"] = _device_peak_GiB(device)
    result["wall_s"] = time.time() - spec["t0"]
    write()


def _lower_bound(run, config, result: dict) -> dict:
    """What a step cannot go below on this device: its three unavoidable parts, measured separately.

    * the SPRING kernel A Aᵀ (2·walkers rows × P parameters, in the model's
      matmul precision): one GEMM, timed here (its FLOP rate shows how close
      the device runs to its peak);
    * the Metropolis sweeps: sweeps × one forward pass per walker;
    * the local energies: one forward Laplacian per walker.
    Per-walker times come from the wavefunction phases of this run.
    """
    import jax
    import jax.numpy as jnp

    out: dict = {}
    rows, p = 2 * config.sampler.walkers, result.get("parameters") or _parameter_count(run)
    if config.optimizer.name == "spring":
        dtype = jnp.float32 if run.settings.matmul_dtype == "float32" else jnp.float64
        a = jax.random.normal(jax.random.PRNGKey(0), (rows, p), dtype)
        gram = jax.jit(lambda a: a @ a.T)
        jax.block_until_ready(gram(a))
        times = []
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(gram(a))
            times.append(time.perf_counter() - t)
        out["spring_kernel_s"] = min(times)
        out["spring_kernel_GFLOPs"] = 2.0 * rows * rows * p / min(times) / 1e9
        del a
    walkers = config.sampler.walkers
    forward = (result.get("forward") or {}).get("per_walker_min_s")
    laplacian = (result.get("forward_laplacian") or {}).get("per_walker_min_s")
    if forward:
        out["sampling_s"] = config.sampler.steps_per_iteration * forward * walkers
    if laplacian:
        out["local_energy_s"] = laplacian * walkers
    out["total_s"] = sum(out.get(k, 0.0) for k in ("spring_kernel_s", "sampling_s", "local_energy_s"))
    median = (result.get("step") or {}).get("step_s_median")
    if median:
        out["step_over_lower_bound"] = median / out["total_s"]
    return out


def _parameter_count(run) -> int:
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    try:
        from qernel_cli.model import parameter_count

        return parameter_count(eqx.combine(run.params, run.static))
    except ImportError:
        return int(sum(x.size * (2 if jnp.iscomplexobj(x) else 1) for x in jax.tree.leaves(run.params)))


# ---------------------------------------------------------------------------
# Parent: one subprocess per preset, then the fits and the report.


def _resident_GiB(pid: int) -> float | None:
    """Resident memory of a process (Linux /proc; None elsewhere or once it has ended)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def run_preset(spec: dict, timeout: float, max_memory: float | None = None) -> dict:
    """Run the worker for one preset; its stderr is forwarded live (the last lines are kept for errors)."""
    with tempfile.TemporaryDirectory(prefix="qernel-bench-") as tmp:
        spec = {**spec, "result_file": str(Path(tmp) / "result.json"), "t0": time.time()}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-spec", json.dumps(spec)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
        tail: deque[str] = deque(maxlen=30)

        def forward_stderr():
            for line in proc.stderr:
                tail.append(line.rstrip("\n"))
                sys.stderr.write(line)
                sys.stderr.flush()

        reader = threading.Thread(target=forward_stderr, daemon=True)
        reader.start()
        error = None
        rss_seen = 0.0
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    rc = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                rss = _resident_GiB(proc.pid)
                rss_seen = max(rss_seen, rss or 0.0)
                if max_memory and rss is not None and rss > max_memory:
                    error = f"memory: resident {rss:.2f} GiB > --max-memory {max_memory:g} GiB"
                elif time.monotonic() > deadline:
                    error = "timeout"
                else:
                    continue
                proc.kill()
                proc.wait()
                rc = None
                break
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
        reader.join(timeout=5)
        path = Path(spec["result_file"])
        partial = json.loads(path.read_text()) if path.exists() else {"preset": spec["preset"]}
    if rc:
        if rc < 0:
            error = f"killed by signal {-rc}" + (" (out of memory?)" if -rc == 9 else "")
        else:
            lines = [line for line in tail if line.strip()]
            error = lines[-1] if lines else f"exit status {rc}"
    if error:
        partial["error"] = error
        if error == "timeout":
            partial["timeout_s"] = timeout
        if error.startswith("memory"):
            partial["resident_GiB_when_killed"] = rss_seen
        if "phase" in partial:  # the phase that was running when the process ended
            partial["failed_in"] = partial.pop("phase")
    partial.setdefault("walkers", spec["walkers"])
    return partial


def fit_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) against log(N)."""
    points = [(n, t) for n, t in points if t is not None and t > 0 and math.isfinite(t)]
    if len({n for n, _ in points}) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def _get(result: dict, *keys):
    for key in keys:
        if not isinstance(result, dict) or key not in result:
            return None
        result = result[key]
    return result


SCALING = {
    "forward": ("forward", "per_walker_s"),
    "forward_laplacian": ("forward_laplacian", "per_walker_s"),
    "step_per_walker": ("step", "per_walker_step_s"),
}


def scaling(results: list[dict]) -> dict:
    out = {}
    for name, keys in SCALING.items():
        points = []
        for r in results:
            n, value = r.get("n_electrons"), _get(r, *keys)
            if n is not None and n >= FIT_MIN_N and isinstance(value, (int, float)):
                points.append((n, float(value)))
        out[name] = {
            "alpha": fit_exponent(points),
            "presets": [r["preset"] for r in results if r.get("n_electrons", 0) >= FIT_MIN_N and isinstance(_get(r, *keys), (int, float))],
            "n_electrons": [n for n, _ in points],
        }
    return out


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for name in ("jax", "jaxlib", "equinox", "folx", "optax", "numpy", "jax-cuda12-plugin", "jax-cuda13-plugin"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if not name.startswith("jax-cuda"):
                out[name] = None
    return out


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _ram_GiB() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def _git() -> dict | None:
    try:
        def git(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "qernel_cli")
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode:
        return None
    return {"commit": commit.stdout.strip(), "qernel_cli_modified": bool(dirty.stdout.strip())}


def machine(results: list[dict]) -> dict:
    device = next((r["device"] for r in results if "device" in r), {})
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = None
    return {
        **{f"{k}_version": v for k, v in _versions().items()},
        "backend": device.get("backend"),
        "device_kind": device.get("kind"),
        "device_count": device.get("count"),
        "matmul_precision": device.get("matmul_precision"),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_GiB": _ram_GiB(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "architecture": platform.machine(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
    }


def _fmt(value, scale=1.0, spec=".3g", missing="-"):
    if value is None or not isinstance(value, (int, float)):
        return missing
    return format(value if scale == 1.0 else value * scale, spec)


def table(report: dict) -> str:
    header = (
        f"{'preset':>10} {'N':>4} {'cells':>6} {'params':>9} {'W':>4} | {'logψ ms/w':>9} {'fwdLap ms/w':>11} "
        f"{'folx ms/w':>9} {'Hess ms/w':>10} {'ratio':>6} | {'s/step':>8} {'steps/s':>8} {'ms/step/w':>9} {'1st step s':>10} "
        f"{'to 1st s':>8} {'finite':>6} | {'peak GiB':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in report["presets"]:
        s = r.get("step", {})
        line = (
            f"{r['preset']:>10} {_fmt(r.get('n_electrons'), spec='d'):>4} "
            f"{'x'.join(map(str, r.get('supercell', []))) or '-':>6} {_fmt(r.get('parameters'), spec=',d'):>9} "
            f"{_fmt(r.get('walkers'), spec='d'):>4} | "
            f"{_fmt(_get(r, 'forward', 'per_walker_s'), 1e3):>9} {_fmt(_get(r, 'forward_laplacian', 'per_walker_s'), 1e3):>11} "
            f"{_fmt(_get(r, 'folx_laplacian', 'per_walker_s'), 1e3):>9} "
            f"{_fmt(_get(r, 'hessian_laplacian', 'per_walker_s'), 1e3):>10} {_fmt(r.get('hessian_over_forward_laplacian'), spec='.2f'):>6} | "
            f"{_fmt(s.get('step_s_median')):>8} {_fmt(s.get('steps_per_s')):>8} {_fmt(s.get('per_walker_step_s'), 1e3):>9} "
            f"{_fmt(s.get('first_step_s'), spec='.1f'):>10} {_fmt(s.get('time_to_first_step_s'), spec='.1f'):>8} "
            f"{str(s['finite']) if 'finite' in s else '-':>6} | {_fmt(r.get('peak_rss_GiB', s.get('peak_rss_GiB')), spec='.2f'):>8}"
        )
        if "error" in r:
            line += f"  ERROR: {r['error']}"
        lines.append(line)
    lines.append("")
    lines.append("compile (s): " + "; ".join(
        f"{r['preset']}: logψ {_fmt(_get(r, 'forward', 'compile_s'), spec='.1f')}, "
        f"fwdLap {_fmt(_get(r, 'forward_laplacian', 'compile_s'), spec='.1f')}, "
        f"folx {_fmt(_get(r, 'folx_laplacian', 'compile_s'), spec='.1f')}, "
        f"Hess {_fmt(_get(r, 'hessian_laplacian', 'compile_s'), spec='.1f')}"
        for r in report["presets"]
    ))
    lines.append("lower bound per step (s): " + "; ".join(
        f"{r['preset']}: {_fmt(_get(r, 'lower_bound', 'total_s'))} = SPRING kernel {_fmt(_get(r, 'lower_bound', 'spring_kernel_s'))} "
        f"({_fmt(_get(r, 'lower_bound', 'spring_kernel_GFLOPs'), spec='.0f')} GFLOP/s) + sweeps {_fmt(_get(r, 'lower_bound', 'sampling_s'))} "
        f"+ local energies {_fmt(_get(r, 'lower_bound', 'local_energy_s'))}; step/bound {_fmt(_get(r, 'lower_bound', 'step_over_lower_bound'), spec='.2f')}"
        for r in report["presets"]
    ))
    for name, fit in report["scaling"].items():
        lines.append(f"α ({name}, per walker, N ≥ {FIT_MIN_N}): {_fmt(fit['alpha'], spec='.2f')}  over N = {fit['n_electrons']}")
    m = report["machine"]
    lines.append(
        f"machine: {m['backend']} / {m['device_kind']} x{m['device_count']}; CPU {m['cpu_model']} ({m['logical_cores']} logical cores), "
        f"RAM {_fmt(m['ram_GiB'], spec='.1f')} GiB; jax {m['jax_version']}, jaxlib {m['jaxlib_version']}, "
        f"equinox {m['equinox_version']}, folx {m['folx_version']}; Python {m['python']}"
    )
    lines.append(f"model: {report['model']} (overrides {report['overrides']})")
    return "\n".join(lines)


def _walkers_for(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f"--walkers-for {item!r}: expected PRESET=WALKERS")
        try:
            out[name.strip()] = int(value)
        except ValueError:
            raise SystemExit(f"--walkers-for {item!r}: WALKERS must be an integer") from None
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", action="append", dest="presets", metavar="NAME", help=f"repeatable (default: {' '.join(PRESETS)})")
    p.add_argument("--model", choices=["reference", "preset"], default="reference",
                   help="reference: one trunk for all N (default); preset: each preset's own model")
    p.add_argument("--set", action="append", dest="overrides", default=[], metavar="KEY=VALUE",
                   help="config override (after the reference model's), repeatable")
    p.add_argument("--walkers", type=int, help="walkers of the step for every preset (default per preset: "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_WALKERS.items()) + ")")
    p.add_argument("--walkers-for", action="append", default=[], metavar="PRESET=W", help="walkers for one preset, repeatable")
    p.add_argument("--steps", type=int, default=3, help="timed steps after the first (compiling) one (default 3)")
    p.add_argument("--skip-step", action="store_true", help="measure the wavefunction only")
    p.add_argument("--skip-folx", action="store_true", help="leave out folx's Laplacian (its compilation is slow on GPUs)")
    p.add_argument("--skip-hessian-above", type=int, default=96, metavar="N",
                   help="skip the Hessian-trace reference for more than N electrons (default 96; -1: never skip)")
    p.add_argument("--forward-walkers", type=int, help="batch of the log ψ timing (default by N)")
    p.add_argument("--laplacian-walkers", type=int, help="batch of the forward-Laplacian timing (default by N)")
    p.add_argument("--hessian-walkers", type=int, help="batch of the Hessian timing (default by N)")
    p.add_argument("--repeats", type=int, help="timed repeats of every wavefunction measurement (default by N)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per preset (default 900); then recorded as an error")
    p.add_argument("--max-memory", type=float, metavar="GiB",
                   help="kill a preset's process when its resident memory exceeds this (polled 5 times a second; "
                   "Linux), so that a preset that needs too much memory fails alone instead of waking the OOM killer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON document to stdout (default: a table)")
    p.add_argument("--out", type=Path, help="also write the JSON document to this file")
    p.add_argument("--worker-spec", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps < 0:
        p.error("--steps must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker_spec:
        worker(json.loads(args.worker_spec))
        return 0
    start = time.time()
    git = _git()  # the code that is measured: read before the run, not after
    presets = args.presets or PRESETS
    per_preset = _walkers_for(args.walkers_for)
    unknown = sorted(set(per_preset) - set(presets))
    if unknown:
        log(f"warning: --walkers-for names presets that are not run: {', '.join(unknown)}")
    model_overrides = REFERENCE_OVERRIDES if args.model == "reference" else []
    overrides = [*model_overrides, *args.overrides]
    plan_overrides = {
        "forward_walkers": args.forward_walkers,
        "laplacian_walkers": args.laplacian_walkers,
        "hessian_walkers": args.hessian_walkers,
        **({} if args.repeats is None else {
            "forward_repeats": args.repeats, "laplacian_repeats": args.repeats, "hessian_repeats": args.repeats}),
    }
    results = []
    for name in presets:
        walkers = per_preset.get(name, args.walkers or DEFAULT_WALKERS.get(name, 64))
        spec = {
            "preset": name,
            "overrides": overrides,
            "walkers": walkers,
            "steps": args.steps,
            "skip_step": args.skip_step,
            "skip_folx": args.skip_folx,
            "skip_hessian_above": None if args.skip_hessian_above < 0 else args.skip_hessian_above,
            "plan_overrides": plan_overrides,
            "seed": args.seed,
        }
        log(f"=== {name} (timeout {args.timeout:.0f} s)")
        results.append(run_preset(spec, args.timeout, args.max_memory))
        if "error" in results[-1]:
            log(f"=== {name}: ERROR {results[-1]['error']}")
    report = {
        "benchmark": "run",
        "model": args.model,
        "overrides": overrides,
        "steps": args.steps,
        "timeout_s": args.timeout,
        "max_memory_GiB": args.max_memory,
        "skip_hessian_above": args.skip_hessian_above,
        "machine": machine(results),
        "git": git,
        "presets": results,
        "scaling": scaling(results),
        "wall_s": time.time() - start,
    }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text if args.json else table(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
