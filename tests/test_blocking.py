"""Coverage of the error bars on AR(1) series, whose true error is known exactly.

Unit-variance AR(1) with coefficient φ has integrated autocorrelation time
τ = (1 + φ)/(1 − φ) and the mean of T values has variance
(1 + 2 Σ_{k<T} (1 − k/T) φ^k)/T. Over a grid of lengths T = 50–200 and
τ = 1–40 (fixed seeds, so the test is deterministic):

* ``blocking``: an error reported without the flag is right (median within
  25 % where most series are unflagged; rarely below half the truth); series
  too short for their τ are flagged instead. The worst cell is T = 50, τ = 2:
  36 % unflagged with median 0.71 (blocks of 2 are still correlated and only
  series whose τ happens to look small pass).
* ``chain_average``: the spread of independent chains gives the error for any
  length, also where blocking cannot (T = 50, τ = 40), and τ is NaN there.
"""

from __future__ import annotations

import numpy as np
import pytest

from qernel_cli.observables.blocking import MIN_CHAINS, blocking, chain_average


def ar1(rng, T: int, tau: float, shape) -> tuple[np.ndarray, float]:
    """(series (T, *shape) in equilibrium, true standard error of a T-value mean)."""
    phi = (tau - 1) / (tau + 1)
    x = rng.normal(size=shape)
    out = np.empty((T, *np.atleast_1d(shape)))
    for t in range(T):
        x = phi * x + np.sqrt(1 - phi**2) * rng.normal(size=shape)
        out[t] = x
    k = np.arange(1, T)
    return out, float(np.sqrt((1 + 2 * np.sum((1 - k / T) * phi**k)) / T))


@pytest.mark.parametrize("T", [50, 100, 200])
def test_blocking_error_is_right_or_flagged(T):
    rng = np.random.default_rng(T)
    for tau in (1, 2, 4, 10, 20, 40):
        x, true = ar1(rng, T, tau, 400)
        b = blocking(x)
        ratio, ok = b.error / true, b.converged
        where = f"T = {T}, τ = {tau}"
        assert np.mean(ok & (ratio < 0.5)) <= 0.03, where
        assert np.mean(ok & (ratio < 0.75)) <= 0.3, where
        if np.mean(ok) >= 0.5:
            assert 0.75 <= np.median(ratio[ok]) <= 1.25, where
        if tau == 1:
            assert np.mean(ok) >= 0.9, where  # independent values are not flagged
        if tau >= 10:
            assert np.mean(ok) <= 0.05, where  # T ≤ 20τ: too short, flagged
        assert np.all(np.isnan(b.tau) | (b.tau > 0))


def test_before_the_block_length_check_short_series_passed_with_errors_far_too_small():
    """The χ² test alone accepted most T = 100, τ = 10 series at ~half the true error; now they are flagged."""
    rng = np.random.default_rng(3)
    x, true = ar1(rng, 100, 10.0, 400)
    b = blocking(x)
    assert np.mean(b.converged) < 0.05
    assert np.median(b.error / true) < 0.7  # the flagged error is a lower bound


@pytest.mark.parametrize("T, tau", [(50, 1.0), (50, 40.0), (1000, 10.0)])
def test_chain_spread_gives_the_error_at_any_length(T, tau):
    rng = np.random.default_rng(int(T + 5 * tau))  # the seeds of the earlier τ = ½–20 cases (τ now 1 + 2Σρ)
    ratios, converged, taus = [], [], []
    for _ in range(200):
        x, true = ar1(rng, T, tau, 64)  # (T, 64 chains)
        c = chain_average(x)
        assert c.error_source == "chains"
        ratios.append(c.error / (true / np.sqrt(64)))
        converged.append(c.converged)
        taus.append(c.tau)
    ratios = np.asarray(ratios)
    assert 0.92 <= np.median(ratios) <= 1.08
    assert np.mean(np.abs(ratios - 1) < 0.25) >= 0.8
    taus = np.asarray(taus)
    assert np.all(np.isnan(taus[~np.asarray(converged)]))
    if tau == 40.0:
        assert np.mean(converged) < 0.05  # τ not measurable in 50 records
    else:
        assert np.mean(converged) > 0.5
        assert abs(np.nanmedian(taus) / tau - 1) < 0.3


def test_chain_average_definition():
    x = np.array([[1.0, 3.0, 5.0, 7.0] * 4] * 3)  # 3 records of 16 chains, each chain constant
    c = chain_average(x)
    means = x.mean(axis=0)
    assert c.mean == pytest.approx(4.0)
    assert c.error == pytest.approx(np.std(means, ddof=1) / 4.0)
    few = chain_average(x[:, : MIN_CHAINS - 1])
    assert few.error_source == "blocking"
    with pytest.raises(ValueError, match="records, chains"):
        chain_average(x[0])
