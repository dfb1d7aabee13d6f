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

Log-derivatives are passed in a real layout, shape (g, w, 2, P): real and
imaginary parts of O (:func:`as_parts` converts a complex array), or as a
list of such blocks, one per parameter leaf (:data:`Rows`), so that the rows
of A are reshapes of them and no complex, stacked or concatenated copy of the
Jacobian is ever made; A Aᵀ is the sum of the blocks' products.

Data parallelism: every function takes ``axis``, the name of the mesh axis
over which the walker axis (axis 1) is split (None: all walkers are here).
Inside ``shard_map`` each device then holds the rows of its own walkers; means
are psums, and A Aᵀ is assembled block by block while the devices pass their
rows of A around a ring (``ppermute``), so no device ever holds more than two
devices' rows of A: the extra memory stays O(n²), never O(n P).

``matmul_dtype`` (e.g. float32 for a float32 model) sets the precision of the
two O(n² P) products (A Aᵀ and Aᵀ y); the Cholesky solve is always float64.
Rows are centred in full precision before they are rounded to a narrower
``matmul_dtype`` (the float32 direction then agrees with float64 to ~1e-6
even when |⟨O⟩|/sd(O) is 1e4; rounded first it can be NaN). In full
precision no centred copy is made: C is applied to the n × n kernel.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, Inexact


def _psum(x: Array, axis: str | None) -> Array:
    return x if axis is None else jax.lax.psum(x, axis)


def _gather(x: Array, axis: str | None, dim: int) -> Array:
    return x if axis is None else jax.lax.all_gather(x, axis, axis=dim, tiled=True)


def _n_devices(axis: str | None) -> int:
    return 1 if axis is None else jax.lax.axis_size(axis)


ClipDeviation = Literal["median", "mean"]


def clip_local_energy(e_loc: Float[Array, "g w"], n_mad: float, deviation: ClipDeviation = "median") -> Float[Array, "g w"]:
    """Clip to median ± n_mad·MAD within each group.

    MAD is the median (``deviation="median"``) or the mean (``"mean"``, the
    FermiNet convention) of |E_L − median|. For a Gaussian the two differ by
    18 %; for the heavy-tailed E_L of a good wavefunction (a sharp peak, tails
    from near-nodes and close pairs) the median one is far smaller and clips
    the tails that the gradient most needs to see.
    """
    median = jnp.median(e_loc, axis=1, keepdims=True)
    spread = jnp.abs(e_loc - median)
    mad = jnp.median(spread, axis=1, keepdims=True) if deviation == "median" else jnp.mean(spread, axis=1, keepdims=True)
    return jnp.clip(e_loc, median - n_mad * mad, median + n_mad * mad)


def clipped_fraction(e_loc: Inexact[Array, "g w"], n_mad: float, deviation: ClipDeviation = "median") -> Float[Array, " g"]:
    """Fraction of each group's local energies whose real or imaginary part :func:`energy_residuals` clips."""
    clipped = clip_local_energy(jnp.real(e_loc), n_mad, deviation) != jnp.real(e_loc)
    if jnp.iscomplexobj(e_loc):
        clipped = clipped | (clip_local_energy(jnp.imag(e_loc), n_mad, deviation) != jnp.imag(e_loc))
    return jnp.mean(clipped, axis=1)


def energy_residuals(e_loc: Inexact[Array, "g w"], n_mad: float, deviation: ClipDeviation = "median") -> Complex[Array, "g w"]:
    """ε = −(E_L − ⟨E_L⟩_g), with the real and the imaginary part each clipped per group (used in the gradient only).

    Im E_L diverges like 1/d² near the nodes of a complex ψ as Re E_L does
    (d: distance to the node), so it is clipped the same way: to its own
    median ± n_mad·MAD. ``e_loc`` holds all walkers (gather them first under
    data parallelism).
    """
    real = clip_local_energy(jnp.real(e_loc), n_mad, deviation)
    imag = clip_local_energy(jnp.imag(e_loc), n_mad, deviation)
    centred = (real - jnp.mean(real, axis=1, keepdims=True)) + 1j * (imag - jnp.mean(imag, axis=1, keepdims=True))
    return -centred


def local_rows(full: Array, axis: str | None) -> Array:
    """This device's share of axis 1 of an array that every device holds in full."""
    if axis is None:
        return full
    share = full.shape[1] // _n_devices(axis)
    return jax.lax.dynamic_slice_in_dim(full, jax.lax.axis_index(axis) * share, share, axis=1)


Rows = Float[Array, "g w 2 p"] | list
"""Log-derivatives in the real layout: one array (g, w, 2, P), or a list of such
blocks whose last axes, concatenated, give the P parameters (one block per
parameter leaf, in ``ravel_pytree`` order; never concatenated, which on CPU
costs more than computing them)."""


def as_parts(jac: Complex[Array, "g w p"]) -> Float[Array, "g w 2 p"]:
    """Complex log-derivatives O as the real layout used here: [..., 0, :] = Re O, [..., 1, :] = Im O."""
    return jnp.stack([jnp.real(jac), jnp.imag(jac)], axis=2)


def _blocks(jac: Rows) -> list[Array]:
    return list(jac) if isinstance(jac, (list, tuple)) else [jac]


def flat_rows(jac: Rows) -> Float[Array, "g w 2 p"]:
    """The blocks of ``jac`` concatenated into one array (g, w, 2, P) (for tests and inspection)."""
    return jnp.concatenate(_blocks(jac), axis=-1)


def _split(vector: Float[Array, " p"], blocks: list[Array]) -> list[Array]:
    """A parameter-space vector cut into the segments of the blocks."""
    cuts = np.cumsum([b.shape[-1] for b in blocks])[:-1]
    return jnp.split(vector, cuts)


def _residual_parts(residual: Complex[Array, "g w"]) -> Float[Array, "g w 2"]:
    return jnp.stack([jnp.real(residual), jnp.imag(residual)], axis=-1)


def centred_jacobian(jac: Rows, axis: str | None = None) -> Rows:
    """Ō = O − ⟨O⟩_g, per group (the mean over the walkers of all devices); same layout as ``jac``."""

    def centre(block):
        total = _psum(jnp.sum(block, axis=1, keepdims=True), axis)
        return block - (total / (block.shape[1] * _n_devices(axis))).astype(block.dtype)

    return [centre(b) for b in jac] if isinstance(jac, (list, tuple)) else centre(jac)


def _centre(v: Float[Array, "2n ..."], g: int, d: int) -> Float[Array, "2n ..."]:
    """C v: subtract the group means from vectors (or the rows of matrices) indexed like the gathered rows.

    Rows are ordered (device, group, walker, real/imaginary); C is the
    symmetric projector that centres every (group, part) over the walkers of
    all devices, so that Ō = C O without ever forming Ō.
    """
    x = v.reshape(d, g, -1, 2, *v.shape[1:])
    return (x - jnp.mean(x, axis=(0, 2), keepdims=True)).reshape(v.shape)


def energy_gradient(jac: Rows, residual: Complex[Array, "g w"], axis: str | None = None) -> Float[Array, " p"]:
    """∇_θ of the mean over groups of E_g: 2 Re ⟨conj(Ō) (E_L − E)⟩ = −2 Re ⟨conj(Ō) ε⟩ (local rows of both)."""
    n = residual.size * _n_devices(axis)
    eps = _residual_parts(residual)
    eps = eps - _psum(jnp.sum(eps, axis=1, keepdims=True), axis) / (eps.shape[1] * _n_devices(axis))  # Σ Ō ε = Σ O (C ε)
    parts = [jnp.einsum("gwkp,gwk->p", o, eps.astype(o.dtype)).astype(jnp.float64) for o in _blocks(jac)]
    return -2.0 * _psum(jnp.concatenate(parts), axis) / n


def _rows(jac: Rows, dtype) -> list[Float[Array, "2r p"]]:
    """This device's rows of O = [Re O; Im O] (sample-major, then real/imaginary), block by block (uncentred)."""
    return [b.reshape(-1, b.shape[-1]).astype(dtype) for b in _blocks(jac)]


def _gram(a: list[Array], b: list[Array]) -> Float[Array, "r s"]:
    """Σ_blocks a bᵀ in float64."""
    return sum((x @ y.T).astype(jnp.float64) for x, y in zip(a, b))


def _kernel(a: list[Float[Array, "2r p"]], axis: str | None) -> Float[Array, "2n 2n"]:
    """a aᵀ over all devices' rows (ordered device-major), float64, assembled around a ring."""
    if axis is None:
        return _gram(a, a)
    d = _n_devices(axis)
    me = jax.lax.axis_index(axis)
    rows = a[0].shape[0]
    ring = [(i, (i - 1) % d) for i in range(d)]  # device i passes its block to i − 1
    blocks = jnp.zeros((d, rows, rows), jnp.float64)
    other = a
    for k in range(d):
        blocks = blocks.at[(me + k) % d].set(_gram(a, other))
        if k + 1 < d:
            other = jax.lax.ppermute(other, axis, ring)
    mine = jnp.transpose(blocks, (1, 0, 2)).reshape(rows, d * rows)  # my rows, all columns
    return _gather(mine, axis, 0)


def centred_kernel(a: list[Float[Array, "2r p"]], g: int, axis: str | None = None) -> Float[Array, "2n 2n"]:
    """C O Oᵀ C = n A Aᵀ from the uncentred rows ``a`` of this device (``g`` groups), float64, all devices' rows."""
    d = _n_devices(axis)
    return _centre(_centre(_kernel(a, axis), g, d).T, g, d)


def _samples_in_device_order(x: Complex[Array, "g w"], axis: str | None) -> Float[Array, " 2n"]:
    """[Re, Im] of this device's residuals, in the row order of :func:`_rows`, gathered device-major."""
    return _gather(_residual_parts(x).ravel(), axis, 0)


def _project(a: list[Array], vector: Float[Array, " p"], g: int, axis: str | None) -> Float[Array, " 2n"]:
    """Ō v for all devices' rows (gathered, float64): C (O v)."""
    local = sum((x @ v.astype(x.dtype)).astype(jnp.float64) for x, v in zip(a, _split(vector, a)))
    return _centre(_gather(local, axis, 0), g, _n_devices(axis))


def spring_direction(
    jac: Rows,
    residual: Complex[Array, "g w"],
    previous: Float[Array, " p"],
    damping: float | Float[Array, ""],
    momentum: float | Float[Array, ""],
    axis: str | None = None,
    matmul_dtype=jnp.float64,
) -> Float[Array, " p"]:
    """The SPRING direction φ (before the learning rate); ``jac`` and ``residual`` are this device's walkers.

    With the uncentred rows O (√n A = C O, C the group-centring projector, so
    no centred or scaled copy of the Jacobian is made):
    φ = Oᵀ C (C O Oᵀ C + nλ I)⁻¹ (√n b − μ C O φ_prev) + μ φ_prev.
    """
    d = _n_devices(axis)
    g = residual.shape[0]
    n = residual.size * d
    if jnp.dtype(matmul_dtype) != _blocks(jac)[0].dtype:
        # Centre before rounding: a log-derivative whose mean dwarfs its spread (|⟨O⟩|/sd ~ 1e3 and more for
        # Jastrow and envelope parameters) keeps its spread in float32 only relative to zero, not to its mean.
        # (O − ⟨O⟩ and the cast are one elementwise pass; the float32 copy is made either way.)
        jac = centred_jacobian(jac, axis)
    a = _rows(jac, matmul_dtype)
    b = _samples_in_device_order(residual, axis)  # √n b
    kernel = centred_kernel(a, g, axis) + n * damping * jnp.eye(2 * n, dtype=jnp.float64)
    chol = jnp.linalg.cholesky(kernel)
    y = _centre(jax.scipy.linalg.cho_solve((chol, True), b - momentum * _project(a, previous, g, axis)), g, d)
    rows = a[0].shape[0]
    mine = (y if axis is None else jax.lax.dynamic_slice_in_dim(y, jax.lax.axis_index(axis) * rows, rows)).astype(matmul_dtype)
    # yᵀ O block by block, written as vector @ matrix: XLA's CPU dot for Oᵀ y (a transposed
    # matrix times a vector) ran 100× slower (1.9 s against 0.02 s at 512 × 173k, float32).
    direction = jnp.concatenate([(mine @ x).astype(jnp.float64) for x in a])
    return _psum(direction, axis) + momentum * previous


def constrain_step(
    jac: Rows,
    direction: Float[Array, " p"],
    learning_rate: float | Float[Array, ""],
    max_norm: float,
    axis: str | None = None,
) -> Float[Array, " p"]:
    """η φ scaled down so that its Fisher norm √(mean |Ō η φ|²) ≤ max_norm."""
    blocks = _blocks(jac)
    g = blocks[0].shape[0]
    n = g * blocks[0].shape[1] * _n_devices(axis)
    projected = _project(_rows(blocks, blocks[0].dtype), direction, g, axis)  # Re, Im of Ō φ, all rows
    fisher = jnp.sqrt(jnp.sum(projected**2) / n)
    step_norm = learning_rate * fisher
    scale = jnp.minimum(1.0, max_norm / jnp.maximum(step_norm, 1e-30))
    return learning_rate * scale * direction
