"""Jet rules (value, Jacobian, Laplacian) against jax's Jacobian and Hessian trace."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.model.jet import Jet, elementwise, layer_norm, linear, product, scale, softmax

T = 6  # input coordinates
RNG = np.random.default_rng(0)
A = jnp.asarray(RNG.normal(size=(T, 3, 5)))
B = jnp.asarray(RNG.normal(size=(T, 3, 5)))


def f(r):  # a smooth (3, 5) function of r ∈ R^T
    return jnp.sin(jnp.einsum("t,tij->ij", r, A)) + 0.3 * jnp.einsum("t,tij->ij", r**2, B)


def g(r):
    return jnp.cos(jnp.einsum("t,tij->ij", r, B))


def jet_of(fn, r):
    value = fn(r)
    jacobian = jnp.moveaxis(jax.jacfwd(fn)(r), -1, 0)
    laplacian = jnp.trace(jax.hessian(fn)(r), axis1=-2, axis2=-1)
    return Jet(value, jacobian, laplacian)


def assert_jets_equal(a: Jet, b: Jet):
    np.testing.assert_allclose(a.value, b.value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(a.jacobian, b.jacobian, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.laplacian, b.laplacian, rtol=1e-10, atol=1e-11)


R = jnp.asarray(RNG.normal(size=T))
W = jnp.asarray(RNG.normal(size=(5, 4)))
GAMMA = jnp.asarray(RNG.normal(size=5))

CASES = {
    "linear": (lambda j: linear(j, lambda y: y @ W, 0.5), lambda r: f(r) @ W + 0.5),
    "scale": (lambda j: scale(j, GAMMA, 0.2), lambda r: GAMMA * f(r) + 0.2),
    "gelu": (lambda j: elementwise(jax.nn.gelu, j), lambda r: jax.nn.gelu(f(r))),
    "rsqrt": (lambda j: elementwise(lambda v: jax.lax.rsqrt(v + 2.0), j), lambda r: jax.lax.rsqrt(f(r) + 2.0)),
    "layer norm": (
        lambda j: layer_norm(j, 1e-5),
        lambda r: (f(r) - jnp.mean(f(r), -1, keepdims=True)) * jax.lax.rsqrt(jnp.var(f(r), -1, keepdims=True) + 1e-5),
    ),
    "softmax": (lambda j: softmax(j, axis=-1), lambda r: jax.nn.softmax(f(r), axis=-1)),
    "softmax axis 0": (lambda j: softmax(j, axis=0), lambda r: jax.nn.softmax(f(r), axis=0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_rule_matches_autodiff(name):
    rule, reference = CASES[name]
    assert_jets_equal(rule(jet_of(f, R)), jet_of(reference, R))


def test_product_of_two_functions():
    contract = lambda x, y: jnp.einsum("ij,kj->ik", x, y)  # noqa: E731
    out = product(jet_of(f, R), jet_of(g, R), contract)
    assert_jets_equal(out, jet_of(lambda r: contract(f(r), g(r)), R))
    # the cross term written as one contraction over (t, j), as the attention's scores do
    fused = product(jet_of(f, R), jet_of(g, R), contract, lambda x, y: jnp.einsum("tij,tkj->ik", x, y))
    assert_jets_equal(fused, jet_of(lambda r: contract(f(r), g(r)), R))


def test_sum():
    assert_jets_equal(jet_of(f, R) + jet_of(g, R), jet_of(lambda r: f(r) + g(r), R))
