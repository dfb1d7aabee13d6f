"""Log-determinants and inverses (``qernel_cli.linalg``): the LAPACK-free elimination against LAPACK, finite differences and folx; both methods' conventions."""

from __future__ import annotations

import functools

import folx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli import linalg
from qernel_cli.linalg import LOG_FLOOR


def _matrices(n: int, batch=(5,), complex_=True, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(*batch, n, n))
    if complex_:
        a = a + 1j * rng.normal(size=(*batch, n, n))
    return jnp.asarray(a)


METHODS = ["elimination", "lapack"]


@pytest.mark.parametrize("n", [1, 2, 3, 7, 24, linalg.UNROLL_MAX + 3])
@pytest.mark.parametrize("complex_", [True, False])
def test_matches_lapack(n, complex_):
    a = _matrices(n, (3, 4), complex_, seed=n)
    inverse, log_abs, phase, singular = linalg.inverse_and_log_det(a, how="elimination")
    sign, ref = np.linalg.slogdet(np.asarray(a))
    assert not np.any(singular)
    np.testing.assert_allclose(log_abs, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(1j * np.asarray(phase)), sign, atol=1e-11)
    np.testing.assert_allclose(inverse, np.linalg.inv(np.asarray(a)), rtol=1e-9, atol=1e-10 * n)
    # The forward-only elimination gives the same determinant.
    log_abs2, phase2 = linalg.log_det(a, how="elimination")
    np.testing.assert_allclose(log_abs2, log_abs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(1j * np.asarray(phase2)), sign, atol=1e-11)


@pytest.mark.parametrize("how", METHODS)
def test_pivoting_and_permutation_sign(how):
    """Zero leading entries force pivoting; odd and even row permutations flip and keep the sign."""
    a = jnp.asarray([[0.0, 2.0, 1.0], [0.0, 0.0, 3.0], [4.0, 1.0, 0.0]])  # det = 24
    for perm, sign in (((0, 1, 2), 1), ((1, 0, 2), -1), ((2, 0, 1), 1), ((0, 2, 1), -1)):
        log_abs, phase = linalg.log_det(a[jnp.asarray(perm)], how=how)
        assert abs(float(log_abs) - np.log(24.0)) < 1e-14
        assert abs(float(phase) - (0.0 if sign > 0 else np.pi)) < 1e-15
    _, log_abs, phase, _ = linalg.inverse_and_log_det(a.astype(jnp.complex128) * 1j, how=how)  # det(i A) = i³ · 24 = −24 i
    assert abs(float(phase) + np.pi / 2) < 1e-14 and abs(float(log_abs) - np.log(24.0)) < 1e-14


@pytest.mark.parametrize("how", METHODS)
def test_singular_matrix_is_flagged_with_zero_derivatives(how):
    a = jnp.asarray(np.random.default_rng(12).normal(size=(3, 4, 4)) + 1j * np.random.default_rng(13).normal(size=(3, 4, 4)))
    a = a.at[1, 2].set(a[1, 0])  # two equal rows: exactly singular (two electrons at one point)
    a = a.at[2].set(a[2][jnp.array([1, 0, 2, 3])])  # an odd permutation: the sign flips
    inverse, log_abs, phase, singular = linalg.inverse_and_log_det(a, how=how)
    assert singular.tolist() == [False, True, False]
    assert log_abs[1] == LOG_FLOOR and phase[1] == 0.0
    assert np.all(inverse[1] == 0)
    for k in (0, 2):
        sign, ref = np.linalg.slogdet(np.asarray(a[k]))
        np.testing.assert_allclose(log_abs[k], ref, rtol=1e-12)
        np.testing.assert_allclose(np.exp(1j * np.asarray(phase[k])), sign, atol=1e-12)
        np.testing.assert_allclose(inverse[k] @ a[k], np.eye(4), atol=1e-12)

    def f(x):
        return jnp.sum(jnp.stack(linalg.log_det(x, how=how)))

    g = jax.grad(lambda re: f(re + 1j * a.imag))(a.real)
    assert np.all(np.isfinite(g)) and np.all(g[1] == 0) and np.any(g[0] != 0)
    assert linalg.log_det(jnp.zeros((3, 3)), how=how)[0] == LOG_FLOOR


@pytest.mark.parametrize("how", METHODS)
def test_singularity_is_judged_relative_to_the_matrix_scale(how):
    """Rows equal to within rounding are singular; a well-conditioned matrix is not, however small its entries (LAPACK's LU too)."""
    rng = np.random.default_rng(5)
    a = rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4))
    near = a.copy()
    near[2] = near[0] * (1 + 2**-52)  # two rows equal up to one rounding: what an unlucky FMA leaves of two coinciding electrons
    for scale in (1.0, 2.0**-500, 2.0**500):  # exact scalings: the same rounding at every scale
        flags = linalg.inverse_and_log_det(jnp.asarray(np.stack([a, near]) * scale), how=how)[3]
        assert flags.tolist() == [False, True], scale
        log_abs = linalg.log_det(jnp.asarray(a * scale), how=how)[0]
        assert float(log_abs) == pytest.approx(np.linalg.slogdet(a)[1] + 4 * np.log(scale), rel=1e-12)
    g = jax.grad(lambda re: jnp.sum(jnp.stack(linalg.log_det(re + 1j * near.imag, how=how))))(jnp.asarray(near.real))
    assert np.all(g == 0)


@pytest.mark.parametrize("how", METHODS)
def test_empty_matrix(how):
    log_abs, phase = linalg.log_det(jnp.zeros((2, 0, 0), jnp.complex128), how=how)
    assert log_abs.shape == (2,) and np.all(log_abs == 0) and np.all(phase == 0)


def _reference_log_det(a):
    sign, log_abs = jnp.linalg.slogdet(a)
    return log_abs, jnp.angle(sign)


@pytest.mark.parametrize("how", METHODS)
@pytest.mark.parametrize("n", [3, linalg.UNROLL_MAX + 2])
def test_first_and_second_derivatives_match_lapack(n, how):
    """Gradient and Hessian of log|det| and arg det of a matrix depending smoothly on parameters (both own derivative rules)."""
    rng = np.random.default_rng(n)
    base = jnp.asarray(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    direction = jnp.asarray(rng.normal(size=(3, n, n)) + 1j * rng.normal(size=(3, n, n)))

    def objective(log_det):
        def f(x):
            m = base + jnp.tensordot(jnp.sin(x), direction, axes=1)
            log_abs, phase = log_det(m)
            return log_abs + 0.7 * phase

        return f

    x = jnp.asarray([0.3, -0.2, 0.5])
    ours, ref = objective(lambda m: linalg.log_det(m, how=how)), objective(_reference_log_det)
    np.testing.assert_allclose(jax.grad(ours)(x), jax.grad(ref)(x), rtol=1e-9)
    np.testing.assert_allclose(jax.hessian(ours)(x), jax.hessian(ref)(x), rtol=1e-8, atol=1e-10)
    # Finite differences of the primal (not through any derivative rule).
    eps = 1e-6
    fd = [(ours(x.at[i].add(eps)) - ours(x.at[i].add(-eps))) / (2 * eps) for i in range(3)]
    np.testing.assert_allclose(jax.grad(ours)(x), fd, rtol=1e-6)


def test_inverse_derivative():
    a = _matrices(5, (), seed=3)
    da = _matrices(5, (), seed=4)
    f = functools.partial(linalg.inverse_and_log_det, how="elimination")
    (inverse, *_), (d_inverse, *_) = jax.jvp(f, (a,), (da,))
    np.testing.assert_allclose(d_inverse, -inverse @ da @ inverse, atol=1e-12)
    eps = 1e-6
    fd = (f(a + eps * da)[0] - f(a - eps * da)[0]) / (2 * eps)
    np.testing.assert_allclose(d_inverse, fd, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("how", METHODS)
def test_folx_rule_matches_folx_on_lapack(how):
    """The folx rule of ``log_det`` gives the same value, gradient and Laplacian as folx through ``jnp.linalg.slogdet``."""
    rng = np.random.default_rng(5)
    n = 4
    w = jnp.asarray(rng.normal(size=(2 * n, n, n)) + 1j * rng.normal(size=(2 * n, n, n)))

    def psi(log_det):
        def f(x):
            m = jnp.exp(1j * jnp.tensordot(x, w, axes=1)) + jnp.eye(n)  # every entry depends on every coordinate
            log_abs, phase = log_det(m)
            return log_abs + 1j * phase

        return f

    x = jnp.asarray(rng.normal(size=2 * n) * 0.3)
    elimination = functools.partial(linalg.log_det, how=how)
    ours = folx.forward_laplacian(psi(elimination))(x)
    ref = folx.forward_laplacian(psi(_reference_log_det))(x)
    np.testing.assert_allclose(ours.x, ref.x, rtol=1e-12)
    np.testing.assert_allclose(ours.dense_jacobian, ref.dense_jacobian, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.laplacian, ref.laplacian, rtol=1e-10)
    # and the Hessian trace agrees with both
    hess = jax.hessian(lambda y: jnp.real(psi(elimination)(y)))(x)
    np.testing.assert_allclose(np.real(ours.laplacian), np.trace(hess), rtol=1e-9)


def test_no_lapack_in_the_program():
    """The compiled programs (value, inverse, gradient) hold no LAPACK custom call: the reason for this module."""
    a = _matrices(6, (8,), seed=1)
    cases = [
        (lambda a: linalg.log_det(a, how="elimination"), a),
        (lambda a: linalg.inverse_and_log_det(a, how="elimination"), a),
        (jax.grad(lambda re: jnp.sum(linalg.log_det(re + 1j * a.imag, how="elimination")[0])), a.real),
    ]
    for f, arg in cases:
        text = jax.jit(f).lower(arg).as_text()
        assert "lapack" not in text.lower(), text[:2000]
    reference = jax.jit(lambda a: jnp.linalg.slogdet(a)).lower(a).as_text()
    assert "lapack" in reference.lower()  # the check can fail


def test_method_choice(monkeypatch):
    """LAPACK on this one-device test process; several CPU devices or the setting choose elimination; a bad setting fails."""
    monkeypatch.delenv("QERNEL_DETERMINANTS", raising=False)
    assert linalg.method() == ("lapack" if jax.local_device_count() == 1 else "elimination")
    monkeypatch.setenv("QERNEL_DETERMINANTS", "elimination")
    assert linalg.method() == "elimination"
    monkeypatch.setenv("QERNEL_DETERMINANTS", "fast")
    with pytest.raises(ValueError, match="QERNEL_DETERMINANTS"):
        linalg.method()


def test_equal_rows_always_cancel_exactly_by_elimination():
    """Two electrons at one point give two equal rows: elimination finds det = 0 exactly for any matrix (LAPACK's
    reciprocal-multiply LU may leave a pivot of 1e-16 instead)."""
    for seed in range(20):
        a = _matrices(5, (), seed=seed)
        for i, j in ((0, 3), (4, 1), (2, 3)):
            _, log_abs, _, singular = linalg.inverse_and_log_det(a.at[j].set(a[i]), how="elimination")
            assert bool(singular) and log_abs == LOG_FLOOR, (seed, i, j)
