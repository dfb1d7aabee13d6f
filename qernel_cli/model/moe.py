"""Mixture-of-experts feed-forward layer, routed on the Hamiltonian parameters c.

Gate choice. The gate is a softmax over experts of a small MLP of the
normalised conditions c only; it never sees the electron coordinates.

* Smoothness in r. A token-routed top-k gate is piecewise constant in the
  coordinates: ψ jumps where the routing changes, ∇²ψ has delta functions that
  the forward Laplacian misses, and the VMC kinetic energy is biased. A gate
  that depends on c only is constant in r, so ψ is exactly as smooth as the
  experts (gelu MLPs), whatever the gate does.
* Sparsity without that price. Because the gate is constant in r, a top-k
  selection (``top_k``) is still smooth in r: the k selected experts' weights are
  gathered once per configuration (once per c when walkers sharing a c are
  vmapped with ``in_axes=None`` for c), so the FLOPs are those of k experts,
  not all of them. A dense softmax over token-dependent gates would always pay
  for every expert.
* Physics. Each Hamiltonian gets its own expert mixture: experts can specialise
  to regions of the phase diagram (liquid at shallow V, crystal at deep V) while
  the trunk is shared. The dense default (``top_k=None``) keeps ψ smooth in c as
  well, which matters when the family is queried between training depths;
  top-k makes ψ piecewise in c (not in r).

``load_balance`` turns the gate probabilities of a batch of c into logging
statistics (mean probability per expert, its coefficient of variation, entropies).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from qernel_cli.model.attention import stable_softmax
from qernel_cli.model.film import ConditionMLP
from qernel_cli.model.jet import Jet, elementwise, linear
from qernel_cli.model.linear import normal, split, zeros


class MixtureOfExperts(eqx.Module):
    """Σ_e g_e(c) · Expert_e(x), each expert a gelu MLP width → hidden → width applied per token."""

    router: ConditionMLP
    w_in: Float[Array, "experts width hidden"]
    b_in: Float[Array, "experts hidden"]
    w_out: Float[Array, "experts hidden width"]
    b_out: Float[Array, "experts width"]
    top_k: int | None = eqx.field(static=True)

    def __init__(
        self,
        n_conditions: int,
        width: int,
        hidden: int,
        experts: int,
        *,
        router_hidden: int,
        top_k: int | None = None,
        dtype=jnp.float64,
        key: PRNGKeyArray,
    ):
        if experts < 1:
            raise ValueError(f"experts must be a positive integer, got {experts!r}")
        if top_k is not None and not 1 <= top_k <= experts:
            raise ValueError(f"top_k must lie in 1..experts={experts}, got {top_k!r}")
        kr, ki, ko = split(key, 3)
        self.router = ConditionMLP(n_conditions, router_hidden, experts, zero_last=False, dtype=dtype, key=kr)
        self.w_in = normal(ki, (experts, width, hidden), 1.0 / math.sqrt(width), dtype)
        self.b_in = zeros((experts, hidden), dtype)
        self.w_out = normal(ko, (experts, hidden, width), 1.0 / math.sqrt(hidden), dtype)
        self.b_out = zeros((experts, width), dtype)
        self.top_k = None if top_k is None or top_k == experts else int(top_k)

    @property
    def experts(self) -> int:
        return self.w_in.shape[0]

    def gate(self, c: Float[Array, " n_conditions"]) -> Float[Array, " experts"]:
        """Dense gate probabilities g(c) (sum to one); independent of the coordinates."""
        return stable_softmax(self.router(c))

    def routing(self, c: Float[Array, " n_conditions"]) -> tuple[Int[Array, " k"] | None, Float[Array, " k"]]:
        """Selected experts (None = all) and their weights: softmax over the kept logits."""
        logits = self.router(c)
        if self.top_k is None:
            return None, stable_softmax(logits)
        kept, index = jax.lax.top_k(logits, self.top_k)
        return index, stable_softmax(kept)

    def __call__(self, x: Float[Array, "n width"], c: Float[Array, " n_conditions"]) -> Float[Array, "n width"]:
        index, weights = self.routing(c)
        w_in, b_in, w_out, b_out = self.w_in, self.b_in, self.w_out, self.b_out
        if index is not None:
            w_in, b_in, w_out, b_out = (jnp.take(a, index, axis=0) for a in (w_in, b_in, w_out, b_out))
        w_in, b_in, w_out, b_out = self.stacked(weights.astype(x.dtype), w_in, b_in, w_out, b_out)
        return jax.nn.gelu(x @ w_in + b_in) @ w_out + b_out

    def jet(self, x: Jet, c: Float[Array, " n_conditions"]) -> Jet:
        """The same map on a jet; the gate depends on c alone, so the stacked weights are constants of the jet."""
        index, weights = self.routing(c)
        w_in, b_in, w_out, b_out = self.w_in, self.b_in, self.w_out, self.b_out
        if index is not None:
            w_in, b_in, w_out, b_out = (jnp.take(a, index, axis=0) for a in (w_in, b_in, w_out, b_out))
        w_in, b_in, w_out, b_out = self.stacked(weights.astype(x.value.dtype), w_in, b_in, w_out, b_out)
        hidden = elementwise(jax.nn.gelu, linear(x, lambda y: y @ w_in, b_in))
        return linear(hidden, lambda y: y @ w_out, b_out)

    @staticmethod
    def stacked(
        weights: Float[Array, " k"],
        w_in: Float[Array, "k width hidden"],
        b_in: Float[Array, "k hidden"],
        w_out: Float[Array, "k hidden width"],
        b_out: Float[Array, "k width"],
    ) -> tuple[Float[Array, "width kh"], Float[Array, " kh"], Float[Array, "kh width"], Float[Array, " width"]]:
        """The k experts as one wide MLP: hidden units side by side, the gate weights folded into the output layer.

        Σ_e g_e (gelu(x W_e + b_e) V_e + c_e) = gelu(x [W_1 … W_k] + [b_1 … b_k]) [g_1 V_1; …; g_k V_k] + Σ_e g_e c_e,
        so every product is a plain matrix product over the tokens (no expert axis to transpose).
        """
        k, width, hidden = w_in.shape
        w_in = jnp.moveaxis(w_in, 0, 1).reshape(width, k * hidden)
        w_out = (weights[:, None, None] * w_out).reshape(k * hidden, width)
        return w_in, b_in.reshape(k * hidden), w_out, weights @ b_out


def load_balance(probabilities: Float[Array, "batch experts"]) -> dict[str, Array]:
    """Load-balancing statistics of dense gate probabilities over a batch of conditions.

    Returns (all dimensionless):
        importance: mean gate probability per expert, shape (experts,).
        cv: coefficient of variation of ``importance`` (0 = perfectly balanced).
        balance_entropy: entropy of ``importance`` / log(experts) (1 = balanced).
        gate_entropy: mean per-c entropy of the gate / log(experts)
            (0 = each c uses one expert, 1 = every c uses all experts equally).
    """
    probabilities = jnp.asarray(probabilities)
    experts = probabilities.shape[-1]
    importance = jnp.mean(probabilities, axis=0)
    cv = jnp.std(importance) / jnp.mean(importance)
    norm = math.log(experts) if experts > 1 else 1.0

    def entropy(p):
        return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)

    return {
        "importance": importance,
        "cv": cv,
        "balance_entropy": entropy(importance) / norm,
        "gate_entropy": jnp.mean(entropy(probabilities)) / norm,
    }
