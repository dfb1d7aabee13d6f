"""SPRING / MinSR natural gradient for complex log ψ with real parameters, grouped by Hamiltonian.

With walkers in groups g (one Hamiltonian each, w walkers per group, n = g·w
samples), centred per-sample log-derivatives Ō and centred, clipped local
energies, the imaginary-time target is Ō δ ≈ ε = −(E_L − ⟨E_L⟩_g). Stacking
real and imaginary parts, A = [Re Ō; Im Ō]/√n (2n × P) and b = [Re ε; Im ε]/√n,
the damped least-squares step in the Woodbury (sample-space) form is

    φ = Aᵀ (A Aᵀ + λ I)⁻¹ (b − μ A φ_prev) + μ φ_prev        (SPRING; μ = 0 is MinSR)

which costs O(n² P) time and O(n²) extra memory. Aᵀb = −½ ∇_θ mean_g E_g, so
for λ → ∞ this is plain gradient descent on the mean energy over the family.
The step θ ← θ + η φ is scaled so that its Fisher norm η‖Aφ‖ ≤ max_norm.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, Inexact


def clip_local_energy(e_loc: Float[Array, "g w"], n_mad: float) -> Float[Array, "g w"]:
    """Clip to median ± n_mad·MAD within each group (MAD = median absolute deviation from the median)."""
    median = jnp.median(e_loc, axis=1, keepdims=True)
    mad = jnp.median(jnp.abs(e_loc - median), axis=1, keepdims=True)
    return jnp.clip(e_loc, median - n_mad * mad, median + n_mad * mad)


def energy_residuals(
    e_loc: Inexact[Array, "g w"], n_mad: float
) -> Complex[Array, "g w"]:
    """ε = −(E_L − ⟨E_L⟩_g), with the real part clipped per group (used in the gradient only)."""
    real = clip_local_energy(jnp.real(e_loc), n_mad)
    imag = jnp.imag(e_loc)
    centred = (real - jnp.mean(real, axis=1, keepdims=True)) + 1j * (imag - jnp.mean(imag, axis=1, keepdims=True))
    return -centred


def centred_jacobian(jac: Inexact[Array, "g w p"]) -> Inexact[Array, "g w p"]:
    """Ō = O − ⟨O⟩_g, per group."""
    return jac - jnp.mean(jac, axis=1, keepdims=True)


def energy_gradient(jac: Inexact[Array, "g w p"], residual: Complex[Array, "g w"]) -> Float[Array, " p"]:
    """∇_θ of the mean over groups of E_g: 2 Re ⟨conj(Ō) (E_L − E)⟩ = −2 Re ⟨conj(Ō) ε⟩."""
    o = centred_jacobian(jac)
    n = residual.size
    return -2.0 * jnp.real(jnp.einsum("gwp,gw->p", jnp.conj(o), residual)) / n


def spring_direction(
    jac: Inexact[Array, "g w p"],
    residual: Complex[Array, "g w"],
    previous: Float[Array, " p"],
    damping: float | Float[Array, ""],
    momentum: float | Float[Array, ""],
) -> Float[Array, " p"]:
    """The SPRING direction φ (before the learning rate); see the module docstring."""
    o = centred_jacobian(jac)
    n = residual.size
    p = o.shape[-1]
    o = o.reshape(n, p)
    a = jnp.concatenate([jnp.real(o), jnp.imag(o)], axis=0) / jnp.sqrt(n)
    b = jnp.concatenate([jnp.real(residual).ravel(), jnp.imag(residual).ravel()]) / jnp.sqrt(n)
    kernel = a @ a.T + damping * jnp.eye(2 * n, dtype=a.dtype)
    rhs = b - momentum * (a @ previous)
    chol = jnp.linalg.cholesky(kernel)
    y = jnp.linalg.solve(chol.T, jnp.linalg.solve(chol, rhs))
    return a.T @ y + momentum * previous


def constrain_step(
    jac: Inexact[Array, "g w p"],
    direction: Float[Array, " p"],
    learning_rate: float | Float[Array, ""],
    max_norm: float,
) -> Float[Array, " p"]:
    """η φ scaled down so that its Fisher norm √(mean |Ō η φ|²) ≤ max_norm."""
    o = centred_jacobian(jac)
    fisher = jnp.sqrt(jnp.mean(jnp.abs(jnp.einsum("gwp,p->gw", o, direction)) ** 2))
    step_norm = learning_rate * fisher
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(step_norm, 1e-30))
    return learning_rate * scale * direction
