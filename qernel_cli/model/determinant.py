"""Guarded complex log-determinants and their stable sum.

``log_det`` returns (log|det M|, arg det M) for complex square matrices. A
singular matrix (two same-spin electrons at one point: ψ = 0 exactly) would
give log|det| = -inf and NaN derivatives; it is replaced, by the double-where
trick, with the identity before ``slogdet`` and its log|det| set to
``LOG_FLOOR`` with zero derivative. A regular matrix goes through
``jnp.linalg.slogdet`` untouched, which folx's forward Laplacian recognises.
``combine`` sums K terms ψ_k = exp(a_k + iθ_k) as a complex logsumexp: shift by
max_k a_k (no derivative through the shift), then log|·| and atan2 of the sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

LOG_FLOOR = -1.0e4
"""log|ψ| reported for an exactly singular determinant (ψ = 0): finite, far below any real value."""


def log_det(matrices: Complex[Array, "... n n"]) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """(log|det|, arg det) of each matrix, with a finite value and zero gradient where det = 0."""
    n = matrices.shape[-1]
    real_dtype = jnp.finfo(matrices.dtype).dtype
    if n == 0:
        zeros = jnp.zeros(matrices.shape[:-2], dtype=real_dtype)
        return zeros, zeros
    probe = jnp.linalg.slogdet(jax.lax.stop_gradient(matrices))
    singular = ~jnp.isfinite(probe.logabsdet) | (jnp.abs(probe.sign) == 0)
    eye = jnp.eye(n, dtype=matrices.dtype)
    safe = jnp.where(singular[..., None, None], eye, matrices)
    sign, logabs = jnp.linalg.slogdet(safe)
    phase = jnp.arctan2(jnp.imag(sign), jnp.real(sign)) if jnp.iscomplexobj(sign) else jnp.where(sign < 0, jnp.pi, 0.0)
    logabs = jnp.where(singular, LOG_FLOOR, logabs)
    phase = jnp.where(singular, 0.0, phase)
    return logabs, phase


def combine(
    logabs: Float[Array, " k"], phase: Float[Array, " k"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """log Σ_k exp(logabs_k + i phase_k) as (log|Σ|, arg Σ), stable for any spread of logabs_k."""
    if logabs.shape[0] == 1:
        return logabs[0], phase[0]
    shift = jax.lax.stop_gradient(jnp.max(logabs))
    scale = jnp.exp(logabs - shift)
    re = jnp.sum(scale * jnp.cos(phase))
    im = jnp.sum(scale * jnp.sin(phase))
    modulus2 = re**2 + im**2
    tiny = jnp.finfo(modulus2.dtype).tiny
    cancelled = modulus2 <= tiny
    safe2 = jnp.where(cancelled, 1.0, modulus2)
    log_modulus = jnp.where(cancelled, LOG_FLOOR, shift + 0.5 * jnp.log(safe2))
    angle = jnp.where(cancelled, 0.0, jnp.arctan2(jnp.where(cancelled, 0.0, im), jnp.where(cancelled, 1.0, re)))
    return log_modulus, angle
