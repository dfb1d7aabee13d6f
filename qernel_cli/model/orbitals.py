"""Generalised (Psiformer-style) orbitals and the determinant head, with the head's forward-Laplacian rule.

For determinant k, spin block s and orbital j (positions in a_M)

    Φ^k_ij = (w^k_j · h_i + b^k_j) · e^k_j(r_i; c),

with h_i the trunk's final features of electron i (which depend on all
electrons), w, b complex and e^k_j the Bloch envelopes of ``model.envelopes``.
ψ = Σ_k Π_s det Φ^{k,s}: block-diagonal in spin, combined by a complex
logsumexp, all in float64/complex128 whatever the trunk dtype.

The forward Laplacian of the head (:meth:`GeneralisedOrbitals.jet`). With
T = 2n tangents t = (p, a) (electron p, Cartesian a, C order of the flattened
positions) and, per determinant k and spin block,

    Φ_ij = L_ij E_ij,   L = h W + b (h: trunk features),   E_ij = e_j(r_i),

the envelope E depends on r_i alone, so

    ∂_t Φ_ij  = ∂_t L_ij E_ij + δ_{p i} L_ij ∂_a E_ij,
    ∇² Φ_ij   = ∇²L_ij E_ij + L_ij ∇²E_ij + 2 Σ_a ∂_{(i,a)} L_ij ∂_a E_ij,

with ∂L, ∇²L the trunk's Jacobian and Laplacian (``Trunk.jet``) times W. Then,
with A = Φ⁻¹ and M_t = A ∂_t Φ,

    ∂_t log det Φ = tr M_t,   ∇² log det Φ = tr(A ∇²Φ) − Σ_t tr(M_t M_t).

folx propagates the same through any function, but through the head it
materialises dense complex Jacobians of every intermediate and spent about
half of the local energy there at N = 24; this rule uses the structure
directly. Derivatives are with respect to positions in a_M; log ψ is complex
(log|ψ| + i arg ψ), so the results are complex.
"""

from __future__ import annotations

import math
from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, PRNGKeyArray

from qernel_cli import linalg
from qernel_cli.lattice import Supercell
from qernel_cli.model.determinant import combine, combine_jet, log_det
from qernel_cli.model.envelopes import BandMixingEnvelope, BandStates, BlochEnvelope, BlochOrbitals, initial_envelope
from qernel_cli.model.jet import Jet
from qernel_cli.model.linear import normal, split


ORBITAL_INIT_SCALE = 0.05
"""Initial scale of the generalised-orbital weights relative to the unit bias."""


class SpinOrbitals(eqx.Module):
    """Generalised orbitals of one spin block: (K, n_s, n_s) complex matrices Φ^k_ij."""

    weight: Float[Array, "width 2*K*n_orb"]
    bias: Float[Array, " 2*K*n_orb"]
    envelope: BlochEnvelope | BandMixingEnvelope

    def __init__(
        self,
        width: int,
        envelope: BlochEnvelope | BandMixingEnvelope,
        *,
        dtype=jnp.float64,
        key: PRNGKeyArray,
    ):
        determinants, n_orb = envelope.determinants, envelope.n_orbitals
        shape = (2, determinants, n_orb)
        # Small weights: the orbitals start within a few per cent of their envelopes
        # (so a Bloch-initialised model starts near the Bloch determinant), while
        # gradients still reach the trunk.
        self.weight = normal(key, (width, int(np.prod(shape))), ORBITAL_INIT_SCALE / math.sqrt(width), dtype)
        bias = np.zeros(shape)
        bias[0] = 1.0  # real part 1, imaginary part 0: orbitals start as their envelopes
        self.bias = jnp.asarray(bias.reshape(-1), dtype=dtype)
        self.envelope = envelope

    @property
    def determinants(self) -> int:
        return self.envelope.determinants

    @property
    def n_orbitals(self) -> int:
        return self.envelope.n_orbitals

    def __call__(
        self, h: Float[Array, "n width"], positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None
    ) -> Complex[Array, "K n n_orb"]:
        n = h.shape[0]
        linear = (h.astype(self.weight.dtype) @ self.weight + self.bias).astype(jnp.float64)
        linear = linear.reshape(n, 2, self.determinants, self.n_orbitals)
        linear = jax.lax.complex(linear[:, 0], linear[:, 1]).transpose(1, 0, 2)  # (K, n, n_orb)
        return linear * self.envelope(positions, c0)


    def log_det_jet(
        self,
        h: Float[Array, "m w"],
        h_jacobian: Float[Array, "T m w"],
        h_laplacian: Float[Array, "m w"],
        positions: Float[Array, "m 2"],
        c0: Float[Array, ""] | None,
        start: int,
    ) -> tuple[Complex[Array, " K"], Complex[Array, "T K"], Complex[Array, " K"]]:
        """(log det Φ, ∂_t log det Φ, ∇² log det Φ) per determinant, this block holding electrons ``start .. start+m-1``.

        With G_t = (∂_t L ∘ E) Φ⁻¹ and u_a = (L ∘ ∂_a E) Φ⁻¹ (row p: the envelope
        term of tangent (p, a), which touches row p only), M_t = Φ⁻¹∂_tΦ is similar
        to G_t + e_p u_a[p]ᵀ, so tr M_t = tr G_t + u_a[p, p] and
        tr M_t² = tr G_t² + 2 u_a[p]·G_t[:, p] + u_a[p, p]².
        All K determinants at once (batched products over k).
        """
        m = h.shape[0]
        n_tangents = h_jacobian.shape[0]
        K, n_orb = self.determinants, self.n_orbitals
        weight = self.weight
        bias = self.bias.astype(jnp.float64).reshape(2, K, n_orb)
        rows = np.arange(m)
        # ∂_{(start+i, a)} h_i: the trunk Jacobian on the block's own electrons, (2, m, w).
        h_own = jnp.moveaxis(h_jacobian.reshape(n_tangents // 2, 2, m, -1)[start + rows, :, rows], 0, 1)
        # The orbital layer (without bias) of value, Laplacian, own and all tangents in one product: (K, 4 + T, m, n_orb).
        stacked = jnp.concatenate([h[None], h_laplacian[None], h_own, h_jacobian]).astype(weight.dtype)
        y = (stacked @ weight).astype(jnp.float64).reshape(n_tangents + 4, m, 2, K, n_orb)
        layer = jnp.moveaxis(jax.lax.complex(y[:, :, 0], y[:, :, 1]), 2, 0)
        E, dE, lapE = self.envelope.jet(positions, c0)  # (K, m, j), (2, K, m, j), (K, m, j)
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


class GeneralisedOrbitals(eqx.Module):
    """Determinant head: Σ_k det Φ^{k,↑} det Φ^{k,↓} as complex log (log|ψ_det|, arg ψ_det)."""

    blocks: tuple[SpinOrbitals, ...]
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)

    def __init__(
        self,
        supercell: Supercell,
        n_up: int,
        n_down: int,
        *,
        width: int,
        determinants: int,
        envelope_shells: int = 2,
        orbitals: BlochOrbitals | tuple[BlochOrbitals, BlochOrbitals] | None = None,
        anchors: tuple[float, ...] = (0.0,),
        interpolation: str = "smooth",
        band_states: Sequence[BandStates] | None = None,
        dtype=jnp.float64,
        key: PRNGKeyArray,
    ):
        """``orbitals``: None (free-electron plane waves), one set of Bloch orbitals
        (the first n_s of them for each spin block) or a pair (up, down); each
        set may also be a sequence with one set per anchor (normalised c₀ positions
        ``anchors``) for depth-following envelopes."""
        self.n_up, self.n_down = int(n_up), int(n_down)
        per_spin = tuple(orbitals) if isinstance(orbitals, (tuple, list)) else (orbitals, orbitals)
        if len(per_spin) != 2:
            raise ValueError("orbitals must be None, one set of Bloch orbitals, or a pair (up, down)")
        spins = [(n, o) for n, o in zip((self.n_up, self.n_down), per_spin) if n > 0]
        keys = split(key, len(spins))
        blocks = []
        for (n_s, orbs), k in zip(spins, keys):
            envelope = initial_envelope(supercell, n_s, determinants, envelope_shells, orbs, anchors, interpolation, band_states)
            blocks.append(SpinOrbitals(width, envelope, dtype=dtype, key=k))
        self.blocks = tuple(blocks)

    def matrices(
        self, h: Float[Array, "n width"], positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None
    ) -> tuple[Complex[Array, "K m m"], ...]:
        """Orbital matrices per spin block (up first), rows = electrons, columns = orbitals."""
        out, start = [], 0
        for block in self.blocks:
            n_s = block.n_orbitals
            out.append(block(h[start : start + n_s], positions[start : start + n_s], c0))
            start += n_s
        return tuple(out)

    def __call__(
        self, h: Float[Array, "n width"], positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None
    ) -> tuple[Float[Array, ""], Float[Array, ""]]:
        logabs, phase = 0.0, 0.0
        for matrix in self.matrices(h, positions, c0):
            a, p = log_det(matrix)
            logabs, phase = logabs + a, phase + p
        return combine(logabs, phase)

    def jet(
        self, trunk: Jet, positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None
    ) -> tuple[Complex[Array, ""], Complex[Array, " T"]]:
        """(∇², ∂ over the 2n coordinates) of log Σ_k Π_s det Φ^{k,s} from the trunk's jet (1/a_M², 1/a_M)."""
        n = positions.shape[0]
        h, h_jac, h_lap = trunk.value, trunk.jacobian, trunk.laplacian
        K = self.blocks[0].determinants
        value = jnp.zeros((K,), jnp.complex128)
        gradient = jnp.zeros((2 * n, K), jnp.complex128)
        laplacian = jnp.zeros((K,), jnp.complex128)
        start = 0
        for block in self.blocks:
            m = block.n_orbitals
            rows = slice(start, start + m)
            v, g, lap = block.log_det_jet(h[rows], h_jac[:, rows], h_lap[rows], positions[rows], c0, start)
            value, gradient, laplacian = value + v, gradient + g, laplacian + lap
            start += m
        return combine_jet(value, gradient, laplacian)
