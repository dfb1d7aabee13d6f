"""Log-determinants and inverses of the wavefunction's matrices: LAPACK where it is safe, Gauss–Jordan elimination where it is not.

Why not always ``jnp.linalg``: on the CPU, jaxlib 0.10's LAPACK kernels (LU,
triangular solves, Cholesky …) split a large enough batch
(batch × n³ ≳ 2·10⁵ flops) into chunks, schedule the chunks on XLA's intra-op
thread pool and then *wait* for them, while running on a thread of that same
pool. Two CPU devices of one process (``--devices 2``) run their programs at
once on one pool; on a 2-core machine the pool has two threads, both end up
waiting inside a LAPACK kernel for chunks that no thread is left to run, and
the program hangs forever without using CPU (issue #21; reproduced by
``tests/test_lapack_deadlock.py``). The elimination below is ordinary XLA
arithmetic, vectorised over the batch, so nothing waits on the pool.

:func:`method` chooses, when a program is traced: ``"elimination"`` on a
process with several CPU devices, ``"lapack"`` otherwise (one CPU device,
where :func:`qernel_cli.configure_jax`'s scheduler setting keeps the kernels apart
and they are 10–30 % faster for these small matrices; or an accelerator,
whose solvers do not share the CPU pool). ``QERNEL_DETERMINANTS=lapack`` or
``=elimination`` forces one.

Both give log|det|, arg det and (for the forward Laplacian) the inverse, with
an exactly singular matrix (ψ = 0: two same-spin electrons at one point)
flagged with ``LOG_FLOOR`` and zero derivatives instead of infinities (the
elimination: any pivot within n·ε·max|A_ij| of zero, so that the verdict does
not depend on how the compiler rounds). The
elimination's derivatives are the analytic ones (custom JVP):
d log det A = tr(A⁻¹ dA), dA⁻¹ = −A⁻¹ dA A⁻¹, differentiable again to any
order, with a folx rule for folx's forward Laplacian. It pivots on the
largest remaining entry of each column (partial pivoting, rows chosen without
swapping them), as stable as LU with partial pivoting for the determinant.
"""

from __future__ import annotations

import functools
import os
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Inexact

__all__ = ["LOG_FLOOR", "Method", "inverse_and_log_det", "log_det", "method"]

Method = Literal["lapack", "elimination"]

LOG_FLOOR = -1.0e4
"""log|det| reported for an exactly singular matrix (ψ = 0): finite, far below any real value."""

UNROLL_MAX = 32
"""Matrices up to this size are eliminated by an unrolled loop (static slices); larger ones by a ``fori_loop``."""


def _tolerance(a: Inexact[Array, "... n n"]) -> Float[Array, "..."]:
    """n·ε·max|A_ij|: a pivot no larger is zero to working precision (the matrix is singular).

    Two equal rows (two same-spin electrons at one point) cancel to exactly
    zero only if both rows see bit-identical arithmetic, which the compiler
    does not promise (fused multiply-adds, vector lanes); they always cancel to
    within this bound. A matrix that is not singular has its smallest pivot below
    it only at a condition number ≳ 1/(nε), where log|det| has no correct digit.
    """
    n = a.shape[-1]
    return n * jnp.finfo(a.dtype).eps * jnp.max(jnp.abs(a), axis=(-2, -1))


def _pivot(m: Array, k, used: Bool[Array, "... n"], tol: Float[Array, "..."]) -> tuple[Array, ...]:
    """Column k of ``m`` and its largest-modulus entry among the unused rows.

    Returns (column, row p, one-hot of p, row p of ``m``, pivot, |pivot|, bad),
    with a bad pivot (|pivot| ≤ ``tol``, or non-finite) set to 1.
    """
    column = jax.lax.dynamic_index_in_dim(m, k, axis=-1, keepdims=False)
    size = jnp.real(column * jnp.conj(column)) if jnp.iscomplexobj(column) else column * column
    p = jnp.argmax(jnp.where(used, -1.0, size), axis=-1)
    is_p = jnp.arange(m.shape[-1]) == p[..., None]
    pivot_row = jnp.take_along_axis(m, p[..., None, None], axis=-2)[..., 0, :]
    pivot = jnp.take_along_axis(column, p[..., None], axis=-1)[..., 0]
    magnitude = jnp.abs(pivot)
    bad = (magnitude <= tol) | ~jnp.isfinite(magnitude)
    return column, p, is_p, pivot_row, jnp.where(bad, jnp.ones_like(pivot), pivot), jnp.where(bad, 1.0, magnitude), bad


def _account(books: tuple, k, p: Array, pivot: Array, magnitude: Array, bad: Array) -> tuple:
    """Record pivot k in (pivot order, Σ log|pivot|, Π pivot/|pivot|, singular)."""
    order, log_abs, unit, singular = books
    return order.at[..., k].set(p.astype(jnp.int32)), log_abs + jnp.log(magnitude), unit * (pivot / magnitude), singular | bad


def _ratio(x: Array, pivot: Array) -> Array:
    """x / pivot, exactly 1 where x equals the pivot (complex division need not give 1 for x/x; an equal row must cancel exactly)."""
    return jnp.where(x == pivot, jnp.ones_like(x), x / pivot)


def _loop(n: int, step, carry):
    if n <= UNROLL_MAX:
        for k in range(n):
            carry = step(k, carry)
        return carry
    return jax.lax.fori_loop(0, n, step, carry)


def _start(a: Array) -> tuple[Array, tuple]:
    """(rows used as pivots, books) before the first column; books as in :func:`_account`."""
    batch = a.shape[:-2]
    books = (
        jnp.zeros((*batch, a.shape[-1]), dtype=jnp.int32),  # pivot row of each column
        jnp.zeros(batch, dtype=jnp.finfo(a.dtype).dtype),  # Σ log|pivot|
        jnp.ones(batch, dtype=a.dtype),  # Π pivot/|pivot|
        jnp.zeros(batch, dtype=bool),  # singular
    )
    return jnp.zeros((*batch, a.shape[-1]), dtype=bool), books


def _finish(order, log_abs, unit, singular):
    """Apply sgn(p) (parity of the inversions of the pivot order) and the singular convention."""
    n = order.shape[-1]
    i, j = np.triu_indices(n, k=1)
    odd = (jnp.sum(order[..., i] > order[..., j], axis=-1) % 2 == 1) if n > 1 else jnp.zeros(order.shape[:-1], bool)
    unit = jnp.where(odd & ~singular, -unit, unit)
    return jnp.where(singular, LOG_FLOOR, log_abs), jnp.where(singular, jnp.ones_like(unit), unit)


def _eliminate_log_det(a: Inexact[Array, "... n n"]) -> tuple[Array, Array, Array]:
    """(log|det A|, det A/|det A|, singular): forward elimination only (≈ n³/2 multiply-adds, no inverse)."""

    tol = _tolerance(a)

    def step(k, carry):
        m, used, books = carry
        column, p, is_p, pivot_row, pivot, magnitude, bad = _pivot(m, k, used, tol)
        used = used | is_p
        factor = jnp.where(used, 0.0, _ratio(column, pivot[..., None]))  # only rows still to be pivoted need updating
        m = m - factor[..., :, None] * pivot_row[..., None, :]
        return m, used, _account(books, k, p, pivot, magnitude, bad)

    _, _, (order, log_abs, unit, singular) = _loop(a.shape[-1], step, (a, *_start(a)))
    log_abs, unit = _finish(order, log_abs, unit, singular)
    return log_abs, unit, singular


def _eliminate(a: Inexact[Array, "... n n"]) -> tuple[Array, Array, Array, Array]:
    """(A⁻¹, log|det A|, det A/|det A|, singular) by in-place Gauss–Jordan elimination with partial pivoting.

    Row operations E turn A into P, a permutation (row p_k holds the unit of
    column k), so A⁻¹ = Pᵀ E and det A = sgn(p) Π_k pivot_k. Column k of the
    work matrix holds column p_k of E once column k of A is eliminated (the
    other columns of E are still those of I), so A⁻¹[k, j] = S[p_k, q_j] with
    q the inverse of p. A pivot zero to working precision (:func:`_tolerance`) or non-finite marks the matrix singular;
    its outputs are then the zero matrix, ``LOG_FLOOR`` and 1.
    """
    columns = jnp.arange(a.shape[-1])
    tol = _tolerance(a)

    def step(k, carry):
        s, used, books = carry
        column, p, is_p, pivot_row, pivot, magnitude, bad = _pivot(s, k, used, tol)
        is_k = columns == k
        # Column k of A becomes E's column p_k: 1 in the pivot row, 0 elsewhere, before the row operations.
        base = jnp.where(is_k, 1.0, pivot_row)
        # Rows i ≠ p lose (A_ik / pivot) × the pivot row; a row equal to the pivot row becomes exactly zero.
        multiplier = jnp.where(is_p, 0.0, _ratio(column, pivot[..., None]))
        s = jnp.where(is_k, 0.0, s) - multiplier[..., :, None] * base[..., None, :]
        s = jnp.where(is_p[..., :, None], (base / pivot[..., None])[..., None, :], s)
        return s, used | is_p, _account(books, k, p, pivot, magnitude, bad)

    s, _, (order, log_abs, unit, singular) = _loop(a.shape[-1], step, (a, *_start(a)))
    where = jnp.argsort(order, axis=-1)  # q: the column k with p_k = j
    s = jnp.take_along_axis(s, order[..., :, None], axis=-2)  # rows p_k
    inverse = jnp.take_along_axis(s, where[..., None, :], axis=-1)  # columns q_j
    log_abs, unit = _finish(order, log_abs, unit, singular)
    inverse = jnp.where(singular[..., None, None], jnp.zeros_like(inverse), inverse)
    return inverse, log_abs, unit, singular


@jax.custom_jvp
def _inverse_log_det(a):
    inverse, log_abs, unit, singular = _eliminate(a)
    return inverse, log_abs, unit, singular.astype(log_abs.dtype)  # a real 0/1 flag: no float0 tangents (folx)


@_inverse_log_det.defjvp
def _inverse_log_det_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    inverse, log_abs, unit, singular = _inverse_log_det(a)
    m = inverse @ da  # A⁻¹ dA (zero where singular)
    d_log_abs, d_unit = _log_det_tangent(jnp.trace(m, axis1=-2, axis2=-1), unit)
    return (inverse, log_abs, unit, singular), (-(m @ inverse), d_log_abs, d_unit, _no_tangent(singular))


@jax.custom_jvp
def _log_det(a):
    log_abs, unit, singular = _eliminate_log_det(a)
    return log_abs, unit, singular.astype(log_abs.dtype)


@_log_det.defjvp
def _log_det_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    return _log_det_jvp_from(*_inverse_log_det(a), da)


def _log_det_jvp_from(inverse: Array, log_abs: Array, unit: Array, singular: Array, da: Array) -> tuple[tuple, tuple]:
    """(log|det|, det/|det|, singular) and their tangents from A⁻¹ (zero where singular): d log det A = tr(A⁻¹ dA)."""
    singular = singular.astype(log_abs.dtype)
    trace = jnp.sum(jnp.swapaxes(inverse, -1, -2) * da, axis=(-2, -1))
    d_log_abs, d_unit = _log_det_tangent(trace, unit)
    return (log_abs, unit, singular), (d_log_abs, d_unit, _no_tangent(singular))


def _log_det_tangent(trace: Array, unit: Array) -> tuple[Array, Array]:
    """d log|det| = Re tr(A⁻¹dA); d(det/|det|) = (det/|det|) i Im tr(A⁻¹dA) (zero for real matrices)."""
    if jnp.iscomplexobj(unit):
        return jnp.real(trace), unit * (1j * jnp.imag(trace))
    return trace, jnp.zeros_like(unit)


def _no_tangent(flag: Array) -> Array:
    return jnp.zeros_like(flag)


def _phase(unit: Array) -> Array:
    """arg of det A/|det A| in (−π, π] (0 or π for a real matrix)."""
    if jnp.iscomplexobj(unit):
        return jnp.angle(unit)
    return jnp.where(unit < 0, jnp.pi, 0.0).astype(unit.dtype)


def method() -> Method:
    """How determinants are computed in programs traced now (see the module docstring)."""
    forced = os.environ.get("QERNEL_DETERMINANTS", "auto")
    if forced in ("lapack", "elimination"):
        return forced  # type: ignore[return-value]
    if forced != "auto":
        raise ValueError(f"QERNEL_DETERMINANTS must be auto, lapack or elimination, got {forced!r}")
    if jax.default_backend() == "cpu" and jax.local_device_count() > 1:
        return "elimination"
    return "lapack"


def inverse_and_log_det(
    a: Inexact[Array, "... n n"], how: Method | None = None
) -> tuple[Inexact[Array, "... n n"], Float[Array, "..."], Float[Array, "..."], Bool[Array, "..."]]:
    """(A⁻¹, log|det A|, arg det A, singular) of each matrix; a singular one gives 0, ``LOG_FLOOR``, 0 and zero derivatives.

    ``arg det`` is in (−π, π] (0 or π for a real matrix); ``how`` overrides :func:`method`.
    """
    if a.shape[-1] == 0:
        zeros = jnp.zeros(a.shape[:-2], dtype=jnp.finfo(a.dtype).dtype)
        return a, zeros, zeros, jnp.zeros(a.shape[:-2], dtype=bool)
    if (how or method()) == "lapack":
        return _lapack_inverse_and_log_det(a)
    inverse, log_abs, unit, singular = _inverse_log_det(a)
    return inverse, log_abs, _phase(unit), singular > 0


def log_det(a: Inexact[Array, "... n n"], how: Method | None = None) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    """(log|det A|, arg det A) of each matrix; ``LOG_FLOOR`` and 0, with zero derivatives, where det A = 0.

    The value costs one forward elimination (or one LAPACK LU) and a
    derivative adds the inverse; under folx's forward Laplacian it is one
    operation with the rule :func:`_folx_log_det`.
    ``how`` overrides :func:`method`.
    """
    if a.shape[-1] == 0:
        zeros = jnp.zeros(a.shape[:-2], dtype=jnp.finfo(a.dtype).dtype)
        return zeros, zeros
    if (how or method()) == "lapack":
        return lapack_log_det(a)
    return qernel_log_det(a)


def _lu_singular(diagonal: Array, a: Array) -> Array:
    """A matrix whose LU has a pivot within :func:`_tolerance` of zero (or not finite) is singular, as in the elimination.

    Equal rows need not cancel to exactly zero in LAPACK's LU either (it depends
    on the CPU's kernels), so an exact-zero test would miss them on some machines.
    """
    small = jnp.abs(diagonal) <= _tolerance(a)[..., None]
    return jnp.any(small | ~jnp.isfinite(diagonal), axis=-1)


def _lu(a: Array) -> tuple[Array, Array, Array, Array, Array]:
    """(LU, pivots, singular, log|det|, det/|det|) from one LAPACK LU per matrix; a singular matrix's LU is the identity's."""
    m = a.shape[-1]
    lu, pivots, _ = jax.lax.linalg.lu(a)
    singular = _lu_singular(jnp.diagonal(lu, axis1=-2, axis2=-1), jax.lax.stop_gradient(a))
    lu = jnp.where(singular[..., None, None], jnp.eye(m, dtype=a.dtype), lu)
    pivots = jnp.where(singular[..., None], jnp.arange(m, dtype=pivots.dtype), pivots)
    diagonal = jnp.diagonal(lu, axis1=-2, axis2=-1)
    swaps = jnp.sum(pivots != jnp.arange(m, dtype=pivots.dtype), axis=-1)
    log_abs = jnp.where(singular, LOG_FLOOR, jnp.sum(jnp.log(jnp.abs(diagonal)), axis=-1))
    unit = jnp.prod(diagonal / jnp.abs(diagonal), axis=-1) * jnp.where(swaps % 2 == 1, -1.0, 1.0)
    return lu, pivots, singular, log_abs, unit


def _lu_inverse_log_det(a: Array) -> tuple[Array, Array, Array, Array]:
    """(A⁻¹, log|det A|, det/|det|, singular) from one LU and its solve; zero inverse where singular."""
    lu, pivots, singular, log_abs, unit = _lu(a)
    m = a.shape[-1]
    eye = jnp.eye(m, dtype=a.dtype)
    flat_lu, flat_pivots = lu.reshape(-1, m, m), pivots.reshape(-1, m)
    inverse = jax.vmap(lambda f, p: jax.scipy.linalg.lu_solve((f, p), eye))(flat_lu, flat_pivots).reshape(a.shape)
    return jnp.where(singular[..., None, None], jnp.zeros_like(inverse), inverse), log_abs, unit, singular


@jax.custom_jvp
def _lu_log_det(a):
    _, _, singular, log_abs, unit = _lu(a)
    return log_abs, unit, singular.astype(log_abs.dtype)


@_lu_log_det.defjvp
def _lu_log_det_jvp(primals, tangents):
    """d log det A = tr(A⁻¹ dA): the value costs one LU, a derivative adds its solve for A⁻¹ (zero where singular)."""
    (a,), (da,) = primals, tangents
    return _log_det_jvp_from(*_lu_inverse_log_det(a), da)


@jax.jit
def lapack_log_det(a):
    """(log|det A|, arg det A) from one LAPACK LU per matrix (its name is the key of its folx rule)."""
    log_abs, unit, _ = _lu_log_det(a)
    return log_abs, _phase(unit)


def _lapack_inverse_and_log_det(a: Array) -> tuple[Array, Array, Array, Array]:
    """One LU per matrix (``jax.lax.linalg.lu``) for the inverse and the determinant."""
    inverse, log_abs, unit, singular = _lu_inverse_log_det(a)
    return inverse, log_abs, jnp.where(singular, 0.0, _phase(unit)), singular


@jax.jit
def qernel_log_det(a):
    """The traced operation behind :func:`log_det` (its name is the key of the folx rule)."""
    log_abs, unit, _ = _log_det(a)
    return log_abs, _phase(unit)


def _folx_log_det(args, kwargs, sparsity_threshold, plain=qernel_log_det):
    """folx forward-Laplacian rule: with M_c = A⁻¹ ∂_c A, ∂_c log det A = tr M_c, Δ log det A = tr(A⁻¹ ΔA) − Σ_c tr(M_c²).

    Real and imaginary parts go to log|det| and arg det. The determinant's
    Jacobian is dense (it depends on every coordinate its matrix depends on).
    """
    from folx.api import FwdJacobian, FwdLaplArray

    (a,) = args
    if not isinstance(a, FwdLaplArray):
        return list(plain(a))
    inverse, log_abs, phase, singular = inverse_and_log_det(jax.lax.stop_gradient(a.x), how="elimination")
    m = jnp.einsum("...ij,k...jl->k...il", inverse, a.jacobian.dense_array)
    jacobian = jnp.einsum("k...ii->k...", m)
    laplacian = jnp.einsum("...ji,...ij->...", inverse, a.laplacian) - jnp.einsum("k...ij,k...ji->...", m, m)
    if jnp.iscomplexobj(jacobian):
        return [
            FwdLaplArray(log_abs, FwdJacobian.from_dense(jnp.real(jacobian)), jnp.real(laplacian)),
            FwdLaplArray(phase, FwdJacobian.from_dense(jnp.imag(jacobian)), jnp.imag(laplacian)),
        ]
    return [FwdLaplArray(log_abs, FwdJacobian.from_dense(jacobian), laplacian), phase]


def _register_folx_rule() -> None:
    import folx

    folx.register_function("qernel_log_det", _folx_log_det)
    folx.register_function("lapack_log_det", functools.partial(_folx_log_det, plain=lapack_log_det))


_register_folx_rule()
