"""Energies at fixed depths with error bars that hold at any autocorrelation: the start and final evaluations of a training."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import numpy as np
from jax.sharding import Mesh

from qernel_cli import parallel, supervisor
from qernel_cli.observables.blocking import autocorrelation_time, chain_average
from qernel_cli.vmc.assembly import Run, model_sweeps
from qernel_cli.vmc.mcmc import Walkers, equilibrate, with_conditions
from qernel_cli.vmc.step import laid_out, local_energies, log_abs_fn


def evaluate(
    run: Run,
    params: Any,
    walkers: Walkers,
    key: jax.Array,
    depths_moire: np.ndarray,
    n_blocks: int | None = None,
    stop: Callable[[], bool] | None = None,
    name: str = "evaluation",
    mesh: Mesh | None = None,
) -> dict[str, np.ndarray]:
    """Energies per electron (E_M) at fixed depths, with error bars that hold at any autocorrelation.

    Five sweep blocks without energies re-equilibrate the chains at the new
    depths; then ``n_blocks`` (default ``training.evaluate_blocks``) blocks of
    ``sampler.steps_per_iteration`` sweeps each record every walker's local
    energy. Per depth: ``X`` (mean) and ``X_error`` for every component (the
    spread of the walkers' chain means, :func:`~qernel_cli.observables.blocking.chain_average`:
    right for any number of blocks), and ``autocorrelation_blocks``, the
    integrated autocorrelation time τ of the total local energy in blocks
    (the sampling-efficiency check of :mod:`qernel_cli.vmc.health`). ``stop()`` is
    polled before every block (KeyboardInterrupt when true); ``name`` is the
    phase shown by the supervisor; ``mesh``: the devices (default: all).
    """
    n_blocks = run.config.training.evaluate_blocks if n_blocks is None else n_blocks
    model = eqx.combine(params, run.static)
    g = walkers.conditions.shape[0]
    if len(depths_moire) != g:
        raise ValueError("one depth per walker group")
    walkers = with_conditions(log_abs_fn(model), walkers, np.asarray(depths_moire, dtype=np.float64)[:, None])
    walkers = laid_out(walkers, mesh)

    sweeps = model_sweeps(run, run.settings.mcmc_steps)

    @eqx.filter_jit
    def block(params, walkers, key):
        walkers, acc = sweeps(params, walkers, key)
        model = eqx.combine(params, run.static)
        return walkers, acc, local_energies(model, walkers, run.physics, run.ewald, run.settings.walker_chunk, run.settings.laplacian_sparsity)

    stop = stop or (lambda: False)
    n = run.config.n_electrons
    supervisor.phase(name)
    # re-equilibrate at the fixed depths, adapting the width
    walkers = equilibrate(lambda w, k: sweeps(params, w, k), walkers, key, 5, run.settings.target_acceptance, stop=stop, after_block=supervisor.beat)
    names = ("total", "kinetic", "potential", "interaction")
    rows = {component: [] for component in names}
    for i in range(n_blocks):
        if stop():
            raise KeyboardInterrupt
        walkers, acc, e = block(params, walkers, jax.random.fold_in(key, 1000 + i))
        e = parallel.to_host(e)  # every walker's energies (groups, walkers): small
        for component in names:
            rows[component].append(np.asarray(getattr(e, component)) / n)
        supervisor.beat()
    result: dict[str, np.ndarray] = {}
    series = {component: np.array(values) for component, values in rows.items()}  # (blocks, groups, walkers)
    for component, x in series.items():
        stats = [chain_average(x[:, j]) for j in range(g)]  # walkers are independent chains: their spread is the error
        result[component] = np.array([c.mean for c in stats])
        result[component + "_error"] = np.array([c.error for c in stats])
        if component == "total":
            result["autocorrelation_blocks"] = np.array([autocorrelation_time(x[:, j]) for j in range(g)])
    return result
