"""The wavefunction for a configuration: sizes, system, cusp strength, condition range and the initial envelopes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from jaxtyping import Float, PRNGKeyArray

from qernel_cli.config import Config
from qernel_cli.model.envelopes import BandStates, BlochOrbitals
from qernel_cli.model.wavefunction import Wavefunction
from qernel_cli.runtime import require_x64


def make_wavefunction(
    config: Config,
    key: PRNGKeyArray,
    *,
    conditions_range: tuple[Sequence[float], Sequence[float]] | None = None,
    top_k: int | None = None,
    envelope_shells: int | None = None,
    orbitals: BlochOrbitals | tuple[BlochOrbitals, BlochOrbitals] | None = None,
    envelope_depth: float | None = None,
) -> Wavefunction:
    """Build the wavefunction for a ``qernel_cli.config.Config``.

    Sizes come from ``config.model``, the system from ``config.supercell`` and
    ``config.electrons``, the cusp strength U from
    ``config.material_units.coulomb_strength`` (0 if ``hamiltonian.coulomb`` is
    false). ``conditions_range`` = (low, high) per condition in moiré units
    (default: the training depths [V_min, V_max]/E_M); c is normalised to
    [-1, 1] on it (a zero-width range gets scale 1).

    Envelopes: the given Bloch ``orbitals``; else the non-interacting Bloch
    orbitals (``hamiltonian.bands.lowest_orbitals``, phase φ of the config) at
    depth ``envelope_depth`` (V/E_M), which defaults to the middle of the depth
    range when ``config.model.envelope == "bloch"``; else free-electron plane
    waves. ``envelope_shells`` (default ``config.model.envelope_shells``) is the
    plane-wave cutoff |G| ≤ shells·|b| in both cases.
    """
    require_x64()
    material = config.material_units
    m = config.model
    low, high, centre, scale = _condition_range(config, conditions_range)
    if envelope_shells is None:
        envelope_shells = m.envelope_shells
    if orbitals is not None and envelope_depth is not None:
        raise ValueError("give either orbitals or envelope_depth, not both")
    if orbitals is None and envelope_depth is None and m.envelope == "bloch":
        envelope_depth = float(centre[0])  # c[0] is the depth V/E_M
    anchors: tuple[float, ...] = (0.0,)
    band_states = None
    if envelope_depth is not None:
        orbitals, anchors, band_states = _bloch_envelopes(config, float(envelope_depth), envelope_shells, low, high, centre, scale)
    elif m.envelope_momenta == "mixed":
        raise ValueError('model.envelope_momenta = "mixed" needs Bloch envelopes (model.envelope = "bloch")')
    coulomb = material.coulomb_strength if config.hamiltonian.coulomb else 0.0
    return Wavefunction(
        config.supercell_geometry, config.electrons.n_up, config.electrons.n_down,
        n_conditions=len(low), condition_centre=centre, condition_scale=scale,
        layers=m.layers, width=m.width, heads=m.heads, kv_heads=m.kv_heads, mlp_width=m.mlp_width, experts=m.experts, top_k=top_k,
        determinants=m.determinants, harmonics=m.harmonics, film_hidden=m.film_hidden,
        jastrow=m.jastrow, pair_jastrow_qmax=m.pair_jastrow_qmax, radial_jastrow=m.radial_jastrow, coulomb_strength=coulomb,
        envelope_shells=envelope_shells, orbitals=orbitals, envelope_anchors=anchors, envelope_interpolation=m.envelope_interpolation,
        band_states=band_states, dtype=m.dtype, key=key,
    )


def _condition_range(
    config: Config, conditions_range: tuple[Sequence[float], Sequence[float]] | None
) -> tuple[Float[np.ndarray, " c"], Float[np.ndarray, " c"], Float[np.ndarray, " c"], Float[np.ndarray, " c"]]:
    """(low, high, centre, scale) of c in moiré units: the given range, else the training depths [V_min, V_max]/E_M."""
    if conditions_range is None:
        material, ham = config.material_units, config.hamiltonian
        conditions_range = ([material.depth_to_moire(ham.V_min_meV)], [material.depth_to_moire(ham.V_max_meV)])
    low = np.atleast_1d(np.asarray(conditions_range[0], dtype=np.float64))
    high = np.atleast_1d(np.asarray(conditions_range[1], dtype=np.float64))
    if low.shape != high.shape or low.ndim != 1:
        raise ValueError("conditions_range must be (low, high) with one entry per condition")
    centre = 0.5 * (low + high)
    half = 0.5 * (high - low)
    return low, high, centre, np.where(half > 0, half, 1.0)

def _bloch_envelopes(
    config: Config,
    depth: float,
    shells: int,
    low: Float[np.ndarray, " c"],
    high: Float[np.ndarray, " c"],
    centre: Float[np.ndarray, " c"],
    scale: Float[np.ndarray, " c"],
) -> tuple[tuple, tuple[float, ...], list[BandStates] | None]:
    """(orbitals per spin, anchor positions c₀, band states or None) of Bloch envelopes at ``depth`` (V/E_M).

    With ``model.envelope_anchors`` > 1 and a depth range, the orbitals are
    followed to evenly spaced anchor depths; "mixed" momenta add the lowest
    ``envelope_bands`` bands at every momentum per anchor.
    """
    from qernel_cli.hamiltonian import bands

    m, phi = config.model, config.material_units.phi_deg
    cell, el = config.supercell_geometry, config.electrons
    reference = [bands.lowest_orbitals(cell, n, depth, phi, n_shells=shells) if n else None for n in (el.n_up, el.n_down)]
    n_anchors = m.envelope_anchors if float(high[0] - low[0]) > 0 else 1
    anchors: tuple[float, ...] = (0.0,)
    if n_anchors > 1:
        depths = np.linspace(low[0], high[0], n_anchors)
        anchors = tuple(float(x) for x in (depths - centre[0]) / scale[0])
        orbitals = tuple(
            tuple(bands.follow_orbitals(ref, cell, float(v), phi) for v in depths) if ref is not None else None for ref in reference
        )
    else:
        orbitals = tuple(reference)
    band_states = None
    if m.envelope_momenta == "mixed":
        anchor_depths = np.linspace(low[0], high[0], n_anchors) if n_anchors > 1 else [depth]
        band_states = [bands.solve_bands(cell, float(v), phi, m.envelope_bands, n_shells=shells) for v in anchor_depths]
    return orbitals, anchors, band_states
