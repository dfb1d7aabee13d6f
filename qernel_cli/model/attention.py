"""Grouped-query self-attention over the electrons (permutation equivariant).

n_q = ``heads`` query heads of dimension d = width / heads share n_kv =
``kv_heads`` key/value heads: query head h reads key/value head h // (n_q/n_kv).
n_kv = n_q is ordinary multi-head attention, n_kv = 1 multi-query attention.
There is no mask and no positional encoding: every token attends to every
electron, so permuting the electrons permutes the output rows. The softmax is
smooth, so the output is an analytic function of the inputs.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from qernel_cli.model.jet import Jet, linear, product, softmax
from qernel_cli.model.linear import Linear, split


def stable_softmax(x: Float[Array, "..."], axis: int = -1) -> Float[Array, "..."]:
    """Softmax with a max-shift that carries no derivative (exact: softmax is shift invariant).

    Written out (rather than ``jax.nn.softmax``, a custom_jvp) so that folx's forward
    Laplacian sees plain exp / sum / divide.
    """
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    e = jnp.exp(shifted)
    return e / jnp.sum(e, axis=axis, keepdims=True)


class GroupedQueryAttention(eqx.Module):
    """Self-attention with ``heads`` query heads sharing ``kv_heads`` key/value heads."""

    query: Linear
    key: Linear
    value: Linear
    output: Linear
    heads: int = eqx.field(static=True)
    kv_heads: int = eqx.field(static=True)

    def __init__(self, width: int, heads: int, kv_heads: int, *, dtype=jnp.float64, key: PRNGKeyArray):
        if width % heads:
            raise ValueError(f"heads={heads} must divide width={width}")
        if heads % kv_heads:
            raise ValueError(f"kv_heads={kv_heads} must divide heads={heads}")
        head_dim = width // heads
        kq, kk, kv, ko = split(key, 4)
        self.query = Linear(width, heads * head_dim, use_bias=False, dtype=dtype, key=kq)
        self.key = Linear(width, kv_heads * head_dim, use_bias=False, dtype=dtype, key=kk)
        self.value = Linear(width, kv_heads * head_dim, use_bias=False, dtype=dtype, key=kv)
        self.output = Linear(heads * head_dim, width, use_bias=False, dtype=dtype, key=ko)
        self.heads = int(heads)
        self.kv_heads = int(kv_heads)

    @property
    def head_dim(self) -> int:
        return self.query.out_features // self.heads

    def __call__(self, x: Float[Array, "n width"]) -> Float[Array, "n width"]:
        n = x.shape[0]
        d, groups = self.head_dim, self.heads // self.kv_heads
        q = self.query(x).reshape(n, self.kv_heads, groups, d)
        k = self.key(x).reshape(n, self.kv_heads, d)
        v = self.value(x).reshape(n, self.kv_heads, d)
        scores = jnp.einsum("nkgd,mkd->kgnm", q, k) / math.sqrt(d)
        weights = stable_softmax(scores, axis=-1)
        attended = jnp.einsum("kgnm,mkd->nkgd", weights, v).reshape(n, self.heads * d)
        return self.output(attended)

    def jet(self, x: Jet) -> Jet:
        """The same map on a jet (``model.jet`` rules: linear projections, products, softmax)."""
        n = x.value.shape[0]
        d, kv, groups = self.head_dim, self.kv_heads, self.heads // self.kv_heads

        def project(layer, *shape):
            return linear(x, lambda y: (y @ layer.weight.T).reshape(*y.shape[:-1], *shape))

        q = project(self.query, kv, groups, d)
        k = project(self.key, kv, d)
        v = project(self.value, kv, d)
        scores = product(
            q, k, lambda a, b: jnp.einsum("nkgd,mkd->kgnm", a, b) / math.sqrt(d), lambda a, b: jnp.einsum("tnkgd,tmkd->kgnm", a, b) / math.sqrt(d)
        )
        weights = softmax(scores, axis=-1)
        attended = product(weights, v, lambda a, b: jnp.einsum("kgnm,mkd->nkgd", a, b).reshape(n, kv * groups * d))
        return linear(attended, lambda y: y @ self.output.weight.T)
