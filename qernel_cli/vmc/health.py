"""Numerical health of a run: autocorrelation times, correlated error bars and the warnings a user must see.

A VMC number can be wrong without anything crashing: chains that hardly move
(acceptance near 0) or never reject (near 1) sample poorly, a large fraction
of clipped local energies means the gradient sees a distorted distribution,
rejected (non-finite) steps hint at an unstable optimisation, and correlated
samples make naive error bars too small. This module measures those and
turns them into one-line warnings; the thresholds are the constants below.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Float

ACCEPTANCE_RANGE = (0.2, 0.8)
"""Healthy mean Metropolis acceptance (the sampler adapts its width towards ``sampler.target_acceptance``)."""
MAX_CLIPPED_FRACTION = 0.02
"""Largest healthy mean fraction of local energies clipped to median ± clip_mad·MAD in the gradient."""
MAX_REJECTED_FRACTION = 0.01
"""Largest healthy fraction of optimisation steps rejected as non-finite."""
MAX_AUTOCORRELATION_BLOCKS = 2.0
"""Largest healthy integrated autocorrelation time of the local energy, in evaluation blocks (τ = 1 + 2Σρ)."""


@dataclasses.dataclass(frozen=True)
class Health:
    """What the summary reports about a run's numerics (means over all VMC steps of this run)."""

    steps: int
    rejected_steps: int
    acceptance: float  # mean Metropolis acceptance
    acceptance_min: float  # lowest per-step, per-group acceptance
    acceptance_max: float
    clipped_fraction: float  # mean fraction of clipped local energies
    clipped_fraction_max: float
    autocorrelation_blocks: list[float]  # τ of the final evaluation per depth, in evaluation blocks
    sweeps_per_block: int

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["rejected_fraction"] = self.rejected_steps / max(self.steps, 1)
        out["autocorrelation_sweeps"] = [tau * self.sweeps_per_block for tau in self.autocorrelation_blocks]
        return out

    def warnings(self) -> list[str]:
        """One line per quantity outside its healthy range (empty for a healthy run)."""
        out = []
        if self.steps and self.rejected_steps / self.steps > MAX_REJECTED_FRACTION:
            out.append(
                f"{self.rejected_steps} of {self.steps} steps were non-finite and rolled back "
                f"(> {MAX_REJECTED_FRACTION:.0%}); lower optimizer.learning_rate or raise optimizer.damping"
            )
        lo, hi = ACCEPTANCE_RANGE
        if np.isfinite(self.acceptance) and not lo <= self.acceptance <= hi:
            out.append(
                f"mean MCMC acceptance {self.acceptance:.2f} is outside [{lo}, {hi}]; the sampler may not be mixing "
                "(check sampler.move_width and sampler.target_acceptance)"
            )
        if np.isfinite(self.clipped_fraction) and self.clipped_fraction > MAX_CLIPPED_FRACTION:
            out.append(
                f"{self.clipped_fraction:.1%} of local energies were clipped on average (> {MAX_CLIPPED_FRACTION:.0%}); "
                "the energy distribution has heavy tails: train longer or raise optimizer.clip_mad"
            )
        worst = max((t for t in self.autocorrelation_blocks if np.isfinite(t)), default=float("nan"))
        if np.isfinite(worst) and worst > MAX_AUTOCORRELATION_BLOCKS:
            out.append(
                f"local-energy autocorrelation time {worst:.1f} evaluation blocks ({worst * self.sweeps_per_block:.0f} sweeps) "
                f"> {MAX_AUTOCORRELATION_BLOCKS:g}; error bars are corrected for it, but raise sampler.steps_per_iteration"
            )
        return out


def run_health(
    acceptance: Float[np.ndarray, "S G"],
    clipped: Float[np.ndarray, "S G"],
    accepted: np.ndarray,
    autocorrelation_blocks: list[float],
    sweeps_per_block: int,
) -> Health:
    """Health of the VMC steps of a run (arrays from train.zarr, one row per step)."""
    acceptance = np.asarray(acceptance, dtype=np.float64)
    clipped = np.asarray(clipped, dtype=np.float64)

    def stat(fn, x):
        x = x[np.isfinite(x)]
        return float(fn(x)) if x.size else float("nan")

    return Health(
        steps=int(np.size(accepted)),
        rejected_steps=int(np.size(accepted) - np.sum(accepted)),
        acceptance=stat(np.mean, acceptance),
        acceptance_min=stat(np.min, acceptance),
        acceptance_max=stat(np.max, acceptance),
        clipped_fraction=stat(np.mean, clipped),
        clipped_fraction_max=stat(np.max, clipped),
        autocorrelation_blocks=[float(t) for t in autocorrelation_blocks],
        sweeps_per_block=int(sweeps_per_block),
    )
