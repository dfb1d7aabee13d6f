"""Error bars for Monte Carlo averages: blocking of correlated series, moments of independent samples.

``blocking`` implements Flyvbjerg–Petersen repeated pairwise blocking
(J. Chem. Phys. 91, 461 (1989)) with the block level chosen automatically by
the hypothesis test of M. Jonsson, Phys. Rev. E 98, 043304 (2018):

* level k holds n_k block means of 2^k consecutive values (level 0 is the series);
  going from k to k+1 averages neighbouring pairs and drops an odd last value;
* at each level, ρ̂_k is the lag-1 autocorrelation of the block means and
  M_k = Σ_{j≥k} n_j ρ̂_j²; if the block means from level k on are independent,
  M_k is χ² distributed with (number of levels ≥ k) degrees of freedom;
* the chosen level is the first k with M_k below the χ² quantile at
  ``confidence`` whose blocks are also long against the correlation time
  (2^k ≥ 3(τ − 1) with the largest τ any level or the lag-1 autocorrelation
  suggests); the error is estimated from the spread of its block means.
  Where no level qualifies the series is too short for its correlation time:
  ``converged`` is False and the error is a lower bound. On AR(1) series
  (``tests/test_blocking.py``) the unflagged errors are within 25 % of the
  true one in the median, and series with T < ~15τ are flagged.

``chain_average`` gives the error of an average over several independent
chains from the spread of their means, which is right for any chain length,
with blocking of the chain-averaged series as the check on the correlation
time.

``autocorrelation_time`` estimates τ from many short chains at once (their
autocorrelation pooled, the sum cut by Sokal's window): the training's
evaluation has only ~20 blocks per walker, too few for blocking to measure τ,
but hundreds of walkers. Every τ here is τ = 1 + 2 Σ_{t≥1} ρ(t) (1 for
independent values, error² = τ·var/n).

``Moments`` accumulates the mean and (co)variance of *independent* samples
chunk by chunk (Chan–Golub–LeVeque pairwise update), so large sample sets are
never held in memory; the other observables use it for their standard errors.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.stats
from jaxtyping import Bool, Float, Int

__all__ = ["Blocking", "ChainAverage", "Moments", "as_samples", "autocorrelation_time", "blocking", "chain_average", "sample_chunks"]

BLOCK_FACTOR = 3.0
"""A blocking level counts only if its blocks hold at least BLOCK_FACTOR·(τ − 1) values (see :func:`blocking`)."""

CHUNK_ELEMENTS = 1 << 22
"""Rough bound on the array elements of one processing chunk (keeps memory at ~100 MB)."""


@dataclasses.dataclass(frozen=True, eq=False)
class Blocking:
    """Mean of a correlated series and its blocking error (elementwise over trailing axes).

    Attributes:
        mean: the sample mean over all T values.
        error: standard error of ``mean`` (NaN only for T = 1).
        tau: integrated autocorrelation time in series steps, τ = 1 + 2 Σ_{t≥1} ρ(t),
            so that error² = τ·var/T (the convention of every τ QERNEL reports);
            independent values give τ ≈ 1. Computed as τ = error²·T/var (1 for a
            constant series).
        naive_error: √(var/T), the standard error if the values were independent.
        block_size: 2^k values per block at the chosen level k.
        n_blocks: number of blocks at the chosen level.
        converged: True where the χ² test accepted a level with at least
            ``min_blocks`` blocks; False where no level passed (the deepest usable
            level is reported and the error is likely an underestimate) or the
            series is shorter than ``min_blocks`` (plain standard error).
        level_errors: (n_levels, ...) the error estimate at every level (for plots).
    """

    mean: Float[np.ndarray, "*batch"]
    error: Float[np.ndarray, "*batch"]
    tau: Float[np.ndarray, "*batch"]
    naive_error: Float[np.ndarray, "*batch"]
    block_size: Int[np.ndarray, "*batch"]
    n_blocks: Int[np.ndarray, "*batch"]
    converged: Bool[np.ndarray, "*batch"]
    level_errors: Float[np.ndarray, "levels ..."]


def blocking(series: Float[np.ndarray, "T ..."], confidence: float = 0.99, min_blocks: int = 16) -> Blocking:
    """Blocking analysis of a time series (axis 0 is Markov-chain time).

    Args:
        series: shape (T,) or (T, ...); every trailing element is analysed separately.
        confidence: χ² quantile of the independence test (Jonsson uses 0.99).
        min_blocks: levels with fewer blocks are not considered (the error of an
            error from n blocks is ≈ 1/√(2n); 16 blocks → ±18 %).

    Error at level k: √(s_k²·2^k/T), with s_k² the unbiased variance of the
    block means, i.e. the variance of a block mean scaled to the mean of all T
    values (blocks only cover the first n_k·2^k values when T is not a power of
    two). Short series (T < min_blocks) get the plain standard error
    (``converged`` False); T = 1 gives error NaN and τ NaN.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError("series must have at least one value along axis 0")
    T = x.shape[0]
    mean = np.mean(x, axis=0)
    if T == 1:
        nan = np.full(mean.shape, np.nan)
        one = np.ones(mean.shape, dtype=np.int64)
        return Blocking(
            mean=mean[()], error=nan[()], tau=nan[()], naive_error=nan[()], block_size=one[()],
            n_blocks=one[()], converged=np.zeros(mean.shape, bool)[()], level_errors=nan[None],
        )
    var = np.var(x, axis=0, ddof=1)

    errors, stats, sizes, counts, rho_first = _levels(x)
    level_errors = np.stack(errors)
    usable = [k for k, n in enumerate(counts) if n >= min_blocks]

    shape = mean.shape
    if not usable:
        chosen = np.zeros(shape, dtype=np.int64)
        converged = np.zeros(shape, dtype=bool)
    else:
        top = usable[-1]
        tail = np.cumsum(np.stack(stats[: top + 1])[::-1], axis=0)[::-1]  # M_k over usable levels
        dof = top + 1 - np.arange(top + 1)
        quantile = scipy.stats.chi2.ppf(confidence, dof).reshape((-1,) + (1,) * len(shape))
        passed = tail < quantile
        # A level also needs blocks long against the correlation: 2^k ≥ 3(τ_ref − 1), τ_ref the largest
        # of the levels' τ and of the AR(1) value of the lag-1 autocorrelation. Without this the χ² test
        # accepts short series (T ≲ 25τ) whose blocks are still correlated: median error 0.3–0.7× the true one.
        tau_levels = np.divide(level_errors[: top + 1] ** 2 * T, var, out=np.ones((top + 1,) + shape), where=var > 0)
        rho1 = np.clip(rho_first, -0.99, 0.99)
        tau_ref = np.maximum(np.max(tau_levels, axis=0), (1 + rho1) / (1 - rho1))
        long_enough = np.asarray(sizes[: top + 1]).reshape((-1,) + (1,) * len(shape)) >= BLOCK_FACTOR * (tau_ref - 1)
        passed = passed & long_enough
        converged = np.any(passed, axis=0)
        chosen = np.where(converged, np.argmax(passed, axis=0), top)

    error = np.take_along_axis(level_errors, chosen[None], axis=0)[0]
    tau = np.divide(error**2 * T, var, out=np.ones(shape), where=var > 0)
    return Blocking(
        mean=mean[()],
        error=error[()],
        tau=tau[()],
        naive_error=np.sqrt(var / T)[()],
        block_size=np.asarray(sizes, dtype=np.int64)[chosen][()],
        n_blocks=np.asarray(counts, dtype=np.int64)[chosen][()],
        converged=converged[()],
        level_errors=level_errors,
    )


def _levels(x: Float[np.ndarray, "T ..."]) -> tuple[list, list, list[int], list[int], np.ndarray]:
    """Per blocking level k: (error estimate, n_k ρ̂_k², block size 2^k, block count n_k), and ρ̂_0.

    Level k+1 averages neighbouring pairs of level k (an odd last value is dropped).
    """
    T = x.shape[0]
    errors, stats, sizes, counts = [], [], [], []
    rho_first = None
    block, size = x, 1
    while block.shape[0] >= 2:
        n = block.shape[0]
        centred = block - np.mean(block, axis=0)
        s2 = np.sum(centred**2, axis=0) / n  # biased variance of the block means
        gamma = np.sum(centred[1:] * centred[:-1], axis=0) / n  # lag-1 autocovariance
        rho = np.divide(gamma, s2, out=np.zeros_like(s2), where=s2 > 0)
        errors.append(np.sqrt(s2 * n / (n - 1) * size / T))
        stats.append(n * rho**2)
        if size == 1:
            rho_first = rho
        sizes.append(size)
        counts.append(n)
        m = n // 2
        block = 0.5 * (block[0 : 2 * m : 2] + block[1 : 2 * m : 2])
        size *= 2
    return errors, stats, sizes, counts, rho_first


SOKAL_WINDOW = 5.0
"""The autocorrelation sum is cut at the first lag M ≥ SOKAL_WINDOW · τ(M) (Sokal's automatic window)."""


def autocorrelation_time(series: Float[np.ndarray, "T W"]) -> float:
    """Integrated autocorrelation time τ = 1 + 2 Σ_k ρ(k) of W independent chains of length T (in steps of the series).

    ρ(k) is pooled over the chains around their common mean (unbiased for the
    stationary chains of one Hamiltonian), and the sum is cut by Sokal's
    window. τ = 1 for independent samples; the standard error of the mean of
    all T·W values is then sqrt(τ · var / (T·W)). Returns 1 for a constant
    series and NaN for T < 2.
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    t = x.shape[0]
    if t < 2:
        return float("nan")
    d = x - x.mean()
    c0 = np.mean(d * d)
    if not np.isfinite(c0) or c0 <= 0.0:
        return 1.0
    tau = 1.0
    for k in range(1, t // 2 + 1):
        rho = np.mean(d[:-k] * d[k:]) / c0
        tau += 2.0 * rho
        if k >= SOKAL_WINDOW * tau:
            break
    return float(max(tau, 1.0))


@dataclasses.dataclass(frozen=True)
class ChainAverage:
    """Mean over T records of W independent chains, with its error bar (same units as the values).

    Attributes:
        mean: mean over all T·W values.
        error: standard error of ``mean``: the spread of the W chain means over √W
            (W ≥ :data:`MIN_CHAINS`), else the blocking error of the chain-averaged series.
        error_source: ``"chains"`` or ``"blocking"``: which of the two ``error`` is.
        blocking_error: blocking error of the chain-averaged series (the cross-check).
        converged: whether that blocking found a level with blocks long against the
            correlation time; False means the records are too short to measure τ
            (more records fix it) and, for W < MIN_CHAINS, that ``error`` is a lower bound.
        tau: integrated autocorrelation time in records, T·W·error²/var (var of
            single values; 1 for independent records); NaN where not ``converged``
            (not measurable).
    """

    mean: float
    error: float
    error_source: str
    blocking_error: float
    converged: bool
    tau: float


MIN_CHAINS = 16
"""Fewest chains whose spread gives the error (its own relative error is then ≤ 1/√(2·15) ≈ 18 %)."""


def chain_average(values: Float[np.ndarray, "T W"], confidence: float = 0.99, min_blocks: int = 16) -> ChainAverage:
    """Mean and error of ``values[t, w]``, record t of independent chain w (e.g. a walker's local energy).

    The chain means are independent and each has the variance of a T-record
    average, whatever the autocorrelation, so their spread gives the error
    without knowing τ (provided the chains are independent and equilibrated:
    distinct starts, burned in). The blocking of the chain-averaged series
    checks the correlation time and measures τ where the records allow.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"values must have shape (records, chains), got {x.shape}")
    T, W = x.shape
    b = blocking(x.mean(axis=1), confidence, min_blocks)
    if W >= MIN_CHAINS:
        error, source = float(np.std(x.mean(axis=0), ddof=1) / np.sqrt(W)), "chains"
    else:
        error, source = float(b.error), "blocking"
    var = float(np.var(x, ddof=1)) if x.size > 1 else float("nan")
    converged = bool(b.converged)
    tau = T * W * error**2 / var if converged and var > 0 else (1.0 if converged else float("nan"))
    return ChainAverage(mean=float(x.mean()), error=error, error_source=source, blocking_error=float(b.error),
                        converged=converged, tau=float(tau))


def as_samples(positions: Float[np.ndarray, "... N 2"], independent_axes: int | None = None) -> np.ndarray:
    """Reshape configurations (..., N, 2) to (S, R, N, 2): S independent samples of R records each.

    ``independent_axes`` = number of leading axes that index independent samples
    (e.g. walkers); the remaining leading axes (e.g. successive records of one
    Markov chain) are pooled within each sample, so their correlation cannot bias
    the error. None: every configuration is an independent sample (R = 1).
    """
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim < 2 or positions.shape[-1] != 2 or positions.shape[-2] < 1:
        raise ValueError(f"positions must have shape (..., N, 2) with N ≥ 1, got {positions.shape}")
    lead = positions.shape[:-2]
    k = len(lead) if independent_axes is None else int(independent_axes)
    if not 0 <= k <= len(lead):
        raise ValueError(f"independent_axes must be between 0 and {len(lead)}, got {independent_axes!r}")
    S, R = int(np.prod(lead[:k], dtype=np.int64)), int(np.prod(lead[k:], dtype=np.int64))
    if S * R == 0:
        raise ValueError("positions hold no configurations")
    return positions.reshape((S, R) + positions.shape[-2:])


def sample_chunks(n_samples: int, n_records: int, cost_per_config: int):
    """Split S samples × R records into pieces of at most ~CHUNK_ELEMENTS work.

    Yields (sample slice, list of record slices): either several whole samples,
    or one sample whose records are split, so per-sample sums over records can
    be accumulated before the sample enters :class:`Moments`.
    """
    configs = max(1, CHUNK_ELEMENTS // max(1, int(cost_per_config)))
    if configs >= n_records:
        step = configs // n_records
        for start in range(0, n_samples, step):
            yield slice(start, min(start + step, n_samples)), [slice(0, n_records)]
    else:
        records = [slice(r, min(r + configs, n_records)) for r in range(0, n_records, configs)]
        for start in range(n_samples):
            yield slice(start, start + 1), records


class Moments:
    """Running mean and (co)variance of independent samples, fed chunk by chunk.

    ``add(values)`` takes a chunk of shape (n, ...); with ``vector=True`` the last
    axis is a vector whose full covariance is kept (shape (..., k, k)), otherwise
    variances are elementwise. Chunks are merged with the Chan–Golub–LeVeque
    update, which is exact and free of the cancellation of Σx² − n·x̄².
    """

    def __init__(self, vector: bool = False):
        self.vector = vector
        self.count = 0
        self.mean: np.ndarray | None = None
        self.comoment: np.ndarray | None = None  # Σ (x - x̄)(x - x̄)ᵀ, or Σ (x - x̄)²

    def _outer(self, a, b):
        return a[..., :, None] * b[..., None, :] if self.vector else a * b

    def add(self, values: Float[np.ndarray, "n ..."]) -> None:
        values = np.asarray(values, dtype=np.float64)
        n = values.shape[0]
        if n == 0:
            return
        mean = np.mean(values, axis=0)
        centred = values - mean
        comoment = np.sum(self._outer(centred, centred), axis=0)
        if self.count == 0:
            self.count, self.mean, self.comoment = n, mean, comoment
            return
        total = self.count + n
        delta = mean - self.mean
        self.comoment = self.comoment + comoment + self._outer(delta, delta) * (self.count * n / total)
        self.mean = self.mean + delta * (n / total)
        self.count = total

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased (co)variance of one sample (NaN with fewer than two samples)."""
        if self.count < 2:
            return np.full_like(self.comoment, np.nan)
        return self.comoment / (self.count - 1)

    @property
    def error(self) -> np.ndarray:
        """Standard error of the mean (elementwise; the diagonal for ``vector``)."""
        var = self.covariance
        if self.vector:
            var = np.diagonal(var, axis1=-2, axis2=-1)
        return np.sqrt(np.maximum(var, 0.0) / self.count)
