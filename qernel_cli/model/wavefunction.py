"""The conditioned neural wavefunction ψ_θ(r_1..r_N; c) (built for a config by ``model.build.make_wavefunction``).

``Wavefunction(positions, conditions)`` returns the complex scalar
log ψ = log|ψ| + i arg ψ for one configuration:

* positions: (N, 2) Cartesian, moiré units (a_M = 1), anywhere on the plane
  (ψ is periodic on the L1 × L2 supercell); electrons 0..n_up-1 are spin up,
  the rest spin down;
* conditions: (n_conditions,) Hamiltonian parameters, for now c = [V/E_M]. They
  are mapped to O(1) by the fixed affine map (c - centre)/scale given at
  construction; later parameters (φ, U, ν) are appended as more entries.

c enters only through FiLM, the MoE router (which sees c alone) and, for
depth-following envelopes, the interpolation between Bloch-envelope anchors.

Pipeline: periodic features → token embedding (+ spin) → transformer trunk
(GQA + MoE, FiLM by c) → generalised orbitals × Bloch envelopes → K
block-diagonal determinants (complex128) → complex logsumexp → + cusp Jastrow.
The trunk computes in ``dtype`` (float32 or float64); envelopes, determinants
and the Jastrow always in float64. vmap over walkers, e.g.
``jax.vmap(model, in_axes=(0, None))`` for walkers sharing one c.
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float, PRNGKeyArray

from qernel_cli.lattice import Supercell
from qernel_cli.model.block import Trunk
from qernel_cli.model.features import PeriodicFeatures
from qernel_cli.model.jastrow import CuspJastrow, JastrowFactor
from qernel_cli.model.pair_jastrow import PairJastrow
from qernel_cli.model.radial_jastrow import RadialJastrow
from qernel_cli.model.linear import split
from qernel_cli.model.moe import load_balance
from qernel_cli.model.envelopes import BandStates, BlochOrbitals
from qernel_cli.model.jet import Jet
from qernel_cli.model.orbitals import GeneralisedOrbitals

_DTYPES = {"float32": jnp.float32, "float64": jnp.float64}


def _condition_map(
    n_conditions: int, centre: Sequence[float] | None, scale: Sequence[float] | None
) -> tuple[Float[np.ndarray, " c"], Float[np.ndarray, " c"]]:
    """The affine map c ↦ (c − centre)/scale as arrays (defaults 0 and 1), checked."""
    centre = np.zeros(n_conditions) if centre is None else np.asarray(centre, dtype=np.float64)
    scale = np.ones(n_conditions) if scale is None else np.asarray(scale, dtype=np.float64)
    if centre.shape != (n_conditions,) or scale.shape != (n_conditions,):
        raise ValueError(f"condition_centre and condition_scale need {n_conditions} entries")
    if not np.all(np.isfinite(scale) & (scale != 0)):
        raise ValueError(f"condition_scale must be finite and non-zero, got {scale.tolist()}")
    return centre, scale


class Wavefunction(eqx.Module):
    """Complex log ψ_θ(r; c) of N electrons on a moiré supercell, conditioned on c.

    Built with random weights from these arguments:

    Args:
        supercell: the periodic cell (moiré units).
        n_up, n_down: electrons per spin (up first in ``positions``).
        n_conditions: length of c.
        condition_centre, condition_scale: fixed affine normalisation of c
            (defaults 0 and 1); each scale must be non-zero.
        layers..film_hidden: trunk sizes (see ``ModelConfig``); ``top_k``
            keeps only the k most probable experts per c (None = all, dense).
        determinants: K.
        jastrow: include the cusp Jastrow (with cusp slope ``coulomb_strength``,
            U = a_M/a_B*; U = 0 makes it identically 1).
        envelope_shells: plane-wave cutoff |G| ≤ envelope_shells·|b| of the
            free-electron envelopes (Bloch ones bring their own G).
        orbitals: optional Bloch orbitals to initialise the envelopes from:
            one set (the first n_up / n_down of them per spin block) or a
            pair (up, down), e.g. ``hamiltonian.bands.lowest_orbitals``;
            for depth-following envelopes each set is a sequence with one
            set per anchor (see ``envelope_anchors``).
        envelope_anchors: normalised depths c₀ = (v − centre)/scale of the
            anchors (one entry: envelopes independent of c).
        envelope_interpolation: "smooth" (natural cubic spline in c₀) or
            "linear" between the anchors (see ``BlochEnvelope``).
        band_states: with Bloch ``orbitals``, one set of band states per
            anchor (e.g. ``hamiltonian.bands.solve_bands`` on the same
            plane waves): band-mixing envelopes whose orbitals may mix
            crystal momenta (``BandMixingEnvelope``); None: each orbital
            keeps its Bloch momentum.
        pair_jastrow_qmax: cutoff (units of |g|) of the c-conditioned
            plane-wave pair Jastrow (0: none); see ``model.pair_jastrow``.
        radial_jastrow: Gaussians per pair type of the c-conditioned
            short-range radial pair Jastrow (0: none); see ``model.radial_jastrow``.
        dtype: "float32" or "float64" for the trunk.
    """

    features: PeriodicFeatures
    trunk: Trunk
    orbitals: GeneralisedOrbitals
    jastrow: CuspJastrow | None
    pair_jastrow: PairJastrow | None
    radial_jastrow: RadialJastrow | None
    supercell: Supercell = eqx.field(static=True)
    n_up: int = eqx.field(static=True)
    n_down: int = eqx.field(static=True)
    condition_centre: tuple[float, ...] = eqx.field(static=True)
    condition_scale: tuple[float, ...] = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __init__(
        self,
        supercell: Supercell,
        n_up: int,
        n_down: int = 0,
        *,
        n_conditions: int = 1,
        condition_centre: Sequence[float] | None = None,
        condition_scale: Sequence[float] | None = None,
        layers: int = 2,
        width: int = 32,
        heads: int = 4,
        kv_heads: int = 2,
        mlp_width: int = 64,
        experts: int = 2,
        top_k: int | None = None,
        determinants: int = 2,
        harmonics: int = 2,
        film_hidden: int = 32,
        jastrow: bool = True,
        coulomb_strength: float = 0.0,
        envelope_shells: int = 2,
        orbitals: BlochOrbitals | tuple[BlochOrbitals, BlochOrbitals] | None = None,
        envelope_anchors: Sequence[float] = (0.0,),
        envelope_interpolation: str = "smooth",
        band_states: Sequence[BandStates] | None = None,
        pair_jastrow_qmax: float = 0.0,
        radial_jastrow: int = 0,
        dtype: str = "float64",
        key: PRNGKeyArray,
    ):
        """Build with random weights (arguments: see the class)."""
        if n_up < 0 or n_down < 0 or n_up + n_down < 1:
            raise ValueError(f"need n_up, n_down ≥ 0 and at least one electron, got {n_up}, {n_down}")
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        centre, scale = _condition_map(n_conditions, condition_centre, condition_scale)
        k_trunk, k_orb = split(key, 2)
        real = _DTYPES[dtype]
        self.features = PeriodicFeatures(supercell, harmonics)
        self.trunk = Trunk(
            n_features=self.features.size, n_conditions=n_conditions, layers=layers, width=width, heads=heads, kv_heads=kv_heads,
            mlp_width=mlp_width, experts=experts, film_hidden=film_hidden, top_k=top_k, dtype=real, key=k_trunk,
        )
        self.orbitals = GeneralisedOrbitals(
            supercell, n_up, n_down, width=width, determinants=determinants, envelope_shells=envelope_shells, orbitals=orbitals,
            anchors=tuple(envelope_anchors), interpolation=envelope_interpolation, band_states=band_states, dtype=real, key=k_orb,
        )
        self.jastrow = CuspJastrow(supercell, n_up, n_down, coulomb_strength) if jastrow else None
        self.pair_jastrow = (
            PairJastrow(supercell, n_conditions, pair_jastrow_qmax, key=jax.random.fold_in(key, 7)) if pair_jastrow_qmax > 0 else None
        )
        self.radial_jastrow = (
            RadialJastrow(supercell, n_up, n_down, n_conditions, radial_jastrow, key=jax.random.fold_in(key, 11))
            if radial_jastrow > 0
            else None
        )
        self.supercell = supercell
        self.n_up, self.n_down = int(n_up), int(n_down)
        self.condition_centre = tuple(float(v) for v in centre)
        self.condition_scale = tuple(float(v) for v in scale)
        self.dtype = dtype

    # ------------------------------------------------------------------

    @property
    def n_electrons(self) -> int:
        return self.n_up + self.n_down

    @property
    def n_conditions(self) -> int:
        return len(self.condition_centre)

    @property
    def spins(self) -> np.ndarray:
        """0 for spin up, 1 for spin down, per electron."""
        return np.array([0] * self.n_up + [1] * self.n_down, dtype=np.int32)

    def jastrow_factors(self) -> tuple[JastrowFactor, ...]:
        """The Jastrow factors present (cusp, plane-wave pair, radial pair), in the order log ψ adds them."""
        return tuple(f for f in (self.jastrow, self.pair_jastrow, self.radial_jastrow) if f is not None)

    def normalise(self, conditions: Float[Array, " n_conditions"]) -> Float[Array, " n_conditions"]:
        """c → (c - centre)/scale (dimensionless, O(1) on the training range)."""
        conditions = jnp.asarray(conditions, dtype=jnp.float64).reshape(self.n_conditions)
        return (conditions - np.asarray(self.condition_centre)) / np.asarray(self.condition_scale)

    def hidden(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Float[Array, "n width"]:
        """The trunk's per-electron output features (permutation equivariant)."""
        features = self.features(positions).astype(_DTYPES[self.dtype])
        return self.trunk(features, self.spins, self.normalise(conditions))

    def orbital_matrices(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]
    ) -> tuple[Complex[Array, "K m m"], ...]:
        """Generalised orbital matrices Φ^k_ij per spin block (up first; rows electrons), e.g. for pre-training."""
        positions = jnp.asarray(positions, dtype=jnp.float64)
        return self.orbitals.matrices(self.hidden(positions, conditions), positions, self.normalise(conditions)[0])

    def _determinant_parts(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]
    ) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """(log|D|, arg D) of the determinant part D (ψ without its Jastrow factors)."""
        return self.orbitals(self.hidden(positions, conditions), positions, self.normalise(conditions)[0])

    def determinant_log_psi(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Complex[Array, ""]:
        """log of the determinant part alone (ψ without its Jastrow factors), complex128: what pre-training fits."""
        return jax.lax.complex(*self._determinant_parts(jnp.asarray(positions, dtype=jnp.float64), conditions))

    def log_psi_parts(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]
    ) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """(log|ψ|, arg ψ) as two real float64 scalars."""
        positions = jnp.asarray(positions, dtype=jnp.float64)
        logabs, phase = self._determinant_parts(positions, conditions)
        c = self.normalise(conditions)
        for factor in self.jastrow_factors():
            logabs = logabs + factor(positions, c)
        return logabs, phase

    def __call__(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Complex[Array, ""]:
        """log ψ = log|ψ| + i arg ψ (complex128 scalar)."""
        logabs, phase = self.log_psi_parts(positions, conditions)
        return jax.lax.complex(logabs, phase)

    def trunk_jet(self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"]) -> Jet:
        """Jet of :meth:`hidden` over the 2n coordinates (t = 2p + a: electron p, Cartesian a)."""
        positions = jnp.asarray(positions, dtype=jnp.float64)
        return self.trunk.jet(self.features.jet(positions), self.spins, self.normalise(conditions))

    def forward_laplacian(
        self, positions: Float[Array, "n 2"], conditions: Float[Array, " n_conditions"], sparsity_threshold: float = 0.0
    ) -> tuple[Complex[Array, ""], Complex[Array, "n 2"]]:
        """(∇² log ψ, ∇ log ψ) in 1/a_M², 1/a_M (complex), by every part's own jet.

        The trunk by ``Trunk.jet`` (each layer's rule beside the layer), the head
        by ``GeneralisedOrbitals.jet``, the Jastrow factors by their closed forms
        (``laplacian_and_gradient``); equal to folx's forward Laplacian of
        ``self(positions, conditions)`` (tested to 1e-10 in float64).
        ``sparsity_threshold`` > 0 asks for folx's sparse forward Laplacian of
        the whole log ψ instead (``training.laplacian_sparsity``).
        """
        if sparsity_threshold > 0:
            from qernel_cli.hamiltonian.local_energy import laplacian_and_gradient

            return laplacian_and_gradient(lambda y: self(y, conditions), positions, "folx", sparsity_threshold=sparsity_threshold)
        positions = jnp.asarray(positions, dtype=jnp.float64)
        n = positions.shape[0]
        c = self.normalise(conditions)
        lap_psi, grad_psi = self.orbitals.jet(self.trunk_jet(positions, conditions), positions, c[0])
        grad_psi = grad_psi.reshape(n, 2)
        for factor in self.jastrow_factors():
            lap_j, grad_j = factor.laplacian_and_gradient(positions, c)
            lap_psi, grad_psi = lap_psi + lap_j, grad_psi + grad_j
        return lap_psi, grad_psi

    def at(self, conditions: Float[Array, " n_conditions"]) -> "AtConditions":
        """log ψ(·; c) as a function of positions alone that keeps the fast forward Laplacian."""
        return AtConditions(self, conditions)

    # ------------------------------------------------------------------

    def gate_probabilities(self, conditions: Float[Array, "batch n_conditions"]) -> Float[Array, "batch layers experts"]:
        """Dense MoE gate probabilities per block for a batch of (unnormalised) conditions."""
        return jax.vmap(lambda c: self.trunk.gate_probabilities(self.normalise(c)))(jnp.atleast_2d(conditions))

    def load_balance(self, conditions: Float[Array, "batch n_conditions"]) -> dict[str, Array]:
        """Per-block load-balancing statistics (see ``moe.load_balance``) over a batch of conditions.

        Every entry gets a leading ``layers`` axis.
        """
        probs = self.gate_probabilities(conditions)  # (batch, layers, experts)
        return jax.vmap(load_balance, in_axes=1)(probs)


class AtConditions(eqx.Module):
    """A wavefunction at fixed conditions c: positions (N, 2) → complex log ψ, with its forward Laplacian."""

    model: Wavefunction
    conditions: Float[Array, " n_conditions"]

    def __call__(self, positions: Float[Array, "n 2"]) -> Complex[Array, ""]:
        return self.model(positions, self.conditions)

    def forward_laplacian(
        self, positions: Float[Array, "n 2"], sparsity_threshold: float = 0.0
    ) -> tuple[Complex[Array, ""], Complex[Array, "n 2"]]:
        return self.model.forward_laplacian(positions, self.conditions, sparsity_threshold)
