"""benchmarks/roofline.py: flop counts and floors (no timing here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clitools import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "roofline.py"


def _load():
    return load_script(SCRIPT)


def test_xla_counts_a_matrix_product_as_2mkn():
    import jax.numpy as jnp

    a, b = jnp.ones((8, 5)), jnp.ones((5, 3))
    assert _load().flops_of(jnp.matmul, a, b) == pytest.approx(2 * 8 * 5 * 3)


def test_floors_are_flops_over_the_peak_and_the_step_is_their_sum():
    system = {
        "step_walkers": 4,
        "flops_per_walker": {"log_psi": 1e6, "trunk": 5e5, "trunk_jet": 4e7, "log_psi_laplacian": 5e7, "log_derivatives": 2e6},
        "flops_per_step": {"spring_kernel": 3e9, "sweeps": 4e7, "local_energies": 2e8, "log_derivatives": 8e6},
    }
    peak = 1e9
    measured = {
        "step_walkers": 4,
        "per_walker_s": {"log_psi": 2e-3, "trunk": 1e-3, "trunk_jet": 0.08, "log_psi_laplacian": 0.1, "log_derivatives": 4e-3},
        "per_step_s": {"spring_kernel": 6.0, "step": 8.0},
        "step_parts_s": {"sweeps": 0.08, "local_energies": 0.4, "log_derivatives": 0.016},
    }
    out = _load().floors(system, peak, measured)
    assert out["per_walker_s"]["log_psi_laplacian"] == pytest.approx(0.05)
    assert out["per_step_s"]["step"] == pytest.approx((3e9 + 4e7 + 2e8 + 8e6) / peak)
    assert all(v == pytest.approx(2.0) for v in out["measured_over_floor"].values())
    assert out["measured_step_over_floor"]["step"] == pytest.approx(8.0 / 3.248)
    assert "measured_over_floor" not in _load().floors(system, peak, {**measured, "step_walkers": 8})
