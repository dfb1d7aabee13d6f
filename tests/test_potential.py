"""The moiré potential Δ(r) = -2V Σ_j cos(g_j·r + φ)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

from qernel_cli.hamiltonian import moire_potential
from qernel_cli.lattice import MOIRE_VECTORS


def _grid(n=301):
    s = np.linspace(0, 1, n, endpoint=False)
    s1, s2 = np.meshgrid(s, s)
    return np.stack([s1.ravel(), s2.ravel()], -1) @ MOIRE_VECTORS


def test_extrema_at_phi_45_match_design():
    V = 1.0
    f = lambda r: float(moire_potential(jnp.asarray(r), 1.0, V, 45.0))
    values = np.asarray(moire_potential(jnp.asarray(_grid()), 1.0, V, 45.0))
    # Global minimum and maximum, refined from the best grid points.
    gmin = minimize(f, _grid()[np.argmin(values)], method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-14)).fun
    gmax = -minimize(lambda r: -f(r), _grid()[np.argmax(values)], method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-14)).fun
    assert gmin == pytest.approx(-4.243, abs=5e-4)
    assert gmax == pytest.approx(5.796, abs=5e-4)
    # The second (local) minimum sits at one of the two other high-symmetry stacking sites.
    corners = np.array([1.0, 1.0]) @ MOIRE_VECTORS / 3.0, 2 * np.array([1.0, 1.0]) @ MOIRE_VECTORS / 3.0
    at_corners = sorted(f(c) for c in corners)
    assert at_corners[0] == pytest.approx(-1.553, abs=5e-4)
    assert at_corners[1] == pytest.approx(gmax, abs=1e-9)
    hess = jax.hessian(lambda r: moire_potential(r, 1.0, V, 45.0))(jnp.asarray(min(corners, key=f)))
    assert np.all(np.linalg.eigvalsh(np.asarray(hess)) > 0)  # a true local minimum


def test_periodicity_symmetry_and_scaling():
    rng = np.random.default_rng(1)
    r = jnp.asarray(rng.uniform(-3, 3, size=(50, 2)))
    base = moire_potential(r, 1.0, 2.5, 30.0)
    for a in MOIRE_VECTORS:
        assert np.allclose(moire_potential(r + a, 1.0, 2.5, 30.0), base, atol=1e-12)
    c, s = np.cos(2 * np.pi / 3), np.sin(2 * np.pi / 3)
    rot = jnp.asarray(np.array([[c, -s], [s, c]]))
    assert np.allclose(moire_potential(r @ rot.T, 1.0, 2.5, 30.0), base, atol=1e-12)  # C3 symmetry
    # Physical units: lengths in nm with a_M in nm give the same values.
    assert np.allclose(moire_potential(8.031 * r, 8.031, 2.5, 30.0), base, atol=1e-12)
    assert np.allclose(moire_potential(r, 1.0, 5.0, 30.0), 2 * base, atol=1e-12)
    # The potential averages to zero over a moiré cell.
    assert abs(np.mean(np.asarray(moire_potential(jnp.asarray(_grid(60)), 1.0, 1.0, 45.0)))) < 1e-12
