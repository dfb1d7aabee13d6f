"""The liquid and the crystal branch compared: which is lower, where they cross, where both exist.

Two runs of one model, started from the liquid and from the crystal
(:mod:`qernel_cli.stores.branches`), give two variational energies per depth;
the lower is the better estimate of the ground state. From E/N of both,
sampled on a grid of depths:

* **crossing**: ΔE(V) = E_crystal/N − E_liquid/N, a weighted straight-line fit
  over the two grid points on either side of its sign change (all points
  from the first to the last change, plus one on each side, when noise makes
  it change sign more than once, which is flagged). V_c is the fit's root;
  its standard error comes from the fit's covariance (the root's first-order
  propagation), scaled by √(χ²/dof) when the line fits worse than the error
  bars say. It counts as found when the slope differs from zero by more than
  three of its standard errors and the root lies inside the fitted window.
  The error is statistical: how much V_c moves between trainings is not in
  it.
* **hysteresis**: the depths where the two branches are distinct states:
  the crystal branch's site order m²_site exceeds the liquid branch's by more
  than three standard errors. Where that holds on both sides of V_c, each
  branch is (meta)stable beyond the crossing, the signature of a first-order
  transition; where the branches have merged, VMC led both starts to the same
  state.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

LOWER_SIGMAS = 2.0
"""|E_crystal − E_liquid| (standard errors) above which one branch counts as the lower."""
DISTINCT_SIGMAS = 3.0
"""Site-order difference (standard errors) above which the two branches count as distinct states."""


@dataclasses.dataclass(frozen=True)
class Crossing:
    """Where E_crystal − E_liquid changes sign (meV); NaN where it does not."""

    depth: float
    error: float
    found: bool
    slope: float
    slope_error: float
    window: tuple[float, float]
    sign_changes: int
    lower_below: str
    """The branch lower at the shallow end of the grid ("liquid" or "crystal")."""

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()} | {"window": list(self.window)}


def lower_branch(delta: float, error: float) -> str:
    """"crystal" or "liquid" (the lower by more than ``LOWER_SIGMAS`` standard errors of ΔE = E_crystal − E_liquid), else "undecided"."""
    if abs(delta) > LOWER_SIGMAS * error:
        return "crystal" if delta < 0 else "liquid"
    return "undecided"


def _line(x: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """Weighted fit y = a + b(x − x̄) with x̄ the weighted mean (a and b then uncorrelated): a, σ_a, b, σ_b, x̄, χ²."""
    w = 1.0 / s**2
    xbar = float(np.sum(w * x) / np.sum(w))
    dx = x - xbar
    a = float(np.sum(w * y) / np.sum(w))
    sxx = float(np.sum(w * dx**2))
    b = float(np.sum(w * dx * y) / sxx)
    chi2 = float(np.sum(w * (y - a - b * dx) ** 2))
    return a, math.sqrt(1.0 / float(np.sum(w))), b, math.sqrt(1.0 / sxx), xbar, chi2


def branch_crossing(depths: np.ndarray, delta: np.ndarray, error: np.ndarray) -> Crossing:
    """The root of ΔE(V) = E_crystal − E_liquid (per electron, meV) on a depth grid (meV), with its standard error."""
    v, d = np.asarray(depths, float), np.asarray(delta, float)
    s = np.maximum(np.asarray(error, float), 1e-12)
    order = np.argsort(v)
    v, d, s = v[order], d[order], s[order]
    lower_below = "crystal" if d[0] < 0 else "liquid"
    changes = np.nonzero(np.sign(d[:-1]) != np.sign(d[1:]))[0]
    nan = math.nan
    if len(changes) == 0 or len(v) < 2:
        return Crossing(nan, nan, False, nan, nan, (float(v[0]), float(v[-1])), 0, lower_below)
    if len(changes) == 1:
        lo, hi = max(0, changes[0] - 1), min(len(v), changes[0] + 3)
    else:
        lo, hi = max(0, changes[0] - 1), min(len(v), changes[-1] + 3)
    x, y, e = v[lo:hi], d[lo:hi], s[lo:hi]
    a, sa, b, sb, xbar, chi2 = _line(x, y, e)
    dof = len(x) - 2
    scale = math.sqrt(chi2 / dof) if dof > 0 and chi2 > dof else 1.0
    sa, sb = sa * scale, sb * scale
    root = xbar - a / b
    root_error = math.sqrt((sa / b) ** 2 + (a * sb / b**2) ** 2)
    found = abs(b) > 3.0 * sb and x[0] <= root <= x[-1]
    return Crossing(root, root_error, bool(found), b, sb, (float(x[0]), float(x[-1])), int(len(changes)), lower_below)


def hysteresis_window(
    depths: np.ndarray, liquid_order: np.ndarray, liquid_error: np.ndarray, crystal_order: np.ndarray, crystal_error: np.ndarray
) -> dict:
    """The depths (meV) where the branches are distinct states (crystal branch more ordered by > 3σ), and their span."""
    v = np.asarray(depths, float)
    gap = np.asarray(crystal_order, float) - np.asarray(liquid_order, float)
    sigma = np.hypot(np.asarray(liquid_error, float), np.asarray(crystal_error, float))
    distinct = gap > DISTINCT_SIGMAS * np.maximum(sigma, 1e-12)
    inside = v[distinct]
    return {
        "distinct_depths_meV": [float(x) for x in inside],
        "from_meV": float(inside.min()) if len(inside) else None,
        "to_meV": float(inside.max()) if len(inside) else None,
        "criterion": f"m²_site(crystal branch) − m²_site(liquid branch) > {DISTINCT_SIGMAS:g}σ",
    }
