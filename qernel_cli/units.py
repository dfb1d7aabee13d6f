"""Physical ↔ moiré units.

Internally QERNEL measures lengths in the moiré period a_M and energies in
E_M = ħ²/(m* a_M²), so the kinetic operator is -½∇², the moiré depth is
V/E_M and the Coulomb interaction is U/r with U = a_M / a_B*, where the
effective Bohr radius is a_B* = ε (m_e/m*) a_0.
"""

from __future__ import annotations

import dataclasses
import math

HBAR2_OVER_ME_MEV_NM2 = 76.1996
"""ħ²/m_e in meV·nm²."""

BOHR_RADIUS_NM = 0.0529177
"""Bohr radius a_0 in nm."""

HARTREE_MEV = 27211.386
"""Hartree energy in meV."""


@dataclasses.dataclass(frozen=True)
class Material:
    """A moiré heterobilayer in physical units.

    Attributes:
        a_M_nm: moiré period (nm).
        m_star: effective mass (units of the bare electron mass m_e).
        epsilon: relative dielectric constant.
        phi_deg: phase φ of the moiré potential (degrees).
    """

    a_M_nm: float = 8.031
    m_star: float = 0.35
    epsilon: float = 5.0
    phi_deg: float = 45.0

    def __post_init__(self):
        for name in ("a_M_nm", "m_star", "epsilon"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"material.{name} must be a positive finite number, got {value!r}")
        if not math.isfinite(self.phi_deg):
            raise ValueError(f"material.phi_deg must be finite, got {self.phi_deg!r}")

    @property
    def energy_unit_meV(self) -> float:
        """E_M = ħ²/(m* a_M²) in meV."""
        return HBAR2_OVER_ME_MEV_NM2 / (self.m_star * self.a_M_nm**2)

    @property
    def bohr_radius_nm(self) -> float:
        """Effective Bohr radius a_B* = ε (m_e/m*) a_0 in nm."""
        return self.epsilon / self.m_star * BOHR_RADIUS_NM

    @property
    def hartree_star_meV(self) -> float:
        """Effective Hartree e²/(4πε₀ε a_B*) = ħ²/(m* a_B*²) in meV."""
        return HBAR2_OVER_ME_MEV_NM2 / (self.m_star * self.bohr_radius_nm**2)

    @property
    def coulomb_strength(self) -> float:
        """U = a_M / a_B*: Coulomb strength in moiré units (dimensionless)."""
        return self.a_M_nm / self.bohr_radius_nm

    def depth_to_moire(self, V_meV: float) -> float:
        """Moiré depth V (meV) → V/E_M (dimensionless)."""
        return V_meV / self.energy_unit_meV

    def depth_to_meV(self, v: float) -> float:
        """Moiré depth V/E_M (dimensionless) → V (meV)."""
        return v * self.energy_unit_meV

    def energy_to_meV(self, e):
        """Energy in moiré units E_M → meV (works on arrays)."""
        return e * self.energy_unit_meV

    def r_s(self, filling: float) -> float:
        """Wigner-Seitz radius r_s (units of a_B*) at filling ν electrons per moiré cell.

        π r_s² a_B*² is the area per electron, (√3/2) a_M² / ν.
        """
        if not filling > 0:
            raise ValueError(f"filling must be positive, got {filling!r}")
        area_per_electron = math.sqrt(3.0) / 2.0 / filling  # in a_M²
        return math.sqrt(area_per_electron / math.pi) * self.coulomb_strength
