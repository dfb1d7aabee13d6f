"""Second-order forward jets: (value, Jacobian, Laplacian) with respect to T input coordinates.

A ``Jet`` of an array-valued function f(r) of the flattened positions
r ∈ R^T holds f, ∂_t f for every t (tangent axis first) and ∇²f = Σ_t ∂_t² f.
The rules below propagate jets through the operations of the transformer trunk
with the chain rule

    ∂_t g(f) = g'(f) ∂_t f,    ∇² g(f) = g'(f) ∇²f + g''(f) Σ_t (∂_t f)²,

and the product rule ∇²(ab) = a ∇²b + b ∇²a + 2 Σ_t ∂_t a ∂_t b. Linear maps
act on the three parts alike (the bias on the value only). Every Jacobian has
the tangent axis in front, so a linear layer is one matrix product over all
tangents, electrons and walkers. Units are those of f over a_M (Jacobian) and
a_M² (Laplacian).
"""

from __future__ import annotations

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["Jet", "elementwise", "layer_norm", "linear", "product", "scale", "softmax"]


class Jet(eqx.Module):
    """f, ∂_t f (tangent axis first) and ∇²f of one array-valued function of the positions."""

    value: Float[Array, "*shape"]
    jacobian: Float[Array, "T *shape"]
    laplacian: Float[Array, "*shape"]

    def __add__(self, other: "Jet") -> "Jet":
        return Jet(self.value + other.value, self.jacobian + other.jacobian, self.laplacian + other.laplacian)


def linear(jet: Jet, fn: Callable[[Array], Array], bias: Array | float = 0.0) -> Jet:
    """fn(f) + bias for a linear ``fn`` that acts on the trailing axes (e.g. ``x @ W``)."""
    return Jet(fn(jet.value) + bias, fn(jet.jacobian), fn(jet.laplacian))


def scale(jet: Jet, factor: Array, shift: Array | float = 0.0) -> Jet:
    """factor ⊙ f + shift with factor, shift constant in r (broadcast over the trailing axes)."""
    return Jet(factor * jet.value + shift, factor * jet.jacobian, factor * jet.laplacian)


def elementwise(fn: Callable[[Array], Array], jet: Jet) -> Jet:
    """g(f) for a scalar function g applied elementwise (derivatives by nested jvp)."""
    ones = jnp.ones_like(jet.value)

    def first(x):
        return jax.jvp(fn, (x,), (ones,))

    (value, d1), (_, d2) = jax.jvp(first, (jet.value,), (ones,))
    squares = jnp.sum(jet.jacobian * jet.jacobian, axis=0)
    return Jet(value, d1 * jet.jacobian, d1 * jet.laplacian + d2 * squares)


def product(
    a: Jet, b: Jet, contract: Callable[[Array, Array], Array], cross: Callable[[Array, Array], Array] | None = None
) -> Jet:
    """contract(a, b) for a bilinear ``contract`` (an einsum without the tangent axis).

    ``cross``, if given, is Σ_t contract(a_t, b_t) over the leading tangent axis
    written as one contraction (e.g. an einsum that sums t with the other
    contracted axes); by default contract is mapped over t and summed.
    """
    value = contract(a.value, b.value)
    jacobian = jax.vmap(contract, (0, None))(a.jacobian, b.value) + jax.vmap(contract, (None, 0))(a.value, b.jacobian)
    cross = jnp.sum(jax.vmap(contract)(a.jacobian, b.jacobian), axis=0) if cross is None else cross(a.jacobian, b.jacobian)
    laplacian = contract(a.laplacian, b.value) + contract(a.value, b.laplacian) + 2.0 * cross
    return Jet(value, jacobian, laplacian)


def layer_norm(jet: Jet, eps: float) -> Jet:
    """(f − mean f) / sqrt(var f + eps) over the last axis (no affine part)."""
    mean = linear(jet, lambda x: jnp.mean(x, axis=-1, keepdims=True))
    centred = Jet(jet.value - mean.value, jet.jacobian - mean.jacobian, jet.laplacian - mean.laplacian)
    variance = product(centred, centred, lambda x, y: jnp.mean(x * y, axis=-1, keepdims=True))
    inverse = elementwise(lambda v: jax.lax.rsqrt(v + eps), variance)
    return product(centred, inverse, lambda x, y: x * y)


def softmax(jet: Jet, axis: int = -1) -> Jet:
    """softmax of f along ``axis`` (the max shift carries no derivative)."""
    s = jet.value
    w = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=axis, keepdims=True)))
    w = w / jnp.sum(w, axis=axis, keepdims=True)
    mean_jacobian = jnp.sum(w * jet.jacobian, axis=axis if axis < 0 else axis + 1, keepdims=True)
    log_jacobian = jet.jacobian - mean_jacobian  # ∂ log w
    t_axis = 0
    squares = jnp.sum(jet.jacobian * jet.jacobian, axis=t_axis)
    lse_laplacian = jnp.sum(w * (jet.laplacian + squares), axis=axis, keepdims=True) - jnp.sum(
        mean_jacobian * mean_jacobian, axis=t_axis
    )
    log_laplacian = jet.laplacian - lse_laplacian
    jacobian = w * log_jacobian
    laplacian = w * (log_laplacian + jnp.sum(log_jacobian * log_jacobian, axis=t_axis))
    return Jet(w, jacobian, laplacian)
