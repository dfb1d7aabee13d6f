"""Feature-wise linear modulation (FiLM) by the Hamiltonian parameters.

``FiLM(h; c) = γ(c) ⊙ h + β(c)`` with (γ - 1, β) = MLP(c) for the normalised
condition vector c (dimensionless, O(1) over the training range). The last
layer of the MLP is zero-initialised, so at initialisation γ = 1, β = 0 and the
network does not yet depend on c through FiLM.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from qernel_cli.model.jet import Jet, scale
from qernel_cli.model.linear import Linear, split


class ConditionMLP(eqx.Module):
    """A small tanh MLP of the (normalised) conditions: n_conditions → hidden → hidden → out."""

    layers: tuple[Linear, ...]

    def __init__(
        self, n_conditions: int, hidden: int, out: int, *, zero_last: bool, dtype=jnp.float64, key: PRNGKeyArray
    ):
        k1, k2, k3 = split(key, 3)
        self.layers = (
            Linear(n_conditions, hidden, dtype=dtype, key=k1),
            Linear(hidden, hidden, dtype=dtype, key=k2),
            Linear(hidden, out, zero=zero_last, dtype=dtype, key=k3),
        )

    def __call__(self, c: Float[Array, " n_conditions"]) -> Float[Array, " out"]:
        x = c.astype(self.layers[0].weight.dtype)
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


class FiLM(eqx.Module):
    """γ(c) ⊙ h + β(c) over the feature axis of per-electron tokens."""

    mlp: ConditionMLP

    def __init__(self, n_conditions: int, width: int, hidden: int, *, dtype=jnp.float64, key: PRNGKeyArray):
        self.mlp = ConditionMLP(n_conditions, hidden, 2 * width, zero_last=True, dtype=dtype, key=key)

    def modulation(self, c: Float[Array, " n_conditions"]) -> tuple[Float[Array, " width"], Float[Array, " width"]]:
        """(γ, β) for conditions c; γ = 1, β = 0 at initialisation."""
        delta_gamma, beta = jnp.split(self.mlp(c), 2)
        return 1.0 + delta_gamma, beta

    def __call__(self, h: Float[Array, "n width"], c: Float[Array, " n_conditions"]) -> Float[Array, "n width"]:
        gamma, beta = self.modulation(c)
        return gamma * h + beta

    def jet(self, h: Jet, c: Float[Array, " n_conditions"]) -> Jet:
        """The same map on a jet: (γ, β) depend on c alone, so they are constants of the jet."""
        gamma, beta = self.modulation(c)
        return scale(h, gamma, beta)
