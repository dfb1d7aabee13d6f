"""Physical and structural consistency checks of a :class:`~qernel_cli.config.Config`.

The sections are checked in a fixed order (material, supercell, electrons,
hamiltonian, model, sampler, optimizer, pretrain, training) and the first
problem found is raised as a one-line :class:`ConfigError`.
"""

from __future__ import annotations

import fractions
from typing import TYPE_CHECKING

from qernel_cli.config.errors import ConfigError, _short

if TYPE_CHECKING:
    from qernel_cli.config.schema import (
        Config,
        ElectronsConfig,
        HamiltonianConfig,
        MaterialConfig,
        ModelConfig,
        OptimizerConfig,
        PretrainConfig,
        SamplerConfig,
        SupercellConfig,
        TrainingConfig,
    )

_MODEL_SIZES = (
    "layers", "width", "heads", "kv_heads", "mlp_width", "experts", "determinants", "harmonics", "film_hidden",
    "envelope_shells", "envelope_anchors", "envelope_bands",
)


def validate(config: Config) -> None:
    """Physical and structural consistency checks; raises :class:`ConfigError`."""
    _check_material(config.material)
    _check_supercell(config.supercell)
    _check_electrons(config.electrons, config.supercell)
    _check_hamiltonian(config.hamiltonian)
    _check_model(config.model, config.electrons, config.supercell)
    _check_sampler(config.sampler)
    _check_optimizer(config.optimizer)
    _check_pretrain(config.pretrain, config.model, config.electrons)
    _check_training(config.training)


def _positive_integers(section: str, values: object, names: tuple[str, ...]) -> None:
    """Each of ``names`` in the section is at least 1 (the first that is not is the error)."""
    for name in names:
        if getattr(values, name) < 1:
            raise ConfigError(f"{section}.{name}: must be a positive integer, got {getattr(values, name)!r}")


def _check_material(m: MaterialConfig) -> None:
    """Period (nm), effective mass (m_e) and dielectric constant are positive."""
    for name in ("a_M_nm", "m_star", "epsilon"):
        if not getattr(m, name) > 0:
            raise ConfigError(f"material.{name}: must be positive, got {getattr(m, name)!r}")


def _check_supercell(sc: SupercellConfig) -> None:
    _positive_integers("supercell", sc, ("L1", "L2"))


def _check_electrons(el: ElectronsConfig, sc: SupercellConfig) -> None:
    """Electron numbers per spin, then the stated filling against N/(L1·L2)."""
    for name in ("n_up", "n_down"):
        if getattr(el, name) < 0:
            raise ConfigError(f"electrons.{name}: must be non-negative, got {getattr(el, name)!r}")
    n = el.n_up + el.n_down
    if n < 1:
        raise ConfigError(f"electrons: need at least one electron, got n_up={el.n_up}, n_down={el.n_down}")
    if el.filling:
        _check_filling(el.filling, n, sc)


def _check_filling(filling: str, n: int, sc: SupercellConfig) -> None:
    """``filling`` (a fraction ν) fits the L1 × L2 supercell and gives ``n`` electrons."""
    try:
        nu = fractions.Fraction(filling)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"electrons.filling: expected a fraction like '2/3', got {filling!r}") from None
    if nu <= 0:
        raise ConfigError(f"electrons.filling: must be positive, got {filling!r}")
    expected = nu * sc.L1 * sc.L2
    if expected.denominator != 1:
        raise ConfigError(
            f"electrons.filling: ν = {filling} does not fit the {sc.L1}×{sc.L2} supercell "
            f"(ν·L1·L2 = {float(expected):g} is not an integer)"
        )
    if int(expected) != n:
        raise ConfigError(
            f"electrons.filling: ν = {filling} on {sc.L1}×{sc.L2} needs N = {_short(int(expected))} electrons, "
            f"but n_up + n_down = {n}"
        )


def _check_hamiltonian(ham: HamiltonianConfig) -> None:
    """Depth range (meV): 0 ≤ V_min ≤ V_max."""
    if ham.V_min_meV < 0 or ham.V_max_meV < ham.V_min_meV:
        raise ConfigError(
            f"hamiltonian.V_max_meV: need 0 ≤ V_min_meV ≤ V_max_meV, got {ham.V_min_meV!r}..{ham.V_max_meV!r}"
        )


def _check_model(md: ModelConfig, el: ElectronsConfig, sc: SupercellConfig) -> None:
    """Sizes, Jastrow ranges, envelope options (against the electrons and supercell), head divisibility."""
    _positive_integers("model", md, _MODEL_SIZES)
    if not 0.0 <= md.pair_jastrow_qmax <= 5.0:
        raise ConfigError(f"model.pair_jastrow_qmax: must be between 0 (off) and 5 (units of |g|), got {md.pair_jastrow_qmax!r}")
    if not 0 <= md.radial_jastrow <= 8:
        raise ConfigError(f"model.radial_jastrow: must be between 0 (off) and 8 Gaussians, got {md.radial_jastrow!r}")
    if md.envelope_momenta == "mixed" and md.envelope != "bloch":
        raise ConfigError('model.envelope_momenta: "mixed" mixes Bloch bands; it needs model.envelope = "bloch"')
    if md.envelope_momenta == "mixed" and max(el.n_up, el.n_down) > md.envelope_bands * sc.L1 * sc.L2:
        raise ConfigError(
            f"model.envelope_bands: {md.envelope_bands} band(s) × {sc.L1 * sc.L2} momenta hold fewer "
            f"states than the {max(el.n_up, el.n_down)} electrons of one spin"
        )
    if md.heads % md.kv_heads:
        raise ConfigError(f"model.kv_heads: must divide model.heads={md.heads}, got {md.kv_heads}")
    if md.width % md.heads:
        raise ConfigError(f"model.heads: must divide model.width={md.width}, got {md.heads}")


def _check_sampler(sa: SamplerConfig) -> None:
    """Walkers, sweeps and burn-in counts; move width (a_M); target acceptance in (0, 1)."""
    _positive_integers("sampler", sa, ("walkers", "steps_per_iteration"))
    if sa.burn_in < 0:
        raise ConfigError(f"sampler.burn_in: must be non-negative, got {sa.burn_in!r}")
    if not sa.move_width > 0:
        raise ConfigError(f"sampler.move_width: must be positive, got {sa.move_width!r}")
    if not 0 < sa.target_acceptance < 1:
        raise ConfigError(f"sampler.target_acceptance: must lie in (0, 1), got {sa.target_acceptance!r}")


def _check_optimizer(op: OptimizerConfig) -> None:
    for name in ("learning_rate", "lr_decay_steps", "max_norm", "clip_mad"):
        if not getattr(op, name) > 0:
            raise ConfigError(f"optimizer.{name}: must be positive, got {getattr(op, name)!r}")
    if op.damping < 0:
        raise ConfigError(f"optimizer.damping: must be non-negative, got {op.damping!r}")
    if not 0 <= op.momentum < 1:
        raise ConfigError(f"optimizer.momentum: must lie in [0, 1), got {op.momentum!r}")


def _check_pretrain(pt: PretrainConfig, md: ModelConfig, el: ElectronsConfig) -> None:
    """Step count, learning rate; a crystal start needs one spin, and both starts need envelopes that can break the translations."""
    if pt.steps < 0:
        raise ConfigError(f"pretrain.steps: must be non-negative, got {pt.steps!r}")
    if not pt.learning_rate > 0:
        raise ConfigError(f"pretrain.learning_rate: must be positive, got {pt.learning_rate!r}")
    if pt.target in ("crystal", "both") and el.n_down != 0:
        raise ConfigError(f'pretrain.target: "{pt.target}" starts from the classical crystal, implemented for spin-polarised systems only (electrons.n_down = 0); set pretrain.target = "bloch"')
    if pt.target == "both" and md.envelope_momenta != "mixed":
        raise ConfigError(
            'pretrain.target: "both" compares the liquid with the crystal; it needs model.envelope_momenta = "mixed" '
            "(fixed momenta confine the crystal to the liquid's crystal momentum)"
        )


def _check_training(tr: TrainingConfig) -> None:
    """Step counts, seed, Laplacian sparsity in [0, 1], evaluation blocks, walker chunk, checkpoint interval (minutes)."""
    _positive_integers("training", tr, ("steps", "depths_per_step"))
    if tr.seed < 0:
        raise ConfigError(f"training.seed: must be non-negative, got {tr.seed!r}")
    if not 0.0 <= tr.laplacian_sparsity <= 1.0:
        raise ConfigError(f"training.laplacian_sparsity: must lie in [0, 1] (0: dense), got {tr.laplacian_sparsity!r}")
    if tr.evaluate_blocks < 2:
        raise ConfigError(f"training.evaluate_blocks: needs at least 2 blocks for an error bar, got {tr.evaluate_blocks!r}")
    if tr.walker_chunk < 0:
        raise ConfigError(f"training.walker_chunk: must be non-negative (0: no chunking), got {tr.walker_chunk!r}")
    if not tr.checkpoint_minutes > 0:
        raise ConfigError(f"training.checkpoint_minutes: must be positive, got {tr.checkpoint_minutes!r}")
