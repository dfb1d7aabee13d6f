"""Error bars of the sample → observe pipeline agree with the scatter of independent repetitions.

One fixed wavefunction (the tiny model as built, Coulomb on) is sampled at
one depth by 20 independent groups of 16 walkers (each group its own random
starts and random stream; the groups' depths differ by 1e-9 meV so that each
takes its own starts from a pool of 20 strata). Each group's energy and
crystal order get their error bars exactly as ``qernel observe`` computes
them; the χ² of the 20 means about their weighted mean must lie in its 99 %
band for 19 degrees of freedom. Treating every record as independent (the
naive error) must fail the same test for the energy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from clitools import TINY_RUN
from qernel_cli.config import resolve
from qernel_cli.lattice import Supercell
from qernel_cli.observables import crystal_order
from qernel_cli.observables.blocking import chain_average
from qernel_cli.vmc.mcmc import Walkers
from qernel_cli.vmc.sampling import sample
from qernel_cli.vmc.assembly import build, initial_state

GROUPS, WALKERS, RECORDS = 20, 16, 24


def _chi2(means: np.ndarray, errors: np.ndarray) -> float:
    w = 1.0 / errors**2
    centre = np.sum(w * means) / np.sum(w)
    return float(np.sum((means - centre) ** 2 * w))


def test_error_bars_cover_the_scatter_of_independent_repetitions():
    overrides = [o for o in TINY_RUN if not o.startswith("hamiltonian.coulomb")] + ["hamiltonian.coulomb=true"]
    run = build(resolve("moire-tiny", overrides))
    cell = np.asarray(run.physics.supercell.cell)
    n = run.config.n_electrons
    v = 10.0 / run.energy_unit_meV
    depths = v + 1e-9 / run.energy_unit_meV * np.arange(GROUPS)
    rng = np.random.default_rng(5)
    width = float(initial_state(run, jax.random.PRNGKey(0)).walkers.width[0])
    pool = Walkers(
        positions=jnp.asarray(rng.uniform(size=(GROUPS, WALKERS, n, 2)) @ cell),
        conditions=jnp.asarray(depths)[:, None],
        log_abs=jnp.zeros((GROUPS, WALKERS)),
        width=jnp.full(GROUPS, width),
    )
    energy, positions = [], []

    def on_record(r, record):
        energy.append(np.asarray(record["total"]) / n)  # (groups, walkers), E_M per electron
        positions.append(np.asarray(record["positions"]))

    taken = sample(run, run.params, pool, depths, walkers=WALKERS, records=RECORDS, sweeps=2, burn_in=60,
                   key=jax.random.PRNGKey(3), on_record=on_record)
    assert taken == RECORDS
    energy = np.stack(energy)  # (records, groups, walkers)
    positions = np.stack(positions)  # (records, groups, walkers, n, 2)
    dof = GROUPS - 1
    band = scipy.stats.chi2.ppf([0.005, 0.995], dof)

    stats = [chain_average(energy[:, g]) for g in range(GROUPS)]
    means = np.array([s.mean for s in stats])
    chi2 = _chi2(means, np.array([s.error for s in stats]))
    assert band[0] <= chi2 <= band[1], (chi2, band)
    naive = np.array([energy[:, g].std() / np.sqrt(energy[:, g].size) for g in range(GROUPS)])
    assert _chi2(means, naive) > band[1]  # records of one chain are correlated: the naive error is too small

    supercell = Supercell(run.config.supercell.L1, run.config.supercell.L2)
    orders = [crystal_order(np.swapaxes(positions[:, g], 0, 1), supercell, independent_axes=1) for g in range(GROUPS)]
    chi2 = _chi2(np.array([o.value for o in orders]), np.array([o.error for o in orders]))
    assert band[0] <= chi2 <= band[1], (chi2, band)
