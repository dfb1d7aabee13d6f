"""A classical-crystal starting point: a Slater determinant of Gaussians on the best site arrangement.

In the strong-coupling limit the electrons of a moiré system sit on potential
minima, one per site, arranged to minimise their Coulomb energy (a
generalised Wigner crystal). Starting VMC from the non-interacting Bloch
determinant puts the model in the liquid; the crystal then needs a
reorganisation that gradient-based optimisation rarely finds. With
``pretrain.target = "crystal"`` the model is instead pre-trained on

    Φ_C = det[ g_j(r_i) ],  g_j(r) = Σ_L exp(−|r − R_j − L|²/2s²),

periodic Gaussians (image sums over supercell vectors L) of amplitude width s on the sites R_j of the classical
ground state (found by pair-swap descent on the Ewald energy of point
charges on the moiré minima, several restarts). s is the harmonic-oscillator
width of the moiré minimum at each depth (s⁴ = 1/k, k the curvature of Δ),
kept within [0.05, 0.3] a_M. Comparing the VMC energies of a run started from
the liquid and one started from the crystal locates the transition where
the two branches cross.
"""

from __future__ import annotations

from typing import Any, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from qernel_cli import linalg

from qernel_cli.hamiltonian.bands import Orbitals
from qernel_cli.hamiltonian.ewald import ewald_energy
from qernel_cli.hamiltonian.potential import moire_potential, moire_sites, potential_minimum
from qernel_cli.lattice import MOIRE_VECTORS, Supercell, points_in_disc

WIDTH_BOUNDS = (0.05, 0.3)


def pair_energies(supercell: Supercell, sites: np.ndarray) -> np.ndarray:
    """W_st: Ewald energy of point charges at sites s and t (up to a constant), 1/a_M."""
    m = len(sites)
    row = np.array([float(ewald_energy(np.stack([sites[0], sites[t]]), supercell.cell)) if t else 0.0 for t in range(m)])
    # Translation invariance: W_st depends on R_t − R_s only; index the difference on the site lattice.
    frac = np.rint((sites - sites[0]) @ np.linalg.inv(MOIRE_VECTORS)).astype(int)
    index = {(a % supercell.L1, b % supercell.L2): t for t, (a, b) in enumerate(frac)}
    w = np.empty((m, m))
    for s in range(m):
        for t in range(m):
            d = frac[t] - frac[s]
            w[s, t] = row[index[(d[0] % supercell.L1, d[1] % supercell.L2)]]
    np.fill_diagonal(w, 0.0)
    return w


def classical_ground_state(supercell: Supercell, n_electrons: int, phi_deg: float, restarts: int = 20, seed: int = 0) -> Float[np.ndarray, "N 2"]:
    """Sites (a_M) of N point charges on the moiré minima with the lowest Coulomb energy found."""
    sites = moire_sites(supercell, phi_deg)
    m = len(sites)
    if not 0 < n_electrons <= m:
        raise ValueError(f"a classical crystal needs 0 < N ≤ {m} sites, got N = {n_electrons}")
    w = pair_energies(supercell, sites)
    rng = np.random.default_rng(seed)
    best, best_energy = None, np.inf
    for _ in range(restarts):
        occupied = np.zeros(m, bool)
        occupied[rng.choice(m, n_electrons, replace=False)] = True
        while True:
            field = w @ occupied  # energy felt at each site from the occupied ones
            # Moving an electron from s (occupied) to t (empty) changes E by field[t] − field[s] − W_st.
            gain = field[None, :] - field[:, None] - w
            gain[~occupied, :] = np.inf
            gain[:, occupied] = np.inf
            s, t = np.unravel_index(np.argmin(gain), gain.shape)
            if gain[s, t] >= -1e-12:
                break
            occupied[s], occupied[t] = False, True
        energy = 0.5 * occupied @ w @ occupied
        if energy < best_energy - 1e-12:
            best, best_energy = occupied.copy(), energy
    return sites[best]


def oscillator_width(v: float, phi_deg: float) -> float:
    """Amplitude width s (a_M) of the harmonic ground state in a moiré minimum of depth v = V/E_M."""
    r0 = potential_minimum(phi_deg)
    h = 1e-3
    f = lambda x: float(moire_potential(np.asarray(x)[None], 1.0, 1.0, phi_deg)[0])  # noqa: E731
    curvature = (f(r0 + [h, 0]) + f(r0 - [h, 0]) - 2 * f(r0)) / h**2  # per unit V; isotropic at a C3 minimum
    k = max(v, 0.0) * curvature
    s = k ** -0.25 if k > 0 else np.inf
    return float(np.clip(s, *WIDTH_BOUNDS))


def crystal_orbitals(supercell: Supercell, sites: np.ndarray, width: float) -> Orbitals:
    """Periodic Gaussians of amplitude width ``width`` (a_M) on ``sites``, as plane-wave orbitals (k = 0)."""
    g_max = 5.0 / width  # the spectrum e^{-G²s²/2} is below 4e-6 beyond
    G, _ = points_in_disc(supercell.reciprocal, g_max)
    coefficients = np.exp(-0.5 * np.sum(G**2, axis=-1) * width**2)[None, :] * np.exp(-1j * (np.asarray(sites) @ G.T))
    coefficients /= np.linalg.norm(coefficients, axis=-1, keepdims=True)
    n = len(sites)
    return Orbitals(k=np.zeros((n, 2)), G=G, coefficients=coefficients, energies=np.zeros(n), area=supercell.area)


class CrystalTarget(eqx.Module):
    """The crystal determinant Φ_C = det[g_j(r_i)] of one depth group: sites R_j (a_M) and amplitude width s (a_M).

    Stacked over groups (a leading axis on both leaves) it is the pre-training target's per-group conditions.
    """

    sites: Float[Array, "n 2"]
    width: Float[Array, ""]


IMAGE_SHIFTS = np.array([[i, j] for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=np.float64)
"""The nearest image of r − R_j and its eight neighbours (fractional supercell vectors)."""


def crystal_log_psi(target: CrystalTarget, positions: Float[Array, "n 2"], supercell: Supercell) -> Array:
    """log Φ_C (complex) at ``positions`` (a_M), the Gaussians summed over periodic images in real space.

    g_j(r) = Σ_L exp(−|r − R_j − L|²/2s²) is, by Poisson summation, the plane-wave
    Gaussian Σ_Q e^{−Q²s²/2} e^{iQ·(r − R_j)} of :func:`crystal_orbitals` up to a
    constant factor (which no fidelity sees). With s ≤ 0.3 a_M and supercell
    vectors of at least 2 a_M, images beyond the nearest and its neighbours
    contribute below e^{−(1.7/0.3)²/2} ≈ 1e-7 of the nearest one. Costs n²·9
    per configuration, against n²·n_Q for the plane waves (n_Q ≈ 6000 on a
    6×6 supercell at the narrowest width).
    """
    cell = jnp.asarray(supercell.cell)
    d = positions[:, None, :] - target.sites[None, :, :]  # (i, j, 2)
    frac = d @ jnp.asarray(np.linalg.inv(supercell.cell))
    frac = frac - jnp.round(frac)
    images = (frac[:, :, None, :] + IMAGE_SHIFTS) @ cell  # (i, j, 9, 2)
    g = jnp.sum(jnp.exp(-0.5 * jnp.sum(images**2, axis=-1) / target.width**2), axis=-1)
    log_abs, phase = linalg.log_det(g.astype(jnp.complex128))  # safe on several CPU devices (qernel_cli.linalg)
    return jax.lax.complex(log_abs, phase)


def family_crystal_targets(sites: np.ndarray, depths: np.ndarray, phi_deg: float) -> CrystalTarget:
    """The crystal target at each depth (V/E_M; width from the local curvature), stacked along a group axis."""
    widths = np.array([oscillator_width(float(v), phi_deg) for v in depths])
    return CrystalTarget(sites=np.broadcast_to(np.asarray(sites, float), (len(widths), *np.shape(sites))).copy(), width=widths)


def crystal_mixing(
    momenta: Float[np.ndarray, "M 2"],
    basis: Float[np.ndarray, "n_G 2"],
    states: Complex[np.ndarray, "A M n_G"],
    sites: Float[np.ndarray, "n 2"],
    widths: Sequence[float],
) -> Complex[np.ndarray, "A n M"]:
    """Band-mixing coefficients U^a_jm that put orbital j on the Gaussian of site R_j (width s_a at anchor a).

    The band states β_m = e^{ik_m·r} Σ_G c_m(G) e^{iG·r} are orthonormal, so
    the best approximation of the Gaussian g_j in their span is the projection
    U_jm = ⟨β_m|g_j⟩ = Σ_G c_m(G)* e^{−|k_m+G|²s²/2} e^{−i(k_m+G)·R_j}; each
    orbital is then scaled to amplitude 1 at its site, as the Bloch envelopes
    start with O(1) amplitudes.
    """
    momenta, basis, sites = np.asarray(momenta, float), np.asarray(basis, float), np.asarray(sites, float)
    q = momenta[:, None, :] + basis[None, :, :]  # (M, n_G, 2)
    phase = np.exp(1j * np.einsum("mgx,jx->jmg", q, sites))  # e^{i(k_m+G)·R_j}
    mixing = []
    for beta, s in zip(np.asarray(states), widths):
        gauss = np.exp(-0.5 * np.sum(q**2, axis=-1) * s**2)  # (M, n_G)
        u = np.einsum("mg,mg,jmg->jm", beta.conj(), gauss, phase.conj())
        at_site = np.einsum("jm,mg,jmg->j", u, beta, phase)  # e_j(R_j)
        mixing.append(u / at_site[:, None])
    return np.stack(mixing)


def crystal_start(model: Any, sites: Float[np.ndarray, "n 2"], phi_deg: float) -> Any:
    """``model`` (a Wavefunction or its parameters) with band-mixing envelopes put on the crystal ``sites``.

    Each anchor's Gaussians take the oscillator width of the anchor's depth.
    Envelopes that keep each orbital's Bloch momentum cannot localise; they
    are returned unchanged (the fidelity pre-training then does what it can).
    """
    from qernel_cli.model.envelopes import BandMixingEnvelope

    envelope = model.orbitals.blocks[0].envelope
    if not isinstance(envelope, BandMixingEnvelope):
        return model
    centre, scale = model.condition_centre[0], model.condition_scale[0]
    widths = [oscillator_width(centre + c0 * scale, phi_deg) for c0 in envelope.anchors]
    mixing = crystal_mixing(np.asarray(envelope.momenta), np.asarray(envelope.basis), envelope.states.value, sites, widths)
    mixing = np.broadcast_to(mixing[:, None], envelope.mixing_re.shape)
    return eqx.tree_at(
        lambda m: (m.orbitals.blocks[0].envelope.mixing_re, m.orbitals.blocks[0].envelope.mixing_im),
        model,
        (jnp.asarray(mixing.real, dtype=envelope.mixing_re.dtype), jnp.asarray(mixing.imag, dtype=envelope.mixing_im.dtype)),
    )
