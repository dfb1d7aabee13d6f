"""Transition-depth estimates on synthetic data with a known transition."""

import math

import numpy as np

from qernel_cli.observables.transition import energy_kink, estimate_transition, fit_order_step


def test_order_step_fit_recovers_a_known_transition_within_its_error():
    rng = np.random.default_rng(1)
    depths = np.linspace(0, 30, 16)
    hits = 0
    for trial in range(20):
        true_vc = 12.0 + trial * 0.3
        error = np.full(16, 0.02)
        order = 0.3 + 0.5 * 0.5 * (1 + np.tanh((depths - true_vc) / 1.5)) + error * rng.standard_normal(16)
        vc, vc_err, width, step, step_err = fit_order_step(depths, order, error)
        assert vc_err > 0 and abs(step - 0.5) < 5 * step_err
        hits += abs(vc - true_vc) <= 2 * vc_err
    assert hits >= 16  # ~95 % coverage of a 2σ interval, allowing for noise


def test_energy_kink_is_found_at_the_slope_change():
    depths = np.linspace(0, 30, 16)
    e_int = np.where(depths < 14, 10 - 0.05 * depths, 10 - 0.05 * 14 - 0.4 * (depths - 14))
    kink, err = energy_kink(depths, e_int, np.full(16, 1e-3))
    assert abs(kink - 14) <= 2.0 and 0 < err < 2.0


def test_no_transition_without_a_step_falls_back_to_the_energy():
    depths = np.linspace(0, 30, 16)
    rng = np.random.default_rng(0)
    order = 0.4 + 0.01 * rng.standard_normal(16)
    e_int = 5 - 0.1 * depths + np.where(depths > 20, -0.5 * (depths - 20), 0)
    t = estimate_transition(depths, order, np.full(16, 0.01), e_int, np.full(16, 1e-3))
    assert t.method.startswith("interaction") and abs(t.depth - 20) <= 2.0
    d = t.as_dict()
    assert d["depth"] == t.depth and all(v is None or isinstance(v, (float, str)) for v in d.values())
    assert math.isfinite(t.energy_kink_error)
