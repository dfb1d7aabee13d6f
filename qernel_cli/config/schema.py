"""The run configuration's schema: one frozen dataclass per section, and :class:`Config`.

Physical inputs are in physical units (nm, meV, degrees, m_e); conversion to
moiré units happens in :mod:`qernel_cli.units`. Every field's annotation is
its type, checked when a config is built from data (:mod:`.coercion`);
building a :class:`Config` validates it (:mod:`.validation`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

import tomli_w

from qernel_cli.config.validation import validate
from qernel_cli.units import Material

if TYPE_CHECKING:
    from qernel_cli.lattice import Supercell


@dataclasses.dataclass(frozen=True)
class MaterialConfig:
    """Material in physical units: moiré period (nm), effective mass (m_e), dielectric constant, phase (deg)."""

    a_M_nm: float = 8.031
    m_star: float = 0.35
    epsilon: float = 5.0
    phi_deg: float = 45.0


@dataclasses.dataclass(frozen=True)
class SupercellConfig:
    """Periodic supercell of L1 × L2 moiré cells."""

    L1: int = 3
    L2: int = 3


@dataclasses.dataclass(frozen=True)
class ElectronsConfig:
    """Electron numbers per spin; ``filling`` (optional, e.g. "2/3") is checked against N/(L1·L2)."""

    n_up: int = 6
    n_down: int = 0
    filling: str = ""


@dataclasses.dataclass(frozen=True)
class HamiltonianConfig:
    """The family of Hamiltonians: moiré depths V (meV) used in training; Coulomb on/off."""

    V_min_meV: float = 0.0
    V_max_meV: float = 30.0
    coulomb: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Wavefunction size: transformer trunk (GQA + MoE + FiLM) and determinant head.

    ``envelope``: initialise the orbital envelopes from the non-interacting Bloch
    orbitals at the middle of the depth range ("bloch") or from free-electron
    plane waves; ``envelope_shells``: moiré reciprocal-vector shells of the envelopes;
    ``envelope_anchors``: depths (evenly spaced over the range) at which Bloch
    envelopes are anchored and between which they are interpolated (1: fixed);
    ``envelope_interpolation``: "smooth" (natural cubic spline in V: no kink
    at the anchors) or "linear" (piecewise linear, as in runs made before the
    spline; their stored configs lack the key and are read as "linear");
    ``envelope_momenta``: "fixed" (orbital j keeps the Bloch momentum k_j of its
    initial envelope, so ψ keeps the total crystal momentum of that filling) or
    "mixed" (each envelope is a trained mixture of the lowest
    ``envelope_bands`` Bloch bands at every supercell momentum: ψ may take
    another total momentum or break the translations, as a crystal does;
    ``envelope_bands`` is used only then);
    ``pair_jastrow_qmax``: cutoff (units of the shortest moiré reciprocal vector
    |g|) of the c-conditioned plane-wave pair Jastrow (0: off);
    ``radial_jastrow``: Gaussians exp(−d²/w_k²), w_k = 0.1·2^k a_M, per pair
    type of the c-conditioned short-range radial pair Jastrow (0: off).
    """

    layers: int = 2
    width: int = 32
    heads: int = 4
    kv_heads: int = 2
    mlp_width: int = 64
    experts: int = 2
    determinants: int = 2
    harmonics: int = 2
    film_hidden: int = 32
    jastrow: bool = True
    envelope: Literal["bloch", "plane-wave"] = "bloch"
    envelope_shells: int = 3
    envelope_anchors: int = 3
    envelope_interpolation: Literal["smooth", "linear"] = "smooth"
    envelope_momenta: Literal["fixed", "mixed"] = "fixed"
    envelope_bands: int = 2
    pair_jastrow_qmax: float = 0.0
    radial_jastrow: int = 0
    dtype: Literal["float32", "float64"] = "float64"


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Metropolis sampler: walkers, steps between updates, burn-in, initial move width (a_M).

    ``lattice_hops``: after every Gaussian move, propose a nearest-neighbour
    moiré-lattice hop of one electron (keeps deep-potential chains ergodic).
    """

    walkers: int = 256
    steps_per_iteration: int = 10
    burn_in: int = 100
    move_width: float = 0.2
    target_acceptance: float = 0.5
    lattice_hops: bool = True


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimiser: SPRING natural gradient (default) or Adam; learning rate schedule lr/(1 + step/decay).

    The gradient sees local energies clipped to median ± ``clip_mad``·MAD per
    depth group, MAD the median (``clip_deviation = "median"``) or the mean
    (``"mean"``, FermiNet's convention, wider for heavy tails) of |E_L − median|.
    """

    name: Literal["spring", "adam"] = "spring"
    learning_rate: float = 0.005
    lr_decay_steps: float = 1000.0
    damping: float = 0.1
    momentum: float = 0.9
    max_norm: float = 0.1
    clip_mad: float = 5.0
    clip_deviation: Literal["median", "mean"] = "median"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Supervised pre-training (fidelity) on a reference determinant at the drawn depths.

    ``target``: "bloch", the non-interacting Bloch determinant (the liquid), or
    "crystal", Gaussians on the classical Coulomb ground state of the moiré
    sites (see ``qernel_cli.vmc.crystal``), or "both": two runs of the same
    model, one from each start (the branch protocol, ``qernel_cli.stores.branches``).
    """

    steps: int = 200
    learning_rate: float = 3e-4
    target: Literal["bloch", "crystal", "both"] = "bloch"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Training loop: optimisation steps, depths drawn per step, seed, checkpoint interval (minutes).

    ``evaluate_start``: measure the energies after pre-training (before VMC) at
    the evaluation depths, so the summary shows what VMC gained.
    ``walker_chunk``: evaluate local energies and log-derivatives this many
    walkers (per device) at a time, which bounds memory for any walker count
    (0: all walkers at once).
    ``evaluate_blocks``: blocks of ``sampler.steps_per_iteration`` sweeps in
    the start and final energy evaluations (errors from their spread).
    ``laplacian_sparsity``: 0 (default) uses QERNEL's own forward Laplacian
    (hand-written jets of trunk, determinant head and Jastrows); a threshold
    in (0, 1] uses folx's generic forward Laplacian of the whole log ψ with
    that sparsity threshold instead (~0.6 uses the per-electron sparsity of
    the first layers; slower than the default and twice the compile time).
    """

    steps: int = 500
    depths_per_step: int = 4
    seed: int = 0
    checkpoint_minutes: float = 5.0
    evaluate_start: bool = True
    walker_chunk: int = 0
    laplacian_sparsity: float = 0.0
    evaluate_blocks: int = 20


@dataclasses.dataclass(frozen=True)
class Config:
    """A complete, validated run configuration."""

    description: str = ""
    material: MaterialConfig = MaterialConfig()
    supercell: SupercellConfig = SupercellConfig()
    electrons: ElectronsConfig = ElectronsConfig()
    hamiltonian: HamiltonianConfig = HamiltonianConfig()
    model: ModelConfig = ModelConfig()
    sampler: SamplerConfig = SamplerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    pretrain: PretrainConfig = PretrainConfig()
    training: TrainingConfig = TrainingConfig()

    def __post_init__(self):
        validate(self)

    # Derived quantities -------------------------------------------------

    @property
    def n_electrons(self) -> int:
        return self.electrons.n_up + self.electrons.n_down

    @property
    def supercell_geometry(self) -> Supercell:
        from qernel_cli.lattice import Supercell  # imports JAX: not needed to read or print a config

        return Supercell(self.supercell.L1, self.supercell.L2)

    @property
    def filling(self) -> float:
        return self.n_electrons / (self.supercell.L1 * self.supercell.L2)

    @property
    def material_units(self) -> Material:
        m = self.material
        return Material(a_M_nm=m.a_M_nm, m_star=m.m_star, epsilon=m.epsilon, phi_deg=m.phi_deg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())
