"""Depth-following envelopes are smooth in V: no slope jump of the non-interacting family's energies at the anchors.

The model's Bloch envelopes start as the exact non-interacting orbitals at the
anchor depths (0, 15 and 30 meV in every preset) and are interpolated in V in
between. Expectation values of their Slater determinant are exact in the
plane-wave basis: ⟨A⟩ = Σ_k Tr(S_k⁻¹ A_k) with S_k and A_k the overlap and the
one-body operator A among the orbitals of Bloch momentum k. A kink of the
interpolation would be a jump of d⟨A⟩/dV at an anchor, where the transition
finder looks for the largest change of slope. The kinetic energy shows it at
first order (the total energy is stationary at the anchors, where the
orbitals are exact, so its kink is of second order there). The natural cubic
spline has none; the piecewise-linear interpolation of earlier runs has one,
which the same test detects.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

from qernel_cli.config import resolve
from qernel_cli.hamiltonian.bands import bloch_hamiltonian, lowest_orbitals
from qernel_cli.model.interpolation import natural_spline_weights
from qernel_cli.vmc.assembly import build

SMALL = ["hamiltonian.coulomb=false", "model.layers=1", "model.width=16", "model.heads=2", "model.kv_heads=1",
         "model.mlp_width=16", "model.film_hidden=8", "model.determinants=1", "model.envelope_momenta=fixed", "pretrain.target=bloch"]


def _energy_curve(interpolation: str, kinetic_only: bool = False):
    """(E(V) in meV per electron of the envelope determinant under h(V) (or its kinetic part), exact ground-state E0(V),
    anchors in meV)."""
    run = build(resolve("moire-tiny", [*SMALL, f"model.envelope_interpolation={interpolation}"]))
    model = eqx.combine(run.params, run.static)
    envelope = model.orbitals.blocks[0].envelope
    unit, n = run.energy_unit_meV, run.config.n_electrons
    phi = run.config.material.phi_deg
    cell = run.config.supercell_geometry

    def energy(v_meV: float) -> float:
        c0 = model.normalise(jnp.asarray([v_meV / unit]))[0]
        a = np.asarray(envelope.mixed_coefficients(c0))[0]  # (n_orb, n_G), determinant 0
        total = 0.0
        for k in np.unique(np.round(envelope.k, 10), axis=0):
            rows = np.all(np.isclose(envelope.k, k, atol=1e-8), axis=-1)
            block = a[rows]
            overlap = block.conj() @ block.T
            h = block.conj() @ bloch_hamiltonian(k, 0.0 if kinetic_only else v_meV / unit, phi, envelope.G) @ block.T
            total += np.trace(np.linalg.solve(overlap, h)).real
        return total * unit / n

    def exact(v_meV: float) -> float:
        return float(np.sum(lowest_orbitals(cell, n, v_meV / unit, phi, n_shells=run.config.model.envelope_shells).energies)) * unit / n

    lo, hi = run.config.hamiltonian.V_min_meV, run.config.hamiltonian.V_max_meV
    return energy, exact, np.linspace(lo, hi, run.config.model.envelope_anchors)


def _slope_jump(energy, v: float, h: float = 0.01) -> float:
    return abs((energy(v + h) - energy(v)) - (energy(v) - energy(v - h))) / h


def test_no_slope_jump_at_the_anchors():
    energy, exact, anchors = _energy_curve("smooth")
    linear, _, _ = _energy_curve("linear")
    interior = anchors[1:-1]
    assert len(interior) >= 1
    for v in anchors:  # exact at the anchors, with either interpolation
        assert energy(v) == pytest.approx(exact(v), abs=1e-9)
        assert linear(v) == pytest.approx(exact(v), abs=1e-9)
    kinetic, _, _ = _energy_curve("smooth", kinetic_only=True)
    kinetic_linear, _, _ = _energy_curve("linear", kinetic_only=True)
    for v in interior:
        kink = _slope_jump(kinetic_linear, v)
        assert kink > 0.05  # meV/meV: the piecewise-linear kinetic energy has a kink here
        assert _slope_jump(kinetic, v) < 1e-2 * kink
    for v in np.linspace(anchors[0], anchors[-1], 13):  # variational between the anchors
        assert energy(v) >= exact(v) - 1e-9


def test_spline_weights():
    x = np.array([-1.0, -0.2, 0.5, 1.0])
    for a, node in enumerate(x):  # cardinal at the nodes
        np.testing.assert_allclose(np.asarray(natural_spline_weights(x, node)), np.eye(4)[a], atol=1e-12)
    for c in np.linspace(-1, 1, 9):  # reproduces linear functions (so the weights sum to 1)
        w = np.asarray(natural_spline_weights(x, c))
        assert w.sum() == pytest.approx(1.0) and w @ (3 * x + 2) == pytest.approx(3 * c + 2)
