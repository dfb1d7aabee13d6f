"""Pre-norm transformer blocks over the electrons and the trunk that stacks them.

Block: h += Attn(FiLM_a(LN(h); c)); h += MoE(FiLM_m(LN(h); c); c).
The layer norms carry no affine parameters: FiLM supplies (γ, β), as a
function of c, right after each of them. Every operation acts per token or is
attention, so the trunk is permutation equivariant in the electrons.
Features are dimensionless; c is the normalised condition vector.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from qernel_cli.model.attention import GroupedQueryAttention
from qernel_cli.model.features import TokenEmbedding
from qernel_cli.model.film import FiLM
from qernel_cli.model.jet import Jet, layer_norm
from qernel_cli.model.linear import split
from qernel_cli.model.moe import MixtureOfExperts


def _layer_norm(norm: eqx.nn.LayerNorm, h: Float[Array, "n width"]) -> Float[Array, "n width"]:
    return jax.vmap(norm)(h)


class TransformerBlock(eqx.Module):
    """One pre-norm block: FiLM-modulated grouped-query attention, then a FiLM-modulated MoE."""

    attention_norm: eqx.nn.LayerNorm
    attention_film: FiLM
    attention: GroupedQueryAttention
    moe_norm: eqx.nn.LayerNorm
    moe_film: FiLM
    moe: MixtureOfExperts

    def __init__(
        self,
        *,
        n_conditions: int,
        width: int,
        heads: int,
        kv_heads: int,
        mlp_width: int,
        experts: int,
        film_hidden: int,
        top_k: int | None = None,
        dtype=jnp.float64,
        key: PRNGKeyArray,
    ):
        k1, k2, k3, k4 = split(key, 4)
        self.attention_norm = eqx.nn.LayerNorm(width, use_weight=False, use_bias=False, dtype=dtype)
        self.attention_film = FiLM(n_conditions, width, film_hidden, dtype=dtype, key=k1)
        self.attention = GroupedQueryAttention(width, heads, kv_heads, dtype=dtype, key=k2)
        self.moe_norm = eqx.nn.LayerNorm(width, use_weight=False, use_bias=False, dtype=dtype)
        self.moe_film = FiLM(n_conditions, width, film_hidden, dtype=dtype, key=k3)
        self.moe = MixtureOfExperts(
            n_conditions, width, mlp_width, experts, router_hidden=film_hidden, top_k=top_k, dtype=dtype, key=k4
        )

    def __call__(self, h: Float[Array, "n width"], c: Float[Array, " n_conditions"]) -> Float[Array, "n width"]:
        h = h + self.attention(self.attention_film(_layer_norm(self.attention_norm, h), c))
        h = h + self.moe(self.moe_film(_layer_norm(self.moe_norm, h), c), c)
        return h

    def jet(self, h: Jet, c: Float[Array, " n_conditions"]) -> Jet:
        """The same block on a jet (each part by its own ``jet``; layer norms by ``model.jet.layer_norm``)."""
        h = h + self.attention.jet(self.attention_film.jet(layer_norm(h, self.attention_norm.eps), c))
        return h + self.moe.jet(self.moe_film.jet(layer_norm(h, self.moe_norm.eps), c), c)


class Trunk(eqx.Module):
    """Token embedding → ``layers`` transformer blocks → final layer norm; (n, features) → (n, width)."""

    embedding: TokenEmbedding
    blocks: tuple[TransformerBlock, ...]
    final_norm: eqx.nn.LayerNorm

    def __init__(
        self,
        *,
        n_features: int,
        n_conditions: int,
        layers: int,
        width: int,
        heads: int,
        kv_heads: int,
        mlp_width: int,
        experts: int,
        film_hidden: int,
        top_k: int | None = None,
        dtype=jnp.float64,
        key: PRNGKeyArray,
    ):
        k_embed, *k_blocks = split(key, layers + 1)
        self.embedding = TokenEmbedding(n_features, width, dtype=dtype, key=k_embed)
        self.blocks = tuple(
            TransformerBlock(
                n_conditions=n_conditions,
                width=width,
                heads=heads,
                kv_heads=kv_heads,
                mlp_width=mlp_width,
                experts=experts,
                film_hidden=film_hidden,
                top_k=top_k,
                dtype=dtype,
                key=k,
            )
            for k in k_blocks
        )
        self.final_norm = eqx.nn.LayerNorm(width, use_weight=False, use_bias=False, dtype=dtype)

    @property
    def width(self) -> int:
        return self.embedding.spin.shape[-1]

    def __call__(
        self,
        features: Float[Array, "n f"],
        spins: tuple[int, ...] | np.ndarray,
        c: Float[Array, " n_conditions"],
    ) -> Float[Array, "n width"]:
        """Per-electron features (dimensionless) for spins (0 = up, 1 = down) and normalised conditions c."""
        h = self.embedding(features, np.asarray(spins, dtype=np.int32))
        c = c.astype(h.dtype)
        for block in self.blocks:
            h = block(h, c)
        return _layer_norm(self.final_norm, h)

    def jet(self, features: Jet, spins: tuple[int, ...] | np.ndarray, c: Float[Array, " n_conditions"]) -> Jet:
        """The trunk's jet over the 2n coordinates from its input features' jet: (n, width) and derivatives, in the trunk's dtype.

        From the first attention on every token depends on every electron; c enters
        through FiLM and the MoE gate only, so it is a constant of the jet.
        """
        h = self.embedding.jet(features, np.asarray(spins, dtype=np.int32))
        c = c.astype(h.value.dtype)
        for block in self.blocks:
            h = block.jet(h, c)
        return layer_norm(h, self.final_norm.eps)

    def gate_probabilities(self, c: Float[Array, " n_conditions"]) -> Float[Array, "layers experts"]:
        """Dense MoE gate probabilities of every block for normalised conditions c."""
        c = c.astype(self.embedding.spin.dtype)
        return jnp.stack([block.moe.gate(c) for block in self.blocks])
