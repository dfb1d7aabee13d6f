"""Model size and cost: trainable parameter count and XLA-estimated FLOPs per forward pass."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def _arrays(model: Any) -> list:
    return [leaf for leaf in jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))]


def parameter_count(model: Any) -> int:
    """Number of real trainable scalars (a complex leaf counts twice)."""
    return int(sum(leaf.size * (2 if jnp.iscomplexobj(leaf) else 1) for leaf in _arrays(model)))


def parameter_breakdown(model: Any) -> dict[str, int]:
    """Parameter count per top-level field of a module (e.g. trunk, orbitals, jastrow)."""
    out = {}
    for name in getattr(model, "__dataclass_fields__", {}):
        value = getattr(model, name)
        if value is not None:
            count = parameter_count(value)
            if count:
                out[name] = count
    return out


def compiled_cost(fn, *args) -> dict[str, float]:
    """XLA cost analysis (flops, bytes accessed, ...) of ``jax.jit(fn)(*args)`` for its compiled form.

    jax 0.10 returns one dict; older versions a list with one dict per
    computation, which are summed here.
    """
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if analysis is None:
        return {}
    if isinstance(analysis, dict):
        analysis = [analysis]
    total: dict[str, float] = {}
    for entry in analysis:
        for key, value in (entry or {}).items():
            if isinstance(value, (int, float)):
                total[key] = total.get(key, 0.0) + float(value)
    return total


def forward_flops(model: Any, n_electrons: int | None = None, n_conditions: int | None = None) -> float:
    """FLOPs of one forward pass log ψ(r; c) for one configuration (XLA's estimate).

    ``n_electrons`` / ``n_conditions`` default to the model's own sizes (the
    orbital head fixes N, so another N is an error).
    """
    n = int(n_electrons if n_electrons is not None else model.n_electrons)
    n_c = int(n_conditions if n_conditions is not None else model.n_conditions)
    if n != model.n_electrons or n_c != model.n_conditions:
        raise ValueError(
            f"model is built for N={model.n_electrons}, {model.n_conditions} conditions; got N={n}, {n_c} conditions"
        )
    params, static = eqx.partition(model, eqx.is_array)
    rng = np.random.default_rng(0)
    positions = jnp.asarray(rng.uniform(0.0, 1.0, (n, 2)))
    conditions = jnp.zeros((n_c,))

    def forward(p, x, c):
        return eqx.combine(p, static)(x, c)

    return float(compiled_cost(forward, params, positions, conditions).get("flops", float("nan")))
