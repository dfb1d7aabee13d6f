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

Data parallelism: every function takes ``axis``, the name of the mesh axis
over which the walker axis (axis 1) is split (None: all walkers are here).
Inside ``shard_map`` each device then holds the rows of its own walkers; means
are psums, and A Aᵀ is assembled block by block while the devices pass their
rows of A around a ring (``ppermute``), so no device ever holds more than two
devices' rows of A: the extra memory stays O(n²), never O(n P).

``matmul_dtype`` (e.g. float32 for a float32 model) sets the precision of the
two O(n² P) products (A Aᵀ and Aᵀ y); the Cholesky solve is always float64.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Complex, Float, Inexact


def _psum(x: Array, axis: str | None) -> Array:
    return x if axis is None else jax.lax.psum(x, axis)


def _gather(x: Array, axis: str | None, dim: int) -> Array:
    return x if axis is None else jax.lax.all_gather(x, axis, axis=dim, tiled=True)


def _n_devices(axis: str | None) -> int:
    return 1 if axis is None else jax.lax.axis_size(axis)


def clip_local_energy(e_loc: Float[Array, "g w"], n_mad: float) -> Float[Array, "g w"]:
    """Clip to median ± n_mad·MAD within each group (MAD = median absolute deviation from the median)."""
    median = jnp.median(e_loc, axis=1, keepdims=True)
    mad = jnp.median(jnp.abs(e_loc - median), axis=1, keepdims=True)
    return jnp.clip(e_loc, median - n_mad * mad, median + n_mad * mad)


def clipped_fraction(e_loc: Float[Array, "g w"], n_mad: float) -> Float[Array, " g"]:
    """Fraction of each group's local energies that :func:`clip_local_energy` changes."""
    return jnp.mean(clip_local_energy(e_loc, n_mad) != e_loc, axis=1)


def energy_residuals(e_loc: Inexact[Array, "g w"], n_mad: float) -> Complex[Array, "g w"]:
    """ε = −(E_L − ⟨E_L⟩_g), with the real part clipped per group (used in the gradient only).

    ``e_loc`` holds all walkers (gather them first under data parallelism).
    """
    real = clip_local_energy(jnp.real(e_loc), n_mad)
    imag = jnp.imag(e_loc)
    centred = (real - jnp.mean(real, axis=1, keepdims=True)) + 1j * (imag - jnp.mean(imag, axis=1, keepdims=True))
    return -centred


def local_rows(full: Array, axis: str | None) -> Array:
    """This device's share of axis 1 of an array that every device holds in full."""
    if axis is None:
        return full
    share = full.shape[1] // _n_devices(axis)
    return jax.lax.dynamic_slice_in_dim(full, jax.lax.axis_index(axis) * share, share, axis=1)


def centred_jacobian(jac: Inexact[Array, "g w p"], axis: str | None = None) -> Inexact[Array, "g w p"]:
    """Ō = O − ⟨O⟩_g, per group (the mean over the walkers of all devices)."""
    total = _psum(jnp.sum(jac, axis=1, keepdims=True), axis)
    return jac - total / (jac.shape[1] * _n_devices(axis))


def energy_gradient(jac: Inexact[Array, "g w p"], residual: Complex[Array, "g w"], axis: str | None = None) -> Float[Array, " p"]:
    """∇_θ of the mean over groups of E_g: 2 Re ⟨conj(Ō) (E_L − E)⟩ = −2 Re ⟨conj(Ō) ε⟩ (local rows of both)."""
    o = centred_jacobian(jac, axis)
    n = residual.size * _n_devices(axis)
    return -2.0 * jnp.real(_psum(jnp.einsum("gwp,gw->p", jnp.conj(o), residual), axis)) / n


def _stacked(o: Inexact[Array, "g w p"], n: int, dtype) -> Float[Array, "2r p"]:
    """[Re Ō; Im Ō]/√n of this device's rows, in the matmul precision."""
    r = o.shape[0] * o.shape[1]
    o = o.reshape(r, o.shape[-1])
    return (jnp.concatenate([jnp.real(o), jnp.imag(o)], axis=0) / jnp.sqrt(n)).astype(dtype)


def _kernel(a: Float[Array, "2r p"], axis: str | None) -> Float[Array, "2n 2n"]:
    """A Aᵀ over all devices' rows (ordered device-major), float64, assembled around a ring."""
    if axis is None:
        return (a @ a.T).astype(jnp.float64)
    d = _n_devices(axis)
    me = jax.lax.axis_index(axis)
    rows = a.shape[0]
    ring = [(i, (i - 1) % d) for i in range(d)]  # device i passes its block to i − 1
    blocks = jnp.zeros((d, rows, rows), jnp.float64)
    other = a
    for k in range(d):
        blocks = blocks.at[(me + k) % d].set((a @ other.T).astype(jnp.float64))
        if k + 1 < d:
            other = jax.lax.ppermute(other, axis, ring)
    mine = jnp.transpose(blocks, (1, 0, 2)).reshape(rows, d * rows)  # my rows, all columns
    return _gather(mine, axis, 0)


def _samples_in_device_order(x: Float[Array, "g w"], axis: str | None) -> Float[Array, " 2n"]:
    """[Re; Im] of this device's residual rows, gathered in the row order of :func:`_kernel`."""
    local = jnp.concatenate([jnp.real(x).ravel(), jnp.imag(x).ravel()])
    return _gather(local, axis, 0)


def spring_direction(
    jac: Inexact[Array, "g w p"],
    residual: Complex[Array, "g w"],
    previous: Float[Array, " p"],
    damping: float | Float[Array, ""],
    momentum: float | Float[Array, ""],
    axis: str | None = None,
    matmul_dtype=jnp.float64,
) -> Float[Array, " p"]:
    """The SPRING direction φ (before the learning rate); ``jac`` and ``residual`` are this device's walkers."""
    n = residual.size * _n_devices(axis)
    a = _stacked(centred_jacobian(jac, axis), n, matmul_dtype)
    b = _samples_in_device_order(residual, axis) / jnp.sqrt(n)
    kernel = _kernel(a, axis) + damping * jnp.eye(2 * n, dtype=jnp.float64)
    a_prev = _gather((a @ previous.astype(matmul_dtype)).astype(jnp.float64), axis, 0)
    chol = jnp.linalg.cholesky(kernel)
    y = jax.scipy.linalg.cho_solve((chol, True), b - momentum * a_prev)
    rows = a.shape[0]
    mine = y if axis is None else jax.lax.dynamic_slice_in_dim(y, jax.lax.axis_index(axis) * rows, rows)
    return _psum((a.T @ mine.astype(matmul_dtype)).astype(jnp.float64), axis) + momentum * previous


def constrain_step(
    jac: Inexact[Array, "g w p"],
    direction: Float[Array, " p"],
    learning_rate: float | Float[Array, ""],
    max_norm: float,
    axis: str | None = None,
) -> Float[Array, " p"]:
    """η φ scaled down so that its Fisher norm √(mean |Ō η φ|²) ≤ max_norm."""
    o = centred_jacobian(jac, axis)
    n = o.shape[0] * o.shape[1] * _n_devices(axis)
    fisher = jnp.sqrt(_psum(jnp.sum(jnp.abs(jnp.einsum("gwp,p->gw", o, direction.astype(o.dtype))) ** 2), axis) / n)
    step_norm = learning_rate * fisher
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(step_norm, 1e-30))
    return learning_rate * scale * direction
