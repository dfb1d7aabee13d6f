"""Dense layer and host-side initialisation.

Weights are drawn with NumPy from a generator seeded by the JAX key's data, so
building a model costs no XLA compilations (eager ``jax.random`` calls compile
one small kernel per distinct shape: seconds for a model of this size). The
result is still a deterministic function of the key.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


def numpy_rng(key: PRNGKeyArray) -> np.random.Generator:
    """A NumPy generator determined by a JAX key (typed or raw uint32)."""
    if jnp.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def split(key: PRNGKeyArray, n: int) -> list[PRNGKeyArray]:
    """n independent child keys (typed JAX keys), derived on the host."""
    seeds = numpy_rng(key).integers(0, 2**32, size=(n, 2), dtype=np.uint64).astype(np.uint32)
    return [jax.random.wrap_key_data(jnp.asarray(s)) for s in seeds]


def zeros(shape: tuple[int, ...], dtype) -> Array:
    """Zero array, made on the host (no compilation)."""
    return jnp.asarray(np.zeros(shape), dtype=dtype)


def normal(key: PRNGKeyArray, shape: tuple[int, ...], std: float, dtype) -> Array:
    """Gaussian array N(0, std²) of the given shape and dtype."""
    return jnp.asarray(numpy_rng(key).standard_normal(shape) * std, dtype=dtype)


class Linear(eqx.Module):
    """y = W x + b on the last axis; LeCun-normal weights (std 1/√in_features), zero bias."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"] | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        zero: bool = False,
        dtype=jnp.float64,
        key: PRNGKeyArray,
    ):
        """``zero=True`` initialises weight (and bias) to zero."""
        std = 0.0 if zero else 1.0 / math.sqrt(in_features)
        self.weight = normal(key, (out_features, in_features), std, dtype)
        self.bias = zeros((out_features,), dtype) if use_bias else None

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    def __call__(self, x: Float[Array, "... in"]) -> Float[Array, "... out"]:
        y = x @ self.weight.T
        return y if self.bias is None else y + self.bias
