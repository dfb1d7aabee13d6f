"""Bloch envelopes: the periodic plane-wave factors of the generalised orbitals, each with its own jet.

For determinant k and orbital j (positions in a_M, momenta in 1/a_M)

    e^k_j(r; c) = Σ_G a^k_j(G; c) exp(i (k_j + G)·r),

with k_j on the supercell k-grid (fixed) and G moiré reciprocal vectors;
a^k_j(G; c) are trainable, either independent of c or interpolated in the
depth between anchors (depth-following Bloch envelopes). Every k_j + G is a
supercell reciprocal vector, so each envelope, hence ψ, is periodic on the
supercell. The default envelopes are the N lowest free-electron plane waves
(one G per orbital) on the basis |G| ≤ envelope_shells·|b|
(``bands.plane_wave_basis``, the same basis as the Bloch orbitals); they can
instead be initialised from Bloch orbitals (``bands.lowest_orbitals``). With
fixed k_j (:class:`BlochEnvelope`) ψ keeps the total crystal momentum of that
filling; a :class:`BandMixingEnvelope` instead writes e^k_j = Σ_m U^k_jm β_m,
trained mixtures of fixed band states of every momentum, so ψ can change its
momentum or break the translations (a crystal). Each envelope class carries
its own jet (value, gradient, Laplacian) for the forward Laplacian. All in
float64/complex128.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from qernel_cli.hamiltonian.bands import plane_wave_basis
from qernel_cli.lattice import MOIRE_RECIPROCAL, Supercell, lattice_waves
from qernel_cli.model.features import static_matrix
from qernel_cli.model.interpolation import INTERPOLATIONS, anchor_weights

class BlochOrbitals(Protocol):
    """What the envelopes need of a set of Bloch orbitals (e.g. ``hamiltonian.bands.Orbitals``).

    φ_j(r) ∝ Σ_G coefficients[j, G] exp(i (k_j + G)·r); k in 1/a_M, G in 1/a_M.
    """

    k: np.ndarray  # (n_orb, 2)
    G: np.ndarray  # (n_G, 2)
    coefficients: np.ndarray  # (n_orb, n_G) complex


def lowest_plane_waves(
    supercell: Supercell, n: int
) -> tuple[Float[np.ndarray, "n 2"], Float[np.ndarray, "n 2"]]:
    """(k_j, G_j) of the n lowest free-electron plane waves exp(i(k_j+G_j)·r) on the supercell.

    k_j is on the supercell k-grid (folded into the moiré Brillouin zone), G_j a
    moiré reciprocal vector; ties in |k+G| are broken by angle, then by k.
    """
    k = supercell.kgrid()
    shells = 2
    while True:
        G = plane_wave_basis(shells)  # |G| ≤ shells·|b|, sorted by |G|
        q = k[:, None, :] + G[None, :, :]
        kk = np.broadcast_to(k[:, None, :], q.shape).reshape(-1, 2)
        GG = np.broadcast_to(G[None, :, :], q.shape).reshape(-1, 2)
        q = q.reshape(-1, 2)
        norm = np.round(np.sum(q**2, axis=-1), 8)
        order = np.lexsort((np.round(kk[:, 1], 8), np.round(kk[:, 0], 8), np.round(np.arctan2(q[:, 1], q[:, 0]), 8), norm))
        if n <= len(order):
            chosen = order[:n]
            # Accept only if every chosen |q| lies inside the largest fully enumerated circle.
            covered = np.sqrt(np.sum(G[-1] ** 2)) - np.max(np.sqrt(np.sum(k**2, axis=-1)))
            if np.sqrt(norm[chosen[-1]]) <= covered + 1e-9:
                return kk[chosen], GG[chosen]
        shells += 1


def _check_commensurate(supercell: Supercell, k: np.ndarray) -> None:
    n = np.asarray(k) @ supercell.cell.T / (2.0 * np.pi)
    if not np.allclose(n, np.round(n), atol=1e-6):
        raise ValueError("envelope momenta must lie on the supercell k-grid (k·T_a ∈ 2πZ)")


def _waves(positions: Float[Array, "n 2"], vectors: Float[np.ndarray, "m 2"]) -> Complex[Array, "n m"]:
    phase = jnp.asarray(positions, dtype=jnp.float64) @ jnp.asarray(vectors).T  # real phases, then cos/sin
    return jax.lax.complex(jnp.cos(phase), jnp.sin(phase))


def _plane_wave_sum(
    coefficients: Complex[Array, "B j n_G"], k: Float[np.ndarray, "j 2"], G: Float[np.ndarray, "n_G 2"], positions: Float[Array, "n 2"]
) -> Complex[Array, "B n j"]:
    """f_bj(r_i) = Σ_G a_bj(G) exp(i(k_j + G)·r_i)."""
    return jnp.einsum("bjg,ng->bnj", coefficients, lattice_waves(positions, G, MOIRE_RECIPROCAL)) * _waves(positions, k)


def _plane_wave_jet(
    coefficients: Complex[Array, "B j n_G"], k: Float[np.ndarray, "j 2"], G: Float[np.ndarray, "n_G 2"], positions: Float[Array, "n 2"]
) -> tuple[Complex[Array, "B n j"], Complex[Array, "2 B n j"], Complex[Array, "B n j"]]:
    """(f, ∇f, ∇²f) of :func:`_plane_wave_sum` at every r_i (derivatives with respect to r_i).

    ∂_a f_j = i Σ_G a_j(G)(k_j+G)_a e^{…} and ∇² f_j = −Σ_G a_j(G)|k_j+G|² e^{…}:
    sums over G weighted by 1, G_a and |G|², combined with k_j.
    """
    weights = np.stack([np.ones(len(G)), G[:, 0], G[:, 1], np.sum(G**2, axis=-1)])  # (4, G)
    sums = jnp.einsum("bjg,sg,ng->sbnj", coefficients, jnp.asarray(weights), lattice_waves(positions, G, MOIRE_RECIPROCAL))  # (4, B, n, j)
    plain, along, squared = sums[0], sums[1:3], sums[3]
    k_wave = _waves(positions, k)
    kj = jnp.asarray(k.T)[:, None, None, :]  # (2, 1, 1, j)
    value = plain * k_wave
    gradient = 1j * (kj * plain + along) * k_wave
    k2 = jnp.asarray(np.sum(k**2, axis=-1))
    laplacian = -(k2 * plain + 2.0 * jnp.sum(kj * along, axis=0) + squared) * k_wave
    return value, gradient, laplacian


class Envelope(Protocol):
    """What the determinant head and its forward Laplacian need of an envelope: E_kij = e^k_j(r_i; c)."""

    @property
    def determinants(self) -> int: ...

    @property
    def n_orbitals(self) -> int: ...

    def __call__(self, positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None) -> Complex[Array, "K n n_orb"]: ...

    def jet(
        self, positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None
    ) -> tuple[Complex[Array, "K n n_orb"], Complex[Array, "2 K n n_orb"], Complex[Array, "K n n_orb"]]:
        """(E, ∂E/∂r_i, ∇²_i E): derivatives with respect to each row's own electron."""
        ...


class BlochEnvelope(eqx.Module):
    """K × n_orb periodic envelopes e^k_j(r; c) = Σ_G a^k_j(G; c) exp(i(k_j + G)·r) (dimensionless).

    With one anchor the coefficients do not depend on c. With several, each
    anchor a holds coefficients for one depth (normalised condition c₀ = x_a),
    and a(G; c) interpolates them in c₀ (clamped to the anchors' range): Bloch
    orbitals that follow the moiré depth. Initialised from the non-interacting
    Bloch orbitals at the anchor depths, this makes the non-interacting ground
    state of every depth representable from the start.

    ``interpolation``: "smooth" (default), the natural cubic spline through the
    anchors: C² in c₀, so ψ(V) has no kink at the anchors, where the
    transition finder looks for a change of slope; "linear", piecewise-linear
    hats (runs made before the spline; a kink at every interior anchor).
    """

    coefficients_re: Float[Array, "A K n_orb n_G"]
    coefficients_im: Float[Array, "A K n_orb n_G"]
    momenta: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    basis: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    anchors: tuple[float, ...] = eqx.field(static=True)
    interpolation: str = eqx.field(static=True)

    def __init__(
        self,
        momenta: Float[np.ndarray, "n_orb 2"],
        basis: Float[np.ndarray, "n_G 2"],
        coefficients: Complex[np.ndarray, "A n_orb n_G"] | Complex[np.ndarray, "n_orb n_G"],
        determinants: int,
        anchors: tuple[float, ...] = (0.0,),
        interpolation: str = "smooth",
    ):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"envelope interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        coefficients = np.asarray(coefficients, dtype=np.complex128)
        if coefficients.ndim == 2:
            coefficients = coefficients[None]
        if len(anchors) != coefficients.shape[0] or list(anchors) != sorted(anchors):
            raise ValueError("need one increasing anchor position per set of envelope coefficients")
        a = coefficients.shape[0]
        coefficients = np.broadcast_to(coefficients[:, None], (a, determinants, *coefficients.shape[1:]))
        self.coefficients_re = jnp.asarray(coefficients.real, dtype=jnp.float64)
        self.coefficients_im = jnp.asarray(coefficients.imag, dtype=jnp.float64)
        self.momenta = static_matrix(momenta)
        self.basis = static_matrix(basis)
        self.anchors = tuple(float(x) for x in anchors)
        self.interpolation = interpolation

    @property
    def k(self) -> Float[np.ndarray, "n_orb 2"]:
        return np.asarray(self.momenta, dtype=np.float64).reshape(-1, 2)

    @property
    def G(self) -> Float[np.ndarray, "n_G 2"]:
        return np.asarray(self.basis, dtype=np.float64).reshape(-1, 2)

    @property
    def determinants(self) -> int:
        return self.coefficients_re.shape[1]

    @property
    def n_orbitals(self) -> int:
        return self.coefficients_re.shape[2]

    def anchor_weights(self, c0: Float[Array, ""]) -> Float[Array, " A"]:
        """Interpolation weights of the anchors at normalised c₀ (they sum to 1; weight a is 1 at anchor a)."""
        return anchor_weights(self.anchors, self.interpolation, c0)

    def mixed_coefficients(self, c0: Float[Array, ""] | None = None) -> Complex[Array, "K n_orb n_G"]:
        """a^k_j(G; c₀): the anchors' coefficients interpolated at normalised depth c₀."""
        if len(self.anchors) == 1:
            re, im = self.coefficients_re[0], self.coefficients_im[0]
        else:
            if c0 is None:
                raise ValueError("depth-following envelopes need the normalised condition c0")
            w = self.anchor_weights(jnp.asarray(c0, jnp.float64))
            re = jnp.tensordot(w, self.coefficients_re, axes=1)
            im = jnp.tensordot(w, self.coefficients_im, axes=1)
        return jax.lax.complex(re, im)

    def __call__(self, positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None) -> Complex[Array, "K n n_orb"]:
        return _plane_wave_sum(self.mixed_coefficients(c0), self.k, self.G, positions)

    def jet(self, positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None):
        """(E, ∂E/∂r_i, ∇²_i E), shapes (K, n, j), (2, K, n, j), (K, n, j)."""
        return _plane_wave_jet(self.mixed_coefficients(c0), self.k, self.G, positions)


class Frozen:
    """A constant array held in a static field, out of the trainable parameters (hashed and compared by identity)."""

    __slots__ = ("value",)

    def __init__(self, value: np.ndarray):
        self.value = np.asarray(value)


class BandMixingEnvelope(eqx.Module):
    """e^k_j(r; c) = Σ_m U^k_jm(c) β_m(r; c): trained mixtures of fixed Bloch band states β_m (dimensionless).

    The β_m are the lowest bands at every supercell momentum (M = bands·L1·L2
    states: non-interacting eigenstates at each anchor depth, on the same
    plane waves G as the Bloch envelopes). Each orbital may mix states of
    different momenta, so ψ is not confined to the total crystal momentum of
    its initial filling and can describe a crystal that breaks the moiré
    translations (localised, Wannier-like orbitals); only the n_orb × M
    mixing matrix is trained, so the orbitals stay in the span of smooth band
    states. Initialised to select the occupied Bloch orbitals: ψ starts as
    with fixed momenta. With several anchors, Σ_a w_a(c₀) U_a β_a (weights as
    in :class:`BlochEnvelope`). Evaluation costs n·M·n_G for the β_m and
    n·M·K·n_orb for the mixing, per anchor.
    """

    mixing_re: Float[Array, "A K n_orb M"]
    mixing_im: Float[Array, "A K n_orb M"]
    states: Frozen = eqx.field(static=True)  # (A, M, n_G) complex: β_m = e^{ik_m·r} Σ_G c_m(G) e^{iG·r}
    momenta: tuple[tuple[float, ...], ...] = eqx.field(static=True)  # k_m, (M, 2)
    basis: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    anchors: tuple[float, ...] = eqx.field(static=True)
    interpolation: str = eqx.field(static=True)

    def __init__(
        self,
        momenta: Float[np.ndarray, "M 2"],
        basis: Float[np.ndarray, "n_G 2"],
        states: Complex[np.ndarray, "A M n_G"],
        mixing: Complex[np.ndarray, "A n_orb M"],
        determinants: int,
        anchors: tuple[float, ...] = (0.0,),
        interpolation: str = "smooth",
    ):
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"envelope interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        mixing = np.asarray(mixing, dtype=np.complex128)
        if len(anchors) != mixing.shape[0] or np.shape(states)[0] != mixing.shape[0]:
            raise ValueError("need one mixing matrix and one set of band states per anchor")
        mixing = np.broadcast_to(mixing[:, None], (mixing.shape[0], determinants, *mixing.shape[1:]))
        self.mixing_re = jnp.asarray(mixing.real, dtype=jnp.float64)
        self.mixing_im = jnp.asarray(mixing.imag, dtype=jnp.float64)
        self.states = Frozen(np.asarray(states, dtype=np.complex128))
        self.momenta = static_matrix(momenta)
        self.basis = static_matrix(basis)
        self.anchors = tuple(float(x) for x in anchors)
        self.interpolation = interpolation

    @property
    def determinants(self) -> int:
        return self.mixing_re.shape[1]

    @property
    def n_orbitals(self) -> int:
        return self.mixing_re.shape[2]

    def _weighted_mixing(self, c0: Float[Array, ""] | None) -> Complex[Array, "A K n_orb M"]:
        mixing = jax.lax.complex(self.mixing_re, self.mixing_im)
        if len(self.anchors) == 1:
            return mixing
        if c0 is None:
            raise ValueError("depth-following envelopes need the normalised condition c0")
        w = anchor_weights(self.anchors, self.interpolation, jnp.asarray(c0, jnp.float64))
        return w.astype(mixing.dtype)[:, None, None, None] * mixing

    def _band_parts(self, positions: Float[Array, "n 2"], derivatives: bool) -> tuple:
        k = np.asarray(self.momenta, dtype=np.float64).reshape(-1, 2)
        G = np.asarray(self.basis, dtype=np.float64).reshape(-1, 2)
        states = jnp.asarray(self.states.value)
        return _plane_wave_jet(states, k, G, positions) if derivatives else (_plane_wave_sum(states, k, G, positions),)

    def __call__(self, positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None) -> Complex[Array, "K n n_orb"]:
        (beta,) = self._band_parts(positions, False)  # (A, n, M)
        return jnp.einsum("akjm,anm->knj", self._weighted_mixing(c0), beta)

    def jet(self, positions: Float[Array, "n 2"], c0: Float[Array, ""] | None = None):
        """(E, ∂E/∂r_i, ∇²_i E), shapes (K, n, j), (2, K, n, j), (K, n, j): the band states' jets, mixed."""
        beta, d_beta, lap_beta = self._band_parts(positions, True)
        u = self._weighted_mixing(c0)
        return (
            jnp.einsum("akjm,anm->knj", u, beta),
            jnp.einsum("akjm,danm->dknj", u, d_beta),
            jnp.einsum("akjm,anm->knj", u, lap_beta),
        )


def initial_envelope(
    supercell: Supercell,
    n_s: int,
    determinants: int,
    envelope_shells: int,
    orbitals: BlochOrbitals | Sequence[BlochOrbitals] | None,
    anchors: tuple[float, ...] = (0.0,),
    interpolation: str = "smooth",
    band_states: Sequence[BandStates] | None = None,
) -> BlochEnvelope | BandMixingEnvelope:
    """Free-electron plane waves (default) or the first n_s of the given Bloch orbitals (per anchor).

    ``band_states`` (one set per anchor, Bloch orbitals only): a
    :class:`BandMixingEnvelope` over these states, starting as the same orbitals.
    """
    if orbitals is None:
        k, G_occ = lowest_plane_waves(supercell, n_s)
        basis = plane_wave_basis(envelope_shells)
        extra = [g for g in G_occ if not np.any(np.all(np.isclose(basis, g, atol=1e-8), axis=-1))]
        if extra:
            basis = np.concatenate([basis, np.unique(np.round(np.array(extra), 10), axis=0)])
        match = np.all(np.isclose(basis[None, :, :], G_occ[:, None, :], atol=1e-8), axis=-1)
        coefficients = match.astype(np.complex128)  # a_j(G) = δ_{G, G_j}
        _check_commensurate(supercell, k)
        if band_states is not None:
            raise ValueError("band-mixing envelopes start from Bloch orbitals, not plane waves")
        return BlochEnvelope(k, basis, coefficients, determinants)
    per_anchor = list(orbitals) if isinstance(orbitals, (tuple, list)) else [orbitals]
    if len(per_anchor) != len(anchors):
        raise ValueError(f"need one set of Bloch orbitals per envelope anchor, got {len(per_anchor)} for {len(anchors)}")
    k = np.asarray(per_anchor[0].k, dtype=np.float64)
    basis = np.asarray(per_anchor[0].G, dtype=np.float64)
    if k.shape[0] < n_s:
        raise ValueError(f"need at least {n_s} Bloch orbitals, got {k.shape[0]}")
    stacked = []
    for orbs in per_anchor:
        if not (np.allclose(orbs.k[:n_s], k[:n_s]) and np.shape(orbs.G) == basis.shape):
            raise ValueError("all anchors need the same momenta and plane-wave basis")
        stacked.append(np.asarray(orbs.coefficients, dtype=np.complex128)[:n_s])
    coefficients = np.stack(stacked)
    # Scale so the largest envelope amplitude is O(1), whatever the orbitals' normalisation.
    coefficients = coefficients / np.max(np.sum(np.abs(coefficients), axis=-1))
    k = k[:n_s]
    _check_commensurate(supercell, k)
    if band_states is None:
        return BlochEnvelope(k, basis, coefficients, determinants, tuple(anchors), interpolation)
    if len(band_states) != len(anchors):
        raise ValueError(f"need one set of band states per envelope anchor, got {len(band_states)} for {len(anchors)}")
    states, mixing = [], []
    for occupied, bands in zip(coefficients, band_states):
        if np.shape(bands.G) != basis.shape or not np.allclose(bands.G, basis):
            raise ValueError("band states and Bloch orbitals need the same plane-wave basis")
        n_k, n_b, n_G = np.shape(bands.coefficients)
        momenta = np.repeat(np.asarray(bands.k), n_b, axis=0)  # (M, 2), band index fastest
        beta = np.asarray(bands.coefficients).reshape(n_k * n_b, n_G)
        same_k = np.all(np.isclose(k[:, None, :], momenta[None, :, :], atol=1e-9), axis=-1)  # (n_s, M)
        states.append(beta)
        mixing.append(same_k * (occupied @ beta.conj().T))  # projection onto the band states (exact when they hold the orbitals)
    return BandMixingEnvelope(momenta, basis, np.stack(states), np.stack(mixing), determinants, tuple(anchors), interpolation)


class BandStates(Protocol):
    """Bloch band states at every supercell momentum (e.g. ``hamiltonian.bands.BandStructure``): k (n_k, 2), G (n_G, 2), coefficients (n_k, n_bands, n_G)."""

    k: np.ndarray
    G: np.ndarray
    coefficients: np.ndarray
