"""Autocorrelation times, correlated error bars and the health warnings of a run."""

import numpy as np
import pytest

from qernel_cli.observables.blocking import autocorrelation_time, chain_average
from qernel_cli.vmc import health
from qernel_cli.vmc.spring import clipped_fraction


def ar1(rho: float, t: int, w: int, seed: int) -> np.ndarray:
    """W independent stationary AR(1) chains x_t = ρ x_{t−1} + noise; exact τ = (1 + ρ)/(1 − ρ)."""
    rng = np.random.default_rng(seed)
    x = np.empty((t, w))
    x[0] = rng.normal(size=w) / np.sqrt(1 - rho**2)
    for i in range(1, t):
        x[i] = rho * x[i - 1] + rng.normal(size=w)
    return x


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_autocorrelation_time_of_ar1_chains(rho):
    exact = (1 + rho) / (1 - rho)
    tau = autocorrelation_time(ar1(rho, 400, 128, seed=1))
    assert tau == pytest.approx(exact, rel=0.15)  # statistical error of the estimate: ~6 %


def test_evaluation_error_matches_the_spread_of_repeated_runs():
    """The evaluation's estimator (spread of the walkers' chain means) at its own size: 16 chains, 40 blocks, τ ≈ 5.7."""
    rho, t, w = 0.7, 40, 16
    runs = [chain_average(ar1(rho, t, w, seed=s)) for s in range(300)]
    means = np.array([c.mean for c in runs])
    errors = np.array([c.error for c in runs])
    true_spread = means.std()
    assert np.median(errors) == pytest.approx(true_spread, rel=0.2)
    naive = np.median([ar1(rho, t, w, seed=s).std() / np.sqrt(t * w) for s in range(20)])
    assert naive < 0.6 * true_spread  # the uncorrected error would be far too small


def test_degenerate_series():
    assert autocorrelation_time(np.ones((10, 4))) == 1.0
    assert np.isnan(autocorrelation_time(np.ones((1, 4))))


def test_clipped_fraction_counts_what_clipping_changes():
    e = np.zeros((2, 100))
    e[0, :] = np.linspace(-1, 1, 100)
    e[0, :3] = [-100.0, 50.0, 80.0]  # three outliers far beyond 5 MAD
    frac = np.asarray(clipped_fraction(e, 5.0))
    assert frac[0] == pytest.approx(0.03) and frac[1] == 0.0


def healthy(**changes) -> health.Health:
    steps = 100
    base = dict(
        acceptance=np.full((steps, 2), 0.5),
        clipped=np.full((steps, 2), 0.001),
        accepted=np.ones(steps, dtype=np.int8),
        autocorrelation_blocks=[1.1, 1.3],
        sweeps_per_block=10,
    )
    base.update(changes)
    return health.run_health(**base)


def test_a_healthy_run_has_no_warnings():
    h = healthy()
    assert h.warnings() == []
    d = h.to_dict()
    assert d["rejected_fraction"] == 0.0 and d["autocorrelation_sweeps"] == pytest.approx([11.0, 13.0])
    assert d["acceptance"] == pytest.approx(0.5) and d["clipped_fraction"] == pytest.approx(0.001)


@pytest.mark.parametrize(
    "changes,words",
    [
        ({"accepted": np.r_[np.zeros(5), np.ones(95)].astype(np.int8)}, "5 of 100 steps were non-finite"),
        ({"acceptance": np.full((100, 2), 0.05)}, "acceptance 0.05"),
        ({"acceptance": np.full((100, 2), 0.97)}, "acceptance 0.97"),
        ({"clipped": np.full((100, 2), 0.1)}, "10.0% of local energies were clipped"),
        ({"autocorrelation_blocks": [1.0, 4.5]}, "autocorrelation time 4.5 evaluation blocks (45 sweeps)"),
    ],
)
def test_unhealthy_values_warn(changes, words):
    warnings = healthy(**changes).warnings()
    assert len(warnings) == 1 and words in warnings[0]
    assert "\n" not in warnings[0]


def test_nan_rows_of_old_stores_are_ignored():
    clipped = np.full((10, 2), 0.001)
    clipped[:4] = np.nan  # steps written before the variable existed
    h = healthy(clipped=clipped, acceptance=np.full((10, 2), 0.5), accepted=np.ones(10, dtype=np.int8))
    assert h.clipped_fraction == pytest.approx(0.001) and h.warnings() == []
