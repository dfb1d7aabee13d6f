"""Guarded complex log-determinants and their stable sum.

``log_det`` (from :mod:`qernel_cli.linalg`) returns (log|det M|, arg det M)
for complex square matrices; a singular matrix (two same-spin electrons at
one point: ψ = 0 exactly) gives ``LOG_FLOOR`` with zero derivative instead of
-inf and NaN derivatives. ``combine`` sums K terms ψ_k = exp(a_k + iθ_k) as a
complex logsumexp: shift by max_k a_k (no derivative through the shift), then
log|·| and atan2 of the sum. ``combine_jet`` is its forward-Laplacian rule: with
weights w_k = e^{l_k}/ψ, ∂ log ψ = Σ_k w_k ∂l_k and
∇² log ψ = Σ_k w_k (∇²l_k + (∂l_k)²) − (∂ log ψ)² (complex squares summed over
the tangents).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float

from qernel_cli.linalg import LOG_FLOOR, log_det

__all__ = ["LOG_FLOOR", "combine", "combine_jet", "log_det"]


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


def combine_jet(
    value: Complex[Array, " K"], gradient: Complex[Array, "T K"], laplacian: Complex[Array, " K"]
) -> tuple[Complex[Array, ""], Complex[Array, " T"]]:
    """(∇² log Σ_k e^{l_k}, ∂ log Σ_k e^{l_k}); zero where the sum cancels (as :func:`combine`)."""
    if value.shape[0] == 1:
        return laplacian[0], gradient[:, 0]
    shift = jnp.max(jnp.real(value))
    terms = jnp.exp(value - shift)
    total = jnp.sum(terms)
    cancelled = jnp.abs(total) ** 2 <= jnp.finfo(jnp.float64).tiny
    weights = terms / jnp.where(cancelled, 1.0, total)
    g = gradient @ weights
    lap = jnp.sum(weights * (laplacian + jnp.sum(gradient * gradient, axis=0))) - jnp.sum(g * g)
    return jnp.where(cancelled, 0.0, lap), jnp.where(cancelled, 0.0, g)
