"""Cost of every part of the wavefunction and of the VMC step, by component, in one run.

For each system (default N = 6, 24, 54: the ν = 2/3 presets moire-tiny,
moire24, moire54 with the reference model of ``benchmarks/run.py``, the model
timed against the peer) this times, on the default JAX device, each part as
its own jitted program (``jax.vmap`` over walkers, median of repeated calls
after a warm-up call, ``block_until_ready``):

per walker, the **forward pass** (what a Metropolis sweep evaluates)
  ``trunk`` (features, FiLM, attention, MoE), ``envelopes`` (Bloch-envelope
  plane-wave sums), ``head`` (orbital layer × envelopes, K determinants,
  logsumexp: the envelopes included), ``cusp_jastrow``, ``pair_jastrow``,
  ``radial_jastrow`` and the whole ``log_psi``;
per walker, the **forward Laplacian + gradient** (what a local energy needs)
  ``trunk_jet``, ``envelope_jet``, ``head_jet`` (from the trunk jet; the
  envelope jet included), the Jastrow factors' closed forms and the whole
  ``log_psi_laplacian``; plus the Hamiltonian's ``ewald`` and ``moire_potential``;
per walker, the **log-derivatives** ∂ log ψ/∂θ (SPRING's rows);
per step (the step's walkers), the **sweeps** (the step's Metropolis sweeps
  with lattice hops), the **SPRING kernel** (centred O Oᵀ in the step's matmul
  precision), its **solve** (Cholesky + back substitution + Oᵀ y) and the
  whole **spring_direction**, and the whole **step** (``make_step``).

Derived: ``determinants = head − envelopes`` (forward and jet), the step's
parts scaled to its walkers (``step_parts``) and how much of the measured step
they explain (``step_parts_sum_over_step``: separate programs fuse less than
the one jitted step, so the sum can exceed 1).

    python benchmarks/components.py --out benchmarks/results/components-cpu.json
    python benchmarks/components.py --cases 6 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from report import emit  # noqa: E402
from run import REFERENCE_OVERRIDES  # noqa: E402

CASES = {6: "moire-tiny", 24: "moire24", 54: "moire54"}
STEP_WALKERS = {6: 256, 24: 256, 54: 32}
"""Walkers of the timed step (as ``benchmarks/run.py``)."""
BATCH = {6: (64, 5), 24: (16, 3), 54: (4, 3)}
"""(walkers, timed repeats) of the per-walker measurements."""
GROUPS = 4


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _timed(fn, *args, repeats: int) -> tuple[float, float]:
    """(compile + first call s, median s of ``repeats`` further calls)."""
    import jax

    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def reference_system(n: int, batch: int, rng, walkers: int | None = None):
    """(run, overrides, positions (batch, n, 2) a_M, conditions (batch, 1) E_M): the reference model at N = n
    with the step's walkers (``walkers``, default :data:`STEP_WALKERS`) and depth groups, and random walkers
    (drawn from ``rng``) in its supercell and depth range."""
    import jax.numpy as jnp
    import numpy as np

    from qernel_cli.config import resolve
    from qernel_cli.vmc.assembly import build

    walkers = STEP_WALKERS[n] if walkers is None else walkers
    overrides = [*REFERENCE_OVERRIDES, f"sampler.walkers={walkers}", f"training.depths_per_step={GROUPS}"]
    run = build(resolve(CASES[n], overrides))
    x = jnp.asarray(rng.uniform(0.0, 1.0, (batch, n, 2)) @ np.asarray(run.physics.supercell.cell))
    c = jnp.asarray(rng.uniform(run.physics.v_min, run.physics.v_max, (batch, 1)))
    return run, overrides, x, c


def profile(n: int, seed: int = 0, walkers: int | None = None, batch: int | None = None) -> dict:
    """All component timings for one system; ``walkers`` of the step and ``batch`` of the per-walker
    programs default to :data:`STEP_WALKERS` and :data:`BATCH` (sized for a 2-core CPU)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    from qernel_cli.hamiltonian.potential import total_moire_potential
    from qernel_cli.model import parameter_count
    from qernel_cli.vmc import spring
    from qernel_cli.vmc.mcmc import metropolis_sweeps
    from qernel_cli.vmc.step import log_abs_fn, log_derivatives, make_step
    from qernel_cli.vmc.assembly import initial_state

    walkers = STEP_WALKERS[n] if walkers is None else walkers
    default_batch, repeats = BATCH[n]
    batch = default_batch if batch is None else batch
    rng = np.random.default_rng(seed)
    run, overrides, x, c = reference_system(n, batch, rng, walkers)
    model = eqx.combine(run.params, run.static)
    params, static = run.params, run.static
    result: dict = {
        "n_electrons": n,
        "preset": CASES[n],
        "overrides": overrides,
        "parameters": parameter_count(model),
        "per_walker_batch": batch,
        "step_walkers": walkers,
        "per_walker_s": {},
        "per_step_s": {},
        "compile_s": {},
    }
    per_walker, per_step, compile_s = result["per_walker_s"], result["per_step_s"], result["compile_s"]

    def walker_part(name, fn):
        """fn(p, xi, ci) per walker, vmapped over the batch."""
        program = eqx.filter_jit(jax.vmap(fn, in_axes=(None, 0, 0)))
        first, median = _timed(program, params, x, c, repeats=repeats)
        per_walker[name] = median / batch
        compile_s[name] = first - median
        _log(f"  N={n} {name}: {1e3 * median / batch:.3f} ms/walker")

    def m(p):
        return eqx.combine(p, static)

    def blocks_rows(mod):
        start = 0
        for block in mod.orbitals.blocks:
            yield block, slice(start, start + block.n_orbitals), start
            start += block.n_orbitals

    # forward pass
    walker_part("trunk", lambda p, xi, ci: m(p).hidden(xi, ci))
    walker_part(
        "envelopes",
        lambda p, xi, ci: [b.envelope(xi[rows], m(p).normalise(ci)[0]) for b, rows, _ in blocks_rows(m(p))],
    )
    h_all = eqx.filter_jit(jax.vmap(lambda p, xi, ci: m(p).hidden(xi, ci), in_axes=(None, 0, 0)))(params, x, c)

    def head(p, xi, ci, hi):
        mod = m(p)
        return mod.orbitals(hi, xi, mod.normalise(ci)[0])

    program = eqx.filter_jit(jax.vmap(head, in_axes=(None, 0, 0, 0)))
    first, median = _timed(program, params, x, c, h_all, repeats=repeats)
    per_walker["head"], compile_s["head"] = median / batch, first - median
    _log(f"  N={n} head: {1e3 * median / batch:.3f} ms/walker")
    if model.jastrow is not None:
        walker_part("cusp_jastrow", lambda p, xi, ci: m(p).jastrow(xi))
    if model.pair_jastrow is not None:
        walker_part("pair_jastrow", lambda p, xi, ci: m(p).pair_jastrow(xi, m(p).normalise(ci)))
    if model.radial_jastrow is not None:
        walker_part("radial_jastrow", lambda p, xi, ci: m(p).radial_jastrow(xi, m(p).normalise(ci)))
    walker_part("log_psi", lambda p, xi, ci: m(p)(xi, ci))

    # forward Laplacian
    walker_part("trunk_jet", lambda p, xi, ci: m(p).trunk_jet(xi, ci))
    walker_part(
        "envelope_jet",
        lambda p, xi, ci: [b.envelope.jet(xi[rows], m(p).normalise(ci)[0]) for b, rows, _ in blocks_rows(m(p))],
    )
    jets = eqx.filter_jit(jax.vmap(lambda p, xi, ci: m(p).trunk_jet(xi, ci), in_axes=(None, 0, 0)))(params, x, c)

    def head_from_jet(p, xi, ci, jet):
        mod = m(p)
        return mod.orbitals.jet(jet, xi, mod.normalise(ci)[0])

    program = eqx.filter_jit(jax.vmap(head_from_jet, in_axes=(None, 0, 0, 0)))
    first, median = _timed(program, params, x, c, jets, repeats=repeats)
    per_walker["head_jet"], compile_s["head_jet"] = median / batch, first - median
    _log(f"  N={n} head_jet: {1e3 * median / batch:.3f} ms/walker")
    if model.jastrow is not None:
        walker_part("cusp_jastrow_jet", lambda p, xi, ci: m(p).jastrow.laplacian_and_gradient(xi))
    if model.pair_jastrow is not None:
        walker_part("pair_jastrow_jet", lambda p, xi, ci: m(p).pair_jastrow.laplacian_and_gradient(xi, m(p).normalise(ci)))
    if model.radial_jastrow is not None:
        walker_part("radial_jastrow_jet", lambda p, xi, ci: m(p).radial_jastrow.laplacian_and_gradient(xi, m(p).normalise(ci)))
    walker_part("log_psi_laplacian", lambda p, xi, ci: m(p).forward_laplacian(xi, ci))
    if run.ewald is not None:
        ewald = run.ewald
        walker_part("ewald", lambda p, xi, ci: ewald(xi))
    phi = run.physics.phi_deg
    walker_part("moire_potential", lambda p, xi, ci: total_moire_potential(xi, ci[0], phi))

    # log-derivatives (SPRING's rows), per walker
    from qernel_cli.vmc.mcmc import Walkers

    matmul = jnp.float32 if run.settings.matmul_dtype == "float32" else jnp.float64
    few = Walkers(positions=x[None], conditions=c[:1], log_abs=jnp.zeros((1, batch)), width=jnp.ones(1))
    program = eqx.filter_jit(lambda p, w: log_derivatives(p, static, w, 0, matmul))
    first, median = _timed(program, params, few, repeats=repeats)
    per_walker["log_derivatives"], compile_s["log_derivatives"] = median / batch, first - median
    _log(f"  N={n} log_derivatives: {1e3 * median / batch:.3f} ms/walker")

    # per step: sweeps, SPRING, the whole step
    state = initial_state(run, jax.random.PRNGKey(seed))
    settings = run.settings
    sweeps = eqx.filter_jit(
        lambda p, w, k: metropolis_sweeps(log_abs_fn(m(p)), w, k, run.physics.supercell, settings.mcmc_steps, settings.lattice_hops)
    )
    step_repeats = 3 if n <= 24 else 2
    first, median = _timed(sweeps, params, state.walkers, jax.random.PRNGKey(1), repeats=step_repeats)
    per_step["sweeps"], compile_s["sweeps"] = median, first - median
    _log(f"  N={n} sweeps ({settings.mcmc_steps}, lattice hops {settings.lattice_hops}): {median:.3f} s")

    jac = eqx.filter_jit(lambda p, w: log_derivatives(p, static, w, 0, matmul))(params, state.walkers)
    jac = jax.block_until_ready(jac)
    g_, w_ = state.walkers.log_abs.shape
    residual = jnp.asarray(rng.normal(size=(g_, w_)) + 1j * rng.normal(size=(g_, w_)))
    previous = jnp.zeros(sum(b.shape[-1] for b in jac), jnp.float64)

    def kernel(j):
        rows = spring._rows(spring.centred_jacobian(j), matmul)
        return spring.centred_kernel(rows, g_)

    first, median = _timed(eqx.filter_jit(kernel), jac, repeats=step_repeats)
    per_step["spring_kernel"], compile_s["spring_kernel"] = median, first - median
    gram = jax.block_until_ready(eqx.filter_jit(kernel)(jac))
    rows_ = eqx.filter_jit(lambda j: spring._rows(spring.centred_jacobian(j), matmul))(jac)

    def solve(kmat, rows, b):
        full = kmat + b.size * settings.damping * jnp.eye(kmat.shape[0], dtype=jnp.float64)
        chol = jnp.linalg.cholesky(full)
        y = jax.scipy.linalg.cho_solve((chol, True), spring._residual_parts(b).ravel()).astype(matmul)
        return jnp.concatenate([(y @ r).astype(jnp.float64) for r in rows])

    first, median = _timed(eqx.filter_jit(solve), gram, rows_, residual, repeats=step_repeats)
    per_step["spring_solve"], compile_s["spring_solve"] = median, first - median
    direction = eqx.filter_jit(
        lambda j, r, prev: spring.spring_direction(j, r, prev, settings.damping, settings.momentum, None, matmul)
    )
    first, median = _timed(direction, jac, residual, previous, repeats=step_repeats)
    per_step["spring_direction"], compile_s["spring_direction"] = median, first - median
    _log(f"  N={n} SPRING kernel {per_step['spring_kernel']:.3f} s, solve {per_step['spring_solve']:.3f} s, direction {median:.3f} s")
    del jac, rows_, gram

    step = make_step(static, run.physics, settings, run.ewald)
    fault = jnp.asarray(0.0)
    start = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, fault))
    compile_s["step"] = time.perf_counter() - start
    times = []
    for _ in range(step_repeats):
        start = time.perf_counter()
        state, _ = jax.block_until_ready(step(state, fault))
        times.append(time.perf_counter() - start)
    per_step["step"] = statistics.median(times)
    _log(f"  N={n} step: {per_step['step']:.3f} s")

    # derived
    per_walker["determinants"] = per_walker["head"] - per_walker["envelopes"]
    per_walker["determinants_jet"] = per_walker["head_jet"] - per_walker["envelope_jet"]
    local = per_walker["log_psi_laplacian"] + per_walker.get("ewald", 0.0) + per_walker["moire_potential"]
    parts = {
        "sweeps": per_step["sweeps"],
        "local_energies": local * walkers,
        "log_derivatives": per_walker["log_derivatives"] * walkers,
        "spring_direction": per_step["spring_direction"],
    }
    result["step_parts_s"] = parts
    result["step_parts_sum_over_step"] = sum(parts.values()) / per_step["step"]
    result["step_fractions"] = {k: v / per_step["step"] for k, v in parts.items()}
    lap = per_walker["log_psi_laplacian"]
    result["laplacian_fractions"] = {
        k: per_walker[k] / lap
        for k in ("trunk_jet", "envelope_jet", "determinants_jet", "cusp_jastrow_jet", "pair_jastrow_jet", "radial_jastrow_jet")
        if k in per_walker
    }
    fwd = per_walker["log_psi"]
    result["forward_fractions"] = {
        k: per_walker[k] / fwd for k in ("trunk", "envelopes", "determinants", "cusp_jastrow", "pair_jastrow", "radial_jastrow")
        if k in per_walker
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[6, 24, 54], choices=sorted(CASES))
    parser.add_argument("--step-walkers", type=int, help="walkers of the timed step for every N (default: STEP_WALKERS)")
    parser.add_argument("--batch", type=int, help="walkers of the per-walker programs for every N (default: BATCH)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--json", action="store_true", help="print the JSON on stdout")
    args = parser.parse_args(argv)
    import jax

    from qernel_cli import configure_jax

    configure_jax()  # before the first computation

    report = {
        "benchmark": "components",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "loadavg_at_start": os.getloadavg(),
        "cases": [],
    }
    for n in args.cases:
        _log(f"N = {n}")
        report["cases"].append(profile(n, walkers=args.step_walkers, batch=args.batch))
        if args.out:
            args.out.write_text(json.dumps(report, indent=1) + "\n")
    report["loadavg_at_end"] = os.getloadavg()
    emit(report, args.out, stdout=args.json or not args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
