"""Guarded complex log-determinants and their stable sum.

``log_det`` (from :mod:`qernel_cli.linalg`) returns (log|det M|, arg det M)
for complex square matrices; a singular matrix (two same-spin electrons at
one point: ψ = 0 exactly) gives ``LOG_FLOOR`` with zero derivative instead of
-inf and NaN derivatives. ``combine`` sums K terms ψ_k = exp(a_k + iθ_k) as a
complex logsumexp: shift by max_k a_k (no derivative through the shift), then
log|·| and atan2 of the sum.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from qernel_cli.linalg import LOG_FLOOR, log_det

__all__ = ["LOG_FLOOR", "combine", "log_det"]


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
