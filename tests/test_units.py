"""Physical ↔ moiré units against the numbers in DESIGN.md section 1."""

import math

import pytest

from qernel_cli.units import HBAR2_OVER_ME_MEV_NM2, Material


def test_default_material_reproduces_design_numbers():
    m = Material()  # WSe2/WS2-like: m* = 0.35, ε = 5, a_M = 8.031 nm
    assert m.energy_unit_meV == pytest.approx(3.3756, abs=5e-5)
    assert m.depth_to_moire(15.0) == pytest.approx(4.4437, abs=5e-5)
    assert m.coulomb_strength == pytest.approx(10.6235, abs=5e-5)


def test_round_trip_and_scaling():
    m = Material(a_M_nm=5.0, m_star=0.5, epsilon=10.0)
    assert m.depth_to_meV(m.depth_to_moire(7.3)) == pytest.approx(7.3, rel=1e-14)
    # E_M ∝ 1/(m* a_M²); U ∝ a_M m*/ε.
    m2 = Material(a_M_nm=10.0, m_star=0.5, epsilon=10.0)
    assert m.energy_unit_meV / m2.energy_unit_meV == pytest.approx(4.0, rel=1e-14)
    assert m2.coulomb_strength / m.coulomb_strength == pytest.approx(2.0, rel=1e-14)
    # Effective Hartree = e²/(4πε₀ε a_B*) = ħ²/(m* a_B*²): U·E_M is the Coulomb scale e²/(ε a_M).
    assert m.coulomb_strength * m.energy_unit_meV == pytest.approx(m.hartree_star_meV / m.coulomb_strength, rel=1e-12)


def test_hartree_consistency_with_free_electron():
    # For m* = 1, ε = 1 the effective Hartree is the true Hartree, 27211.386 meV.
    m = Material(m_star=1.0, epsilon=1.0)
    assert m.hartree_star_meV == pytest.approx(HBAR2_OVER_ME_MEV_NM2 / 0.0529177**2, rel=1e-12)
    assert m.hartree_star_meV == pytest.approx(27211.386, rel=2e-5)


def test_r_s_definition():
    m = Material()
    nu = 2.0 / 3.0
    rs = m.r_s(nu)
    # π r_s² a_B*² = area per electron = (√3/2) a_M² / ν
    area_nm2 = math.sqrt(3) / 2 * m.a_M_nm**2 / nu
    assert math.pi * (rs * m.bohr_radius_nm) ** 2 == pytest.approx(area_nm2, rel=1e-13)


@pytest.mark.parametrize("field,value", [("a_M_nm", -1.0), ("m_star", 0.0), ("epsilon", float("nan")), ("phi_deg", float("inf"))])
def test_material_rejects_unphysical_values(field, value):
    with pytest.raises(ValueError, match=field):
        Material(**{field: value})
