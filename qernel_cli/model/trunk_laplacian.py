"""Forward Laplacian of the transformer trunk by the jet rules of ``model.jet``.

The trunk's output h (n, width) is a Jet over the T = 2n position coordinates
(t = 2p + a: electron p, Cartesian a, the C order of the flattened positions).
Each electron's input features depend on its own position alone, so their jet
is built per electron and spread onto the tangent axis; from the first
attention on, every token depends on every electron.

Conditions c enter through FiLM and the MoE router only, so they are constants
of the jet. The arithmetic is the trunk's (``model.dtype``), the same as the
forward pass.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from qernel_cli.model.jet import Jet, elementwise, layer_norm, linear, product, scale, softmax

if TYPE_CHECKING:
    from qernel_cli.model.attention import GroupedQueryAttention
    from qernel_cli.model.block import TransformerBlock
    from qernel_cli.model.moe import MixtureOfExperts
    from qernel_cli.model.wavefunction import Wavefunction

__all__ = ["feature_jet", "trunk_jet"]


def feature_jet(model: Wavefunction, positions: Float[Array, "n 2"]) -> Jet:
    """Jet of the periodic features (n, f) over the 2n coordinates, in the trunk's dtype."""
    n = positions.shape[0]

    def one(r):
        return model.features(r[None])[0]

    value = model.features(positions)
    own_jacobian = jax.vmap(jax.jacfwd(one))(positions)  # (n, f, 2)
    own_laplacian = jax.vmap(lambda r: jnp.trace(jax.jacfwd(jax.jacfwd(one))(r), axis1=-2, axis2=-1))(positions)
    eye = jnp.eye(n, dtype=value.dtype)
    jacobian = jnp.einsum("pi,ifa->paif", eye, own_jacobian).reshape(2 * n, n, -1)
    dtype = model.trunk.embedding.spin.dtype
    return Jet(value.astype(dtype), jacobian.astype(dtype), own_laplacian.astype(dtype))


def _attention(attention: GroupedQueryAttention, x: Jet) -> Jet:
    n = x.value.shape[0]
    d, kv, groups = attention.head_dim, attention.kv_heads, attention.heads // attention.kv_heads

    def project(layer, *shape):
        return linear(x, lambda y: (y @ layer.weight.T).reshape(*y.shape[:-1], *shape))

    q = project(attention.query, kv, groups, d)
    k = project(attention.key, kv, d)
    v = project(attention.value, kv, d)
    scores = product(q, k, lambda a, b: jnp.einsum("nkgd,mkd->kgnm", a, b) / math.sqrt(d))
    weights = softmax(scores, axis=-1)
    attended = product(weights, v, lambda a, b: jnp.einsum("kgnm,mkd->nkgd", a, b).reshape(n, kv * groups * d))
    return linear(attended, lambda y: y @ attention.output.weight.T)


def _mixture(moe: MixtureOfExperts, x: Jet, c: Float[Array, " n_conditions"]) -> Jet:
    index, weights = moe.routing(c)
    w_in, b_in, w_out, b_out = moe.w_in, moe.b_in, moe.w_out, moe.b_out
    if index is not None:
        w_in, b_in, w_out, b_out = (jnp.take(a, index, axis=0) for a in (w_in, b_in, w_out, b_out))
    w_in, b_in, w_out, b_out = moe.stacked(weights.astype(x.value.dtype), w_in, b_in, w_out, b_out)
    hidden = elementwise(jax.nn.gelu, linear(x, lambda y: y @ w_in, b_in))
    return linear(hidden, lambda y: y @ w_out, b_out)


def _block(block: TransformerBlock, h: Jet, c: Float[Array, " n_conditions"]) -> Jet:
    gamma, beta = block.attention_film.modulation(c)
    x = scale(layer_norm(h, block.attention_norm.eps), gamma, beta)
    h = h + _attention(block.attention, x)
    gamma, beta = block.moe_film.modulation(c)
    x = scale(layer_norm(h, block.moe_norm.eps), gamma, beta)
    return h + _mixture(block.moe, x, c)


def trunk_jet(model: Wavefunction, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Jet:
    """Jet of ``model.hidden(positions, conditions)``: (n, width) features and their derivatives."""
    positions = jnp.asarray(positions, dtype=jnp.float64)
    trunk = model.trunk
    features = feature_jet(model, positions)
    embedding = trunk.embedding
    shift = embedding.spin[np.asarray(model.spins)]
    if embedding.linear.bias is not None:
        shift = shift + embedding.linear.bias
    h = linear(features, lambda y: y @ embedding.linear.weight.T, shift)
    c = model.normalise(conditions).astype(h.value.dtype)
    for block in trunk.blocks:
        h = _block(block, h, c)
    return layer_norm(h, trunk.final_norm.eps)
