"""Forward Laplacian of log ψ with the determinant head written out by hand.

folx propagates (value, Jacobian, Laplacian) through any function, but through
the determinant head it materialises dense complex Jacobians of every
intermediate (orbital products, selects, the inverse, in transposed layouts)
and spent about half of the local energy there at N = 24. The head has a
simple structure that a hand-written rule uses directly. With T = 2n tangents
t = (p, a) (electron p, Cartesian a, C order of the flattened positions) and,
per determinant k and spin block,

    Φ_ij = L_ij E_ij,   L = h W + b (h: trunk features),   E_ij = e_j(r_i),

the envelope E depends on r_i alone, so

    ∂_t Φ_ij  = ∂_t L_ij E_ij + δ_{p i} L_ij ∂_a E_ij,
    ∇² Φ_ij   = ∇²L_ij E_ij + L_ij ∇²E_ij + 2 Σ_a ∂_{(i,a)} L_ij ∂_a E_ij,

with ∂L, ∇²L the trunk's Jacobian and Laplacian (``model.trunk_laplacian``) times W. Then, with
A = Φ⁻¹ and M_t = A ∂_t Φ,

    ∂_t log det Φ = tr M_t,   ∇² log det Φ = tr(A ∇²Φ) − Σ_t tr(M_t M_t),

and the K determinants combine as ψ = Σ_k e^{l_k}: with weights w_k = e^{l_k}/ψ,
∂ log ψ = Σ_k w_k ∂l_k and ∇² log ψ = Σ_k w_k (∇²l_k + (∂l_k)²) − (∂ log ψ)²
(complex squares summed over t). The trunk's jet comes from
``model.trunk_laplacian``, the Jastrow factors' derivatives from their own
closed forms (``laplacian_and_gradient`` of each).

Everything is a derivative with respect to positions in a_M; log ψ is complex
(log|ψ| + i arg ψ), so the results are complex.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from qernel_cli import linalg
from qernel_cli.model.jet import Jet
from qernel_cli.model.trunk_laplacian import trunk_jet

if TYPE_CHECKING:
    from qernel_cli.model.orbitals import Envelope, SpinOrbitals
    from qernel_cli.model.wavefunction import Wavefunction

__all__ = ["envelope_jet", "head_jet", "log_psi_laplacian"]


def envelope_jet(
    envelope: Envelope, positions: Float[Array, "m 2"], c0: Float[Array, ""] | None
) -> tuple[Complex[Array, "K m j"], Complex[Array, "2 K m j"], Complex[Array, "K m j"]]:
    """(E, ∂E/∂r_i, ∇²_i E) of the envelopes E_kij = e^k_j(r_i), derivatives with respect to the row's own electron (the envelope's own rule, ``Envelope.jet``)."""
    return envelope.jet(positions, c0)


def _block_log_det_jet(
    block: SpinOrbitals,
    h: Float[Array, "m w"],
    h_jacobian: Float[Array, "T m w"],
    h_laplacian: Float[Array, "m w"],
    positions: Float[Array, "m 2"],
    c0: Float[Array, ""] | None,
    start: int,
) -> tuple[Complex[Array, " K"], Complex[Array, "T K"], Complex[Array, " K"]]:
    """(log det Φ, ∂_t log det Φ, ∇² log det Φ) per determinant of the spin block of electrons ``start .. start+m-1``.

    With G_t = (∂_t L ∘ E) Φ⁻¹ and u_a = (L ∘ ∂_a E) Φ⁻¹ (row p: the envelope
    term of tangent (p, a), which touches row p only), M_t = Φ⁻¹∂_tΦ is similar
    to G_t + e_p u_a[p]ᵀ, so tr M_t = tr G_t + u_a[p, p] and
    tr M_t² = tr G_t² + 2 u_a[p]·G_t[:, p] + u_a[p, p]².
    All K determinants at once (batched products over k).
    """
    m = h.shape[0]
    n_tangents = h_jacobian.shape[0]
    K, n_orb = block.determinants, block.n_orbitals
    weight = block.weight
    bias = block.bias.astype(jnp.float64).reshape(2, K, n_orb)
    rows = np.arange(m)
    # ∂_{(start+i, a)} h_i: the trunk Jacobian on the block's own electrons, (2, m, w).
    h_own = jnp.moveaxis(h_jacobian.reshape(n_tangents // 2, 2, m, -1)[start + rows, :, rows], 0, 1)
    # The orbital layer (without bias) of value, Laplacian, own and all tangents in one product: (K, 4 + T, m, n_orb).
    stacked = jnp.concatenate([h[None], h_laplacian[None], h_own, h_jacobian]).astype(weight.dtype)
    y = (stacked @ weight).astype(jnp.float64).reshape(n_tangents + 4, m, 2, K, n_orb)
    layer = jnp.moveaxis(jax.lax.complex(y[:, :, 0], y[:, :, 1]), 2, 0)
    E, dE, lapE = envelope_jet(block.envelope, positions, c0)  # (K, m, j), (2, K, m, j), (K, m, j)
    dE = jnp.swapaxes(dE, 0, 1)  # (K, 2, m, j)
    L = layer[:, 0] + jax.lax.complex(bias[0], bias[1])[:, None, :]  # (K, m, j)
    inverse, log_abs, phase, singular = linalg.inverse_and_log_det(L * E)
    value = jax.lax.complex(log_abs, phase)
    G = ((layer[:, 4:] * E[:, None]).reshape(K, n_tangents * m, n_orb) @ inverse).reshape(K, n_tangents, m, m)
    u = (L[:, None] * dE) @ inverse[:, None]  # (K, 2, m, m): u[k, a, p, l]
    u_own = jnp.diagonal(u, axis1=-2, axis2=-1)  # (K, 2, m): u[k, a, p, p]
    # G_{(p,a)}[l, p] for the block's own tangents: (K, 2, m_l, m_p).
    G_own = jnp.diagonal(G.reshape(K, n_tangents // 2, 2, m, m)[:, start : start + m], axis1=1, axis2=4)
    cross = jnp.einsum("kapl,kalp->k", u, G_own)
    own_block = slice(2 * start, 2 * (start + m))
    gradient = jnp.trace(G, axis1=-2, axis2=-1).at[:, own_block].add(jnp.swapaxes(u_own, 1, 2).reshape(K, 2 * m))
    square = jnp.sum(G * jnp.swapaxes(G, -1, -2), axis=(1, 2, 3)) + 2.0 * cross + jnp.sum(u_own**2, axis=(1, 2))
    lap_phi = layer[:, 1] * E + L * lapE + 2.0 * jnp.sum(layer[:, 2:4] * dE, axis=1)
    laplacian = jnp.sum(jnp.swapaxes(inverse, -1, -2) * lap_phi, axis=(1, 2)) - square
    gradient = jnp.where(singular[None], 0.0, gradient.T)
    laplacian = jnp.where(singular, 0.0, laplacian)
    return value, gradient, laplacian


def _combine_jet(
    value: Complex[Array, " K"], gradient: Complex[Array, "T K"], laplacian: Complex[Array, " K"]
) -> tuple[Complex[Array, ""], Complex[Array, " T"]]:
    """(∇² log Σ_k e^{l_k}, ∂ log Σ_k e^{l_k}); zero where the sum cancels (as ``determinant.combine``)."""
    if value.shape[0] == 1:
        return laplacian[0], gradient[:, 0]
    shift = jnp.max(jnp.real(value))
    terms = jnp.exp(value - shift)
    total = jnp.sum(terms)
    cancelled = jnp.abs(total) ** 2 <= jnp.finfo(jnp.float64).tiny
    weights = terms / jnp.where(cancelled, 1.0, total)
    g = gradient @ weights
    lap = jnp.sum(weights * (laplacian + jnp.sum(gradient * gradient, axis=0))) - jnp.sum(g * g)
    return jnp.where(cancelled, 0.0, lap), jnp.where(cancelled, 0.0, g)


def log_psi_laplacian(
    model: Wavefunction,
    positions: Float[Array, "n 2"],
    conditions: Float[Array, " n_conditions"],
) -> tuple[Complex[Array, ""], Complex[Array, "n 2"]]:
    """(∇² log ψ, ∇ log ψ) of the wavefunction at ``positions`` (a_M), complex, in 1/a_M² and 1/a_M.

    Equal to folx's forward Laplacian of ``model(positions, conditions)`` (tested
    to 1e-10 in float64): the trunk by ``model.trunk_laplacian``, the head by the
    rules above, the Jastrows by their own closed forms.
    """
    positions = jnp.asarray(positions, dtype=jnp.float64)
    n = positions.shape[0]
    c = model.normalise(conditions)
    lap_psi, grad_psi = head_jet(model, trunk_jet(model, positions, conditions), positions, c[0])
    grad_psi = grad_psi.reshape(n, 2)
    if model.jastrow is not None:
        lap_j, grad_j = model.jastrow.laplacian_and_gradient(positions)
        lap_psi, grad_psi = lap_psi + lap_j, grad_psi + grad_j
    if model.pair_jastrow is not None:
        lap_j, grad_j = model.pair_jastrow.laplacian_and_gradient(positions, c)
        lap_psi, grad_psi = lap_psi + lap_j, grad_psi + grad_j
    if model.radial_jastrow is not None:
        lap_j, grad_j = model.radial_jastrow.laplacian_and_gradient(positions, c)
        lap_psi, grad_psi = lap_psi + lap_j, grad_psi + grad_j
    return lap_psi, grad_psi


def head_jet(
    model: Wavefunction, trunk: Jet, positions: Float[Array, "n 2"], c0: Float[Array, ""]
) -> tuple[Complex[Array, ""], Complex[Array, " T"]]:
    """(∇², ∂ over the 2n coordinates) of log Σ_k det Φ^k from the trunk's jet: the determinant head alone, no Jastrow factors."""
    n = positions.shape[0]
    h, h_jac, h_lap = trunk.value, trunk.jacobian, trunk.laplacian
    K = model.orbitals.blocks[0].determinants
    value = jnp.zeros((K,), jnp.complex128)
    gradient = jnp.zeros((2 * n, K), jnp.complex128)
    laplacian = jnp.zeros((K,), jnp.complex128)
    start = 0
    for block in model.orbitals.blocks:
        m = block.n_orbitals
        rows = slice(start, start + m)
        v, g, lap = _block_log_det_jet(block, h[rows], h_jac[:, rows], h_lap[rows], positions[rows], c0, start)
        value, gradient, laplacian = value + v, gradient + g, laplacian + lap
        start += m
    return _combine_jet(value, gradient, laplacian)
