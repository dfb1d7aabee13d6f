"""SPRING / MinSR algebra against direct formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.vmc.spring import (
    as_parts,
    centred_jacobian,
    clip_local_energy,
    clipped_fraction,
    constrain_step,
    energy_gradient,
    energy_residuals,
    spring_direction,
)


def _problem(seed=0, g=2, w=8, p=30):
    rng = np.random.default_rng(seed)
    jac = rng.normal(size=(g, w, p)) + 1j * rng.normal(size=(g, w, p))
    e = rng.normal(size=(g, w)) + 0.1j * rng.normal(size=(g, w))
    return jnp.asarray(jac), jnp.asarray(e)


def _centred(jac):
    """Ō of a complex (g, w, p) Jacobian, computed directly."""
    jac = np.asarray(jac)
    return (jac - jac.mean(axis=1, keepdims=True)).reshape(-1, jac.shape[-1])


def test_woodbury_equals_parameter_space_solution():
    jac, e = _problem()
    eps = energy_residuals(e, n_mad=1e9)
    lam = 0.3
    phi = spring_direction(as_parts(jac), eps, jnp.zeros(jac.shape[-1]), lam, 0.0)
    # Parameter-space normal equations: (AᵀA + λ) φ = Aᵀ b.
    o = _centred(jac)
    n = o.shape[0]
    a = np.concatenate([o.real, o.imag]) / np.sqrt(n)
    b = np.concatenate([np.asarray(eps).real.ravel(), np.asarray(eps).imag.ravel()]) / np.sqrt(n)
    direct = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ b)
    assert np.allclose(phi, direct, rtol=1e-9, atol=1e-12)


def test_large_damping_is_gradient_descent_and_momentum_form():
    jac, e = _problem(1)
    eps = energy_residuals(e, n_mad=1e9)
    lam = 1e8
    phi = spring_direction(as_parts(jac), eps, jnp.zeros(jac.shape[-1]), lam, 0.0)
    grad = energy_gradient(as_parts(jac), eps)
    assert np.allclose(lam * phi, -0.5 * grad, rtol=1e-6)
    # The gradient is that of the group-mean energy: check against autodiff of a model
    # with log ψ = Σ θ·features (complex features), where ⟨E⟩ derivative = 2 Re⟨conj(Ō)(E_L − E)⟩.
    prev = jnp.asarray(np.random.default_rng(2).normal(size=jac.shape[-1]))
    mu = 0.7
    phi_m = spring_direction(as_parts(jac), eps, prev, 0.3, mu)
    o = _centred(jac)
    n = o.shape[0]
    a = np.concatenate([o.real, o.imag]) / np.sqrt(n)
    b = np.concatenate([np.asarray(eps).real.ravel(), np.asarray(eps).imag.ravel()]) / np.sqrt(n)
    expected = a.T @ np.linalg.solve(a @ a.T + 0.3 * np.eye(2 * n), b - mu * a @ prev) + mu * prev
    assert np.allclose(phi_m, expected, rtol=1e-9)


def test_energy_gradient_matches_autodiff_of_exact_expectation():
    # A two-state toy: ψ(x; θ) over a finite set of x, exact ⟨H⟩ by enumeration, gradient by autodiff.
    rng = np.random.default_rng(3)
    m, p = 6, 4
    h = rng.normal(size=(m, m)) + 1j * rng.normal(size=(m, m))
    h = jnp.asarray(h + h.conj().T)
    feats = jnp.asarray(rng.normal(size=(m, p)) + 1j * rng.normal(size=(m, p)))
    theta = jnp.asarray(rng.normal(size=p) * 0.3)

    def log_psi(t):
        return feats @ t

    def energy(t):
        psi = jnp.exp(log_psi(t))
        return jnp.real(jnp.vdot(psi, h @ psi) / jnp.vdot(psi, psi))

    psi = jnp.exp(log_psi(theta))
    prob = jnp.abs(psi) ** 2 / jnp.sum(jnp.abs(psi) ** 2)
    e_loc = (h @ psi) / psi
    # Weighted "samples": replicate states proportionally by using exact weights via reweighting.
    o = feats - jnp.sum(prob[:, None] * feats, axis=0)
    e_mean = jnp.sum(prob * e_loc)
    exact = 2 * jnp.real(jnp.sum(prob[:, None] * jnp.conj(o) * (e_loc - e_mean)[:, None], axis=0))
    assert np.allclose(jax.grad(energy)(theta), exact, rtol=1e-10)
    # energy_gradient on uniformly weighted samples reproduces the same formula.
    samples = rng.choice(m, size=200000, p=np.asarray(prob))
    eps = energy_residuals(e_loc[samples][None], n_mad=1e9)
    est = energy_gradient(as_parts(feats[samples][None]), eps)
    assert np.allclose(est, exact, atol=0.05 * np.abs(exact).max() + 0.02)


def test_clipping_and_norm_constraint():
    e = jnp.asarray([[0.0, 1.0, -1.0, 0.5, 100.0]])
    clipped = clip_local_energy(e, 5.0)
    median, mad = 0.5, 0.5  # |e − 0.5| = 0.5, 0.5, 1.5, 0, 99.5 → median 0.5
    assert float(clipped[0, -1]) == pytest.approx(median + 5 * mad)
    assert np.allclose(clipped[0, :4], e[0, :4])
    jac, _ = _problem(4)
    d = jnp.ones(jac.shape[-1])
    step = constrain_step(as_parts(jac), d, 10.0, 1e-3)
    o = _centred(jac)
    assert float(np.sqrt(np.mean(np.abs(o @ np.asarray(step)) ** 2))) == pytest.approx(1e-3)
    small = constrain_step(as_parts(jac), 1e-9 * d, 1.0, 1e-3)
    assert np.allclose(small, 1e-9 * d)


def test_mean_deviation_clip_window_is_wider_for_heavy_tails():
    """clip_deviation="mean": median ± n·mean|E − median| (FermiNet's window), which keeps a moderate tail the median one cuts."""
    e = jnp.asarray([[0.0, 0.1, -0.1, 0.05, -0.05, 0.0, 3.0, 40.0]])
    spread = np.abs(np.asarray(e[0]) - 0.025)  # median of the 8 values: 0.025
    median_window = 0.025 + 5 * np.median(spread)
    mean_window = 0.025 + 5 * np.mean(spread)
    assert median_window < 3.0 < mean_window < 40.0  # so the two windows differ on the 3.0
    by_median = np.asarray(clip_local_energy(e, 5.0, "median"))[0]
    by_mean = np.asarray(clip_local_energy(e, 5.0, "mean"))[0]
    assert by_median[6] == pytest.approx(median_window) and by_median[7] == pytest.approx(median_window)
    assert by_mean[6] == 3.0 and by_mean[7] == pytest.approx(mean_window)
    np.testing.assert_array_equal(by_mean[:6], np.asarray(e[0, :6]))
    assert float(clipped_fraction(e, 5.0, "mean")[0]) == pytest.approx(1 / 8)
    assert float(clipped_fraction(e, 5.0, "median")[0]) == pytest.approx(2 / 8)
    eps = np.asarray(energy_residuals(e, 5.0, "mean"))[0]
    np.testing.assert_allclose(-eps.real, by_mean - by_mean.mean(), atol=1e-14)


def test_both_parts_of_the_local_energy_are_clipped_in_the_residuals():
    """An outlier of Im E_L (near a node of a complex ψ) is clipped like one of Re E_L, each part to its own median ± n·MAD."""
    re = np.asarray([0.0, 1.0, -1.0, 0.5, 0.2])
    im = np.asarray([0.1, -0.1, 0.0, 0.3, 50.0])  # median 0.1; |im − 0.1| = 0, 0.2, 0.1, 0.2, 49.9 → MAD 0.2
    eps = np.asarray(energy_residuals(jnp.asarray(re + 1j * im)[None], n_mad=5.0))[0]
    clipped_im = np.minimum(im, 0.1 + 5 * 0.2)
    np.testing.assert_allclose(-eps.imag, clipped_im - clipped_im.mean(), atol=1e-15)
    np.testing.assert_allclose(-eps.real, re - re.mean(), atol=1e-15)  # nothing to clip in the real part
    assert float(clipped_fraction(jnp.asarray(re + 1j * im)[None], 5.0)[0]) == pytest.approx(1 / 5)
    assert float(clipped_fraction(jnp.asarray(re)[None], 5.0)[0]) == 0.0


def test_real_layout_centring_matches_complex():
    jac, _ = _problem(5)
    parts = np.asarray(centred_jacobian(as_parts(jac)))
    o = np.asarray(jac) - np.asarray(jac).mean(axis=1, keepdims=True)
    assert np.allclose(parts[:, :, 0] + 1j * parts[:, :, 1], o, atol=1e-14)


def test_blocks_equal_one_array():
    """Log-derivatives as per-leaf blocks (the training layout) give the same algebra as one array."""
    from qernel_cli.vmc.spring import flat_rows

    jac, e = _problem(6, p=30)
    whole = as_parts(jac)
    blocks = [whole[..., :7], whole[..., 7:8], whole[..., 8:]]
    assert np.array_equal(flat_rows(blocks), whole)
    eps = energy_residuals(e, n_mad=3.0)
    prev = jnp.asarray(np.random.default_rng(7).normal(size=30))
    d_whole = spring_direction(whole, eps, prev, 0.2, 0.8)
    d_blocks = spring_direction(blocks, eps, prev, 0.2, 0.8)
    assert np.allclose(d_blocks, d_whole, rtol=1e-12, atol=1e-14)
    assert np.allclose(energy_gradient(blocks, eps), energy_gradient(whole, eps), rtol=1e-12, atol=1e-14)
    assert np.allclose(constrain_step(blocks, d_whole, 3.0, 1e-2), constrain_step(whole, d_whole, 3.0, 1e-2), rtol=1e-12)


@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_float32_direction_is_float64_to_1e5_when_log_derivatives_have_large_means(offset):
    """A float32 kernel and product stay within 1e-5 of float64 when |⟨O⟩|/sd(O) ≥ 1e3 for some parameters.

    Log-derivatives of Jastrow and envelope parameters have large means compared with their spread
    (they grow with the number of electron pairs); rows cast to float32 before they are centred lose
    the spread in the rounding of the mean, and C O Oᵀ C then cancels catastrophically.
    """
    jac, e = _problem(8, g=2, w=16, p=40)
    rng = np.random.default_rng(9)
    means = np.zeros(40, complex)
    means[::3] = offset * (rng.normal(size=14) + 1j * rng.normal(size=14))  # a third of the parameters
    jac = jac + jnp.asarray(means)
    eps = energy_residuals(e, n_mad=1e9)
    prev = jnp.asarray(rng.normal(size=40))
    exact = spring_direction(as_parts(jac), eps, prev, 0.1, 0.9)  # the presets' damping
    single = spring_direction(as_parts(jac), eps, prev, 0.1, 0.9, matmul_dtype=jnp.float32)
    assert np.all(np.isfinite(single))  # rounded before centring: NaN
    assert float(jnp.linalg.norm(single - exact) / jnp.linalg.norm(exact)) < 1e-5  # measured 8.7e-7 (8.5e-7 without the means)
