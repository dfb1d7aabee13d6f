"""Interpolation in the depth between anchor depths (normalised c₀): natural cubic spline or piecewise linear.

Depth-following envelopes hold one set of coefficients per anchor and mix
them with weights w_a(c₀) that sum to one and are 1 at their own anchor.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

INTERPOLATIONS = ("smooth", "linear")


def natural_spline_curvatures(x: Float[np.ndarray, " A"]) -> Float[np.ndarray, "A A"]:
    """M[i, a]: second derivative at node i of the natural cubic spline through the unit values e_a at the nodes x."""
    x = np.asarray(x, dtype=np.float64)
    a = len(x)
    m = np.zeros((a, a))
    if a > 2:
        h = np.diff(x)
        n = a - 2
        lhs, rhs = np.zeros((n, n)), np.zeros((n, a))
        for i in range(1, a - 1):  # continuity of the first derivative at the interior nodes
            row = i - 1
            lhs[row, row] = (h[i - 1] + h[i]) / 3.0
            if row > 0:
                lhs[row, row - 1] = h[i - 1] / 6.0
            if row < n - 1:
                lhs[row, row + 1] = h[i] / 6.0
            rhs[row, i - 1] += 1.0 / h[i - 1]
            rhs[row, i] -= 1.0 / h[i - 1] + 1.0 / h[i]
            rhs[row, i + 1] += 1.0 / h[i]
        m[1:-1] = np.linalg.solve(lhs, rhs)
    return m


def natural_spline_weights(x: Float[np.ndarray, " A"], c: Float[Array, ""]) -> Float[Array, " A"]:
    """w_a(c): the natural cubic spline through values y_a at nodes x is Σ_a w_a(c) y_a (x[0] ≤ c ≤ x[-1]; C² in c)."""
    x = np.asarray(x, dtype=np.float64)
    a = len(x)
    m = jnp.asarray(natural_spline_curvatures(x))
    nodes, steps, eye = jnp.asarray(x), jnp.asarray(np.diff(x)), jnp.eye(a)
    i = jnp.clip(jnp.searchsorted(nodes, c, side="right") - 1, 0, a - 2)
    h = steps[i]
    t = (c - nodes[i]) / h
    u = 1.0 - t
    return u * eye[i] + t * eye[i + 1] + h**2 / 6.0 * ((u**3 - u) * m[i] + (t**3 - t) * m[i + 1])


def anchor_weights(anchors: tuple[float, ...], interpolation: str, c0: Float[Array, ""]) -> Float[Array, " A"]:
    """Interpolation weights of the anchors at normalised c₀ (they sum to 1; weight a is 1 at anchor a)."""
    x = np.asarray(anchors)
    if len(x) == 1:
        return jnp.ones(1)
    c0 = jnp.clip(c0, x[0], x[-1])
    if interpolation == "linear":
        return jnp.stack([jnp.interp(c0, x, np.eye(len(x))[a]) for a in range(len(x))])
    return natural_spline_weights(x, c0)
