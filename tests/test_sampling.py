"""Chains of ``qernel sample`` start from distinct trained configurations (their error bars count walkers as independent)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.vmc.mcmc import Walkers
from qernel_cli.vmc.sampling import TooManyWalkers, starting_walkers


def _pool(g: int = 3, w: int = 4, n: int = 2) -> Walkers:
    """g strata at depths 0, 1, …; configuration (s, k) has every coordinate equal to 10 s + k (so it is recognisable)."""
    label = 10.0 * np.arange(g)[:, None] + np.arange(w)[None, :]
    positions = np.broadcast_to(label[:, :, None, None], (g, w, n, 2)).copy()
    return Walkers(positions=jnp.asarray(positions), conditions=jnp.arange(g, dtype=float)[:, None],
                   log_abs=jnp.zeros((g, w)), width=jnp.asarray([1.0, 2.0, 3.0][:g]))


def _labels(start: Walkers) -> np.ndarray:
    return np.asarray(start.positions)[:, :, 0, 0]


def test_every_chain_at_a_depth_has_its_own_start_nearest_strata_first():
    start = starting_walkers(_pool(), np.array([0.9, 2.0]), walkers=10)
    labels = _labels(start)
    assert labels.shape == (2, 10)
    for row in labels:
        assert len(set(row.tolist())) == 10
    # 0.9: stratum 1 (distance 0.1), then 0 (0.9), then 2 (1.1)
    np.testing.assert_array_equal(labels[0], [10, 11, 12, 13, 0, 1, 2, 3, 20, 21])
    np.testing.assert_array_equal(labels[1], [20, 21, 22, 23, 10, 11, 12, 13, 0, 1])
    np.testing.assert_array_equal(np.asarray(start.width), [2.0, 3.0])  # the nearest stratum's move width
    np.testing.assert_array_equal(np.asarray(start.conditions)[:, 0], [0.9, 2.0])


def test_the_whole_pool_can_be_used_and_no_more():
    assert len(set(_labels(starting_walkers(_pool(), np.array([5.0]), walkers=12))[0].tolist())) == 12
    with pytest.raises(TooManyWalkers, match="13 walkers per depth, but the checkpoint holds 12 distinct configurations"):
        starting_walkers(_pool(), np.array([5.0]), walkers=13)
