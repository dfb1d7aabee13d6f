"""The hand-written forward Laplacian of the determinant head against folx and the Hessian trace.

``Wavefunction.forward_laplacian`` (used by the local energy through
``Wavefunction.at(c)``) must give the same (∇² log ψ, ∇ log ψ) as folx's
generic forward Laplacian and as the loop of Hessian-vector products, for every
head the model can have: one or two spin blocks, one or several determinants,
plane-wave or depth-following Bloch envelopes, with and without Jastrows, and
at configurations where ψ = 0.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.hamiltonian.bands import follow_orbitals, lowest_orbitals, solve_bands
from qernel_cli.hamiltonian.local_energy import laplacian_and_gradient, local_energy_batch
from qernel_cli.lattice import Supercell
from qernel_cli.model import Wavefunction

C = jnp.array([0.4])
DEPTH = 1.5  # V/E_M of the Bloch envelopes' reference


def _model(cell, n_up, n_down, *, seed, dtype="float64", **overrides):
    sizes = dict(
        layers=2, width=16, heads=4, kv_heads=2, mlp_width=16, experts=2, determinants=3, harmonics=2,
        film_hidden=8, coulomb_strength=3.0, condition_centre=[0.5], condition_scale=[1.0],
    )
    sizes.update(overrides)
    model = Wavefunction(cell, n_up, n_down, key=jax.random.key(seed), dtype=dtype, **sizes)
    # Generic weights: noise on every float leaf (zero-initialised FiLM heads, unit biases).
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    rng = np.random.default_rng(seed + 100)
    leaves = [jnp.asarray(np.asarray(x, np.float64) + 0.3 * rng.standard_normal(x.shape), x.dtype) for x in leaves]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)


def _bloch_anchors(cell, n):
    reference = lowest_orbitals(cell, n, DEPTH, 45.0, n_shells=2)
    return tuple(follow_orbitals(reference, cell, v, 45.0) for v in (0.5, 1.5, 2.5)), (-1.0, 0.0, 1.0)


def _models():
    polarised = Supercell(2, 3)
    spinful = Supercell(2, 2)
    anchors, positions = _bloch_anchors(polarised, 4)
    return {
        "polarised, 3 dets, plane waves, cusp Jastrow": (polarised, _model(polarised, 4, 0, seed=1)),
        "spinful 3+2, 3 dets, all three Jastrows": (
            spinful, _model(spinful, 3, 2, seed=2, pair_jastrow_qmax=1.2, radial_jastrow=3)
        ),
        "one determinant, no Jastrow": (polarised, _model(polarised, 4, 0, seed=3, determinants=1, jastrow=False)),
        "depth-following Bloch envelopes": (
            polarised,
            _model(polarised, 4, 0, seed=4, orbitals=(anchors, None), envelope_anchors=positions),
        ),
        "spin-down only block": (spinful, _model(spinful, 0, 3, seed=5, determinants=2)),
        "band-mixing envelopes": (
            polarised,
            _model(polarised, 4, 0, seed=6, orbitals=(anchors, None), envelope_anchors=positions, band_states=[solve_bands(polarised, v, 45.0, 2, n_shells=2) for v in (0.5, 1.5, 2.5)]),
        ),
    }


MODELS = _models()


@eqx.filter_jit
def _two_ways(model, positions):
    log_psi = model.at(C)
    return (
        laplacian_and_gradient(log_psi, positions, method="forward"),
        laplacian_and_gradient(log_psi, positions, method="folx"),
    )


def _positions(cell, n, seed):
    return jnp.asarray(np.random.default_rng(seed).uniform(0.0, 1.0, (n, 2)) @ cell.cell)


@pytest.mark.parametrize("name", list(MODELS))
def test_matches_folx(name):
    cell, model = MODELS[name]
    n = model.n_electrons
    (lap, grad), (lap_folx, grad_folx) = _two_ways(model, _positions(cell, n, 7))
    assert jnp.iscomplexobj(lap) and grad.shape == (n, 2)
    assert abs(lap_folx) > 1.0  # a non-trivial Laplacian
    np.testing.assert_allclose(lap, lap_folx, rtol=1e-10)
    np.testing.assert_allclose(grad, grad_folx, rtol=1e-10, atol=1e-12)


def test_matches_hessian_trace():
    cell, model = MODELS["spinful 3+2, 3 dets, all three Jastrows"]
    x = _positions(cell, model.n_electrons, 8)
    lap, grad = eqx.filter_jit(laplacian_and_gradient)(model.at(C), x, "forward")
    lap_ref, grad_ref = eqx.filter_jit(laplacian_and_gradient)(model.at(C), x, "hessian")
    assert jnp.iscomplexobj(lap) and np.all(np.abs(lap_ref) > 1.0)  # complex (spinful pairs) and non-trivial
    np.testing.assert_allclose(lap, lap_ref, rtol=1e-8)
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-8, atol=1e-10)


def test_float32_trunk_agrees_with_folx_to_single_precision():
    cell = Supercell(2, 3)
    model = _model(cell, 4, 0, seed=6, dtype="float32")
    (lap, grad), (lap_folx, grad_folx) = _two_ways(model, _positions(cell, 4, 8))
    scale = abs(lap_folx)
    assert abs(lap - lap_folx) < 1e-4 * scale
    np.testing.assert_allclose(grad, grad_folx, atol=1e-4 * float(jnp.max(jnp.abs(grad_folx))))


def test_psi_zero_gives_finite_derivatives():
    """Two same-spin electrons on one point (ψ = 0) and an exactly singular head: finite numbers.

    At a coincidence the rounded determinant is rarely exactly zero, so both
    rules see a huge but finite Laplacian; a head made singular on purpose
    (identical rows) hits the guard, which gives zero derivatives of that term.
    """
    cell, model = MODELS["spinful 3+2, 3 dets, all three Jastrows"]
    frac = np.random.default_rng(9).uniform(0.0, 1.0, (5, 2))
    x = jnp.asarray(frac @ cell.cell)
    x = x.at[1].set(x[0])
    for lap, grad in _two_ways(model, x):
        assert np.isfinite(lap) and np.all(np.isfinite(grad))


def test_envelope_jet_matches_autodiff():
    cell, model = MODELS["depth-following Bloch envelopes"]
    envelope = model.orbitals.blocks[0].envelope
    x = jnp.asarray(np.random.default_rng(10).uniform(0.0, 1.0, (4, 2)) @ cell.cell)
    c0 = jnp.asarray(0.3)
    value, gradient, laplacian = envelope.jet(x, c0)

    def one(r, i):  # e_j(r) of row i: (K, n_orb); the envelope does not mix rows
        return envelope(x.at[i].set(r), c0)[:, i]

    for i in range(4):
        for part in (jnp.real, jnp.imag):
            jac = jax.jacfwd(lambda r: part(one(r, i)))(x[i])  # (K, j, 2)
            hess = jax.hessian(lambda r: part(one(r, i)))(x[i])  # (K, j, 2, 2)
            np.testing.assert_allclose(part(value[:, i]), part(one(x[i], i)), atol=1e-12)
            np.testing.assert_allclose(part(gradient[:, :, i]), jnp.moveaxis(jac, -1, 0), atol=1e-10)
            np.testing.assert_allclose(part(laplacian[:, i]), jnp.trace(hess, axis1=-2, axis2=-1), atol=1e-9)


def test_local_energy_batch_uses_the_hand_written_rule_and_agrees():
    """The VMC path (``Wavefunction.at``) and the generic folx path give the same local energies."""
    cell, model = MODELS["spinful 3+2, 3 dets, all three Jastrows"]
    x = jnp.asarray(np.random.default_rng(11).uniform(0.0, 1.0, (3, 5, 2)) @ cell.cell)

    @eqx.filter_jit
    def energies(model, x, method):
        return local_energy_batch(model.at(C), x, v=0.5, phi_deg=45.0, coulomb_strength=0.0, method=method)

    fast, generic = energies(model, x, "forward"), energies(model, x, "folx")
    np.testing.assert_allclose(fast.total, generic.total, rtol=1e-10)
    np.testing.assert_allclose(fast.kinetic_imag, generic.kinetic_imag, rtol=1e-9, atol=1e-9)


def test_positive_sparsity_threshold_selects_folx():
    """``training.laplacian_sparsity > 0`` asks for folx's sparse forward Laplacian: same numbers."""
    cell, model = MODELS["one determinant, no Jastrow"]
    x = _positions(cell, model.n_electrons, 15)
    lap, grad = eqx.filter_jit(lambda m, y: m.forward_laplacian(y, C, 0.6))(model, x)
    lap_folx, grad_folx = _two_ways(model, x)[1]
    np.testing.assert_allclose(lap, lap_folx, rtol=1e-10)
    np.testing.assert_allclose(grad, grad_folx, rtol=1e-10, atol=1e-12)
