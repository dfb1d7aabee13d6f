"""Atomic checkpoints: round trip, corruption and mismatch are clear errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.stores import checkpoint


def _tree():
    return {"params": (jnp.arange(6.0).reshape(2, 3), jnp.array(1.5 + 2j)), "step": np.int64(7), "key": jnp.array([1, 2], dtype=jnp.uint32)}


def test_round_trip(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, _tree(), {"step": 7})
    tree, header = checkpoint.restore(path, _tree())
    assert header == {"step": 7}
    assert np.array_equal(tree["params"][0], _tree()["params"][0]) and complex(tree["params"][1]) == 1.5 + 2j
    assert tree["key"].dtype == jnp.uint32
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_overwrite_keeps_previous_until_replaced(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, _tree(), {"step": 1})
    checkpoint.save(path, _tree(), {"step": 2})
    assert checkpoint.read_header(path) == {"step": 2}


def test_corrupt_truncated_missing_and_mismatched(tmp_path):
    path = tmp_path / "ckpt.npz"
    checkpoint.save(path, _tree(), {"step": 1})
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.restore(path, _tree())
    with pytest.raises(checkpoint.CheckpointError, match="not found"):
        checkpoint.restore(tmp_path / "nope.npz", _tree())
    path.write_bytes(good)
    other = _tree()
    other["params"] = (jnp.zeros((3, 3)), jnp.array(0j))
    with pytest.raises(checkpoint.CheckpointError, match="shape"):
        checkpoint.restore(path, other)
    with pytest.raises(checkpoint.CheckpointError, match="different parameter structure"):
        checkpoint.restore(path, {"x": jnp.zeros(1)})
