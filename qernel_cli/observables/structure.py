"""Two-body observables in reciprocal space: structure factor S(q) and the crystal order parameter (g(r): ``pair_correlation``).

Moiré units: positions in a_M, wave vectors in 1/a_M. Errors are standard
errors over independent samples: by default every configuration (leading index
of ``positions`` (..., N, 2)); ``independent_axes=k`` makes only the first k
leading axes independent (walkers) and pools the rest (records of one chain)
within each sample, as in :func:`qernel_cli.observables.blocking.as_samples`.

Conventions:

* ρ_q = Σ_j e^{-iq·r_j};  S(q) = ⟨|ρ_q|²⟩/N, so uncorrelated particles give
  S(q ≠ 0) = 1 and a perfect single-sublattice crystal S(Bragg) = N. The
  connected part S_c(q) = S(q) − |⟨ρ_q⟩|²/N removes the (pinned) Bragg peak;
  |⟨ρ_q⟩|² is estimated without bias (|ρ̄|² minus its sampling variance).
  q must be a supercell reciprocal vector for ρ_q to be periodic.
* ν = 2/3 crystal order: the generalised Wigner crystal occupies 2 of the 3
  √3×√3 sublattices of moiré sites (a honeycomb). Its ordering vectors are
  the moiré Brillouin-zone corners, m² = (4/N²)·⟨|ρ_K|²⟩ averaged over the six
  corners; m² = 1 for point electrons on a perfect honeycomb of sites
  (|ρ_K| = N/2 since 1 + e^{2πi/3} has modulus 1), and 4·S(K)/N in general,
  i.e. 4/N for an uncorrelated liquid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Complex, Float, Int

from qernel_cli.lattice import MOIRE_RECIPROCAL, Supercell, points_in_disc
from qernel_cli.observables.blocking import (
    CHUNK_ELEMENTS,
    Moments,
    as_samples,
    sample_chunks,
)

__all__ = [
    "CrystalOrderSamples",
    "OrderParameter",
    "StructureFactor",
    "crystal_order",
    "crystal_order_per_sample",
    "density_fourier",
    "ordering_vectors",
    "structure_factor",
    "supercell_q_vectors",
]

# ---------------------------------------------------------------------------- S(q)


def supercell_q_vectors(
    supercell: Supercell, q_max: float
) -> tuple[Float[np.ndarray, "Q 2"], Int[np.ndarray, "Q 2"]]:
    """All q = m_1 B_1 + m_2 B_2 ≠ 0 with |q| ≤ q_max (1/a_M), and their labels (m_1, m_2).

    Ordered by |q|, then by angle in [-π, π); closed under q → −q.
    """
    q, labels = points_in_disc(supercell.reciprocal, q_max)
    keep = np.any(labels != 0, axis=-1)
    q, labels = q[keep], labels[keep]
    norm = np.linalg.norm(q, axis=-1)
    order = np.lexsort((np.round(np.arctan2(q[:, 1], q[:, 0]), 10), np.round(norm, 10)))
    return q[order], labels[order]


def density_fourier(
    positions: Float[np.ndarray, "... N 2"], q: Float[np.ndarray, "Q 2"], supercell: Supercell | None = None
) -> Complex[np.ndarray, "... Q"]:
    """ρ_q = Σ_j e^{-iq·r_j} of every configuration (computed in chunks).

    With ``supercell`` given and every q = m_1 B_1 + m_2 B_2 one of its reciprocal
    vectors, ρ_q is assembled as Σ_j e^{-i m_1 B_1·r_j} e^{-i m_2 B_2·r_j}, one batched
    matrix product for a whole block of labels (much faster than a sine and cosine
    per q and electron when q fills a disc); the result is the same.
    """
    flat = as_samples(positions, 0)[0]
    q = np.asarray(q, dtype=np.float64).reshape(-1, 2)
    S, N = flat.shape[:2]
    out = np.empty((S, len(q)), dtype=np.complex128)
    labels = _labels(q, supercell)
    if labels is not None:
        low = labels.min(axis=0)
        n1, n2 = labels.max(axis=0) - low + 1
        if n1 * n2 > 8 * len(q):
            labels = None  # a sparse set of q: direct evaluation is cheaper
    if labels is None:
        chunk = max(1, CHUNK_ELEMENTS // max(1, N * len(q)))
        for start in range(0, S, chunk):
            phase = flat[start : start + chunk] @ q.T  # (c, N, Q)
            out[start : start + chunk] = np.sum(np.cos(phase), axis=1) - 1j * np.sum(np.sin(phase), axis=1)
    else:
        m1, m2 = np.arange(n1) + low[0], np.arange(n2) + low[1]
        B = supercell.reciprocal
        chunk = max(1, CHUNK_ELEMENTS // max(1, N * (n1 + n2) + n1 * n2))
        for start in range(0, S, chunk):
            phase = flat[start : start + chunk] @ B.T  # (c, N, 2)
            e1 = np.exp(-1j * phase[..., 0:1] * m1)  # (c, N, n1)
            e2 = np.exp(-1j * phase[..., 1:2] * m2)  # (c, N, n2)
            block = np.matmul(np.swapaxes(e1, 1, 2), e2)  # (c, n1, n2)
            out[start : start + chunk] = block[:, labels[:, 0] - low[0], labels[:, 1] - low[1]]
    return out.reshape(np.shape(positions)[:-2] + (len(q),))


def _labels(q: np.ndarray, supercell: Supercell | None) -> np.ndarray | None:
    """Integer (m_1, m_2) with q = m_1 B_1 + m_2 B_2, or None if not all q are supercell reciprocal vectors."""
    if supercell is None or len(q) == 0:
        return None
    frac = q @ supercell.cell.T / (2.0 * np.pi)
    labels = np.round(frac)
    if not np.allclose(frac, labels, rtol=0, atol=1e-8):
        return None
    return labels.astype(np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class StructureFactor:
    """S(q) = ⟨|ρ_q|²⟩/N and its connected part at the given wave vectors.

    Attributes:
        q: (Q, 2) wave vectors (1/a_M).
        value: (Q,) S(q).
        error: (Q,) standard error of S(q).
        connected: (Q,) S(q) − |⟨ρ_q⟩|²/N (unbiased estimate of |⟨ρ_q⟩|²).
        connected_error: (Q,) its standard error (delta method, covariances included).
        rho_mean: (Q,) complex ⟨ρ_q⟩.
        n_samples: number of independent samples.
        n_electrons: N.
    """

    q: Float[np.ndarray, "Q 2"]
    value: Float[np.ndarray, " Q"]
    error: Float[np.ndarray, " Q"]
    connected: Float[np.ndarray, " Q"]
    connected_error: Float[np.ndarray, " Q"]
    rho_mean: Complex[np.ndarray, " Q"]
    n_samples: int
    n_electrons: int


def structure_factor(
    positions: Float[np.ndarray, "... N 2"],
    q: Float[np.ndarray, "Q 2"],
    independent_axes: int | None = None,
    supercell: Supercell | None = None,
) -> StructureFactor:
    """Static structure factor S(q) = ⟨|ρ_q|²⟩/N over the samples (see module conventions).

    ``supercell`` only speeds up the evaluation (see :func:`density_fourier`).
    """
    samples = as_samples(positions, independent_axes)
    q = np.asarray(q, dtype=np.float64).reshape(-1, 2)
    S, R, N = samples.shape[:3]
    moments = Moments(vector=True)  # per q: (|ρ|², Re ρ, Im ρ), averaged over the R records of a sample
    for rows, record_slices in sample_chunks(S, R, N * len(q)):
        total = 0
        for records in record_slices:
            rho = density_fourier(samples[rows, records], q, supercell)  # (c, r, Q)
            total = total + np.sum(np.stack([np.abs(rho) ** 2, rho.real, rho.imag], axis=-1), axis=1)
        moments.add(total / R)
    mean, cov = moments.mean, moments.covariance  # (Q, 3), (Q, 3, 3)
    value = mean[:, 0] / N
    xy = mean[:, 1:]
    rho2 = np.sum(xy**2, axis=-1)
    if S > 1:
        rho2 = rho2 - (cov[:, 1, 1] + cov[:, 2, 2]) / S
    # Delta method: N·S_c = ā − x̄² − ȳ² has gradient (1, −2x̄, −2ȳ) in the means of (|ρ|², Re ρ, Im ρ).
    w = np.concatenate([np.ones((len(q), 1)), -2.0 * xy], axis=-1)
    var_c = np.einsum("qi,qij,qj->q", w, cov, w)
    return StructureFactor(
        q=q,
        value=value,
        error=moments.error[:, 0] / N,
        connected=value - rho2 / N,
        connected_error=np.sqrt(np.maximum(var_c, 0.0) / S) / N,
        rho_mean=xy[:, 0] + 1j * xy[:, 1],
        n_samples=S,
        n_electrons=N,
    )


# ---------------------------------------------------------------------------- crystal order


def ordering_vectors(supercell: Supercell) -> Float[np.ndarray, "6 2"]:
    """The six moiré Brillouin-zone corners: K-class first, then K' = −K (1/a_M).

    K_1 = (b_1 + 2b_2)/3, K_2 = −(2b_1 + b_2)/3, K_3 = (b_1 − b_2)/3 differ by moiré
    reciprocal vectors and all have K·a_1 = 2π/3, K·a_2 = −2π/3 (mod 2π); rows
    3..5 are their negatives. They are supercell reciprocal vectors only when L1
    and L2 are multiples of 3 (ValueError otherwise).
    """
    if supercell.L1 % 3 or supercell.L2 % 3:
        raise ValueError(
            f"the √3×√3 ordering vectors need L1 and L2 divisible by 3; got {supercell.L1}×{supercell.L2}"
        )
    b1, b2 = MOIRE_RECIPROCAL
    k = np.stack([(b1 + 2 * b2) / 3, -(2 * b1 + b2) / 3, (b1 - b2) / 3])
    return np.concatenate([k, -k])


@dataclasses.dataclass(frozen=True, eq=False)
class CrystalOrderSamples:
    """Per-configuration crystal order.

    Attributes:
        m2: (...) m² = (4/N²)·mean over the six K of |ρ_K|².
        rho: (..., 6) complex ρ_K at :func:`ordering_vectors`.
        phase: (...) arg(ρ_{K_1} + ρ_{K_2} + ρ_{K_3}) in (-π, π]: which of the three
            degenerate patterns; translating every electron by a_1 shifts it by −2π/3.
    """

    m2: Float[np.ndarray, "*batch"]
    rho: Complex[np.ndarray, "... 6"]
    phase: Float[np.ndarray, "*batch"]


@dataclasses.dataclass(frozen=True, eq=False)
class OrderParameter:
    """Sample average of m².

    Attributes:
        value: ⟨m²⟩ (1 for a perfect ν = 2/3 honeycomb crystal of point electrons).
        error: its standard error over the samples.
        liquid: 4/N, the value for uncorrelated uniform electrons (S(K) = 1).
        n_samples: number of independent samples.
    """

    value: float
    error: float
    liquid: float
    n_samples: int


def crystal_order_per_sample(positions: Float[np.ndarray, "... N 2"], supercell: Supercell) -> CrystalOrderSamples:
    """m² and ρ_K of every configuration (see module conventions)."""
    rho = density_fourier(positions, ordering_vectors(supercell))
    N = np.shape(positions)[-2]
    m2 = 4.0 / N**2 * np.mean(np.abs(rho) ** 2, axis=-1)
    return CrystalOrderSamples(m2=m2, rho=rho, phase=np.angle(np.sum(rho[..., :3], axis=-1)))


def crystal_order(
    positions: Float[np.ndarray, "... N 2"], supercell: Supercell, independent_axes: int | None = None
) -> OrderParameter:
    """⟨m²⟩ over the samples, with standard error and the uncorrelated-liquid value 4/N."""
    samples = as_samples(positions, independent_axes)
    S, N = samples.shape[0], samples.shape[2]
    m2 = crystal_order_per_sample(samples, supercell).m2  # (S, R)
    moments = Moments()
    moments.add(np.mean(m2, axis=1))
    return OrderParameter(value=float(moments.mean), error=float(moments.error), liquid=4.0 / N, n_samples=S)
