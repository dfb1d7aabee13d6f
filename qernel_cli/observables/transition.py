"""Locating the liquid–crystal transition from observables sampled on a grid of depths.

Two independent estimates, each with an uncertainty:

* **order parameter**: a weighted fit of m²(V) = a + cV + b·½[1 + tanh((V − V_c)/w)]
  (a smooth step on a linear background; the finite system rounds the
  transition, w is kept ≥ a quarter of the grid spacing). V_c and its
  standard error come from the fit covariance, scaled by √(χ²/dof) when the
  fit is worse than the error bars say, plus the spread of its grid interval
  when the step is sharper than the grid. The step counts as found only if its
  height b exceeds 3 of its standard errors and V_c lies inside the grid.
* **interaction energy**: the depth where the slope d(E_int/N)/dV changes most
  (largest |Δ slope| between neighbouring intervals of the grid). Its
  uncertainty is the spread over a parametric bootstrap (E_int resampled
  within its error bars), combined with half the local grid spacing.

``estimate_transition`` returns both, and a combined value: the order-parameter
fit when it is found, else the interaction-energy estimate.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass(frozen=True)
class Transition:
    """Transition depth estimates (meV); NaN where no transition was found."""

    depth: float
    error: float
    method: str
    order_fit_depth: float
    order_fit_error: float
    order_fit_width: float
    order_step: float
    order_step_error: float
    energy_kink_depth: float
    energy_kink_error: float

    def as_dict(self) -> dict[str, float | str]:
        return {k: (v if isinstance(v, str) or math.isfinite(v) else None) for k, v in dataclasses.asdict(self).items()}


def _step(v, a, b, vc, w, slope=0.0):
    return a + slope * v + b * 0.5 * (1.0 + np.tanh((v - vc) / w))


def fit_order_step(depths: np.ndarray, order: np.ndarray, error: np.ndarray) -> tuple[float, float, float, float, float]:
    """(V_c, σ(V_c), width, step height b, σ(b)) of the tanh-step fit; NaNs if the fit fails."""
    from scipy.optimize import curve_fit

    depths, order = np.asarray(depths, float), np.asarray(order, float)
    error = np.maximum(np.asarray(error, float), 1e-12)
    nan = (math.nan,) * 5
    if len(depths) < 6:
        return nan
    span = depths[-1] - depths[0]
    spacing = np.diff(depths)
    slopes = np.diff(order) / spacing
    guess_vc = 0.5 * (depths[np.argmax(slopes)] + depths[np.argmax(slopes) + 1])
    w_min = 0.25 * float(np.min(spacing))  # a step sharper than the grid cannot be resolved
    p0 = [order[0], order[-1] - order[0], guess_vc, max(span / 10, 2 * w_min), 0.0]
    bounds = ([-np.inf, -np.inf, depths[0] - span, w_min, -np.inf], [np.inf, np.inf, depths[-1] + span, 2 * span, np.inf])
    try:
        popt, pcov = curve_fit(_step, depths, order, p0=p0, sigma=error, absolute_sigma=True, bounds=bounds, maxfev=20000)
    except (RuntimeError, ValueError):
        return nan
    residual = (order - _step(depths, *popt)) / error
    dof = max(1, len(depths) - 5)
    scale = max(1.0, math.sqrt(float(residual @ residual) / dof))
    perr = np.sqrt(np.clip(np.diag(pcov), 0, np.inf)) * scale
    vc, vc_err, width = float(popt[2]), float(perr[2]), float(popt[3])
    # Where the step is about as sharp as the grid, V_c is known only to within its grid
    # interval: add that interval's uniform spread (width/√12) and never exceed it.
    i = int(np.clip(np.searchsorted(depths, vc), 1, len(depths) - 1))
    interval = float(depths[i] - depths[i - 1])
    if width < interval or not math.isfinite(vc_err):
        vc_err = math.hypot(min(vc_err, interval / 2) if math.isfinite(vc_err) else interval / 2, interval / math.sqrt(12))
    return vc, vc_err, width, float(popt[1]), float(perr[1])


def energy_kink(depths: np.ndarray, e_int: np.ndarray, error: np.ndarray, samples: int = 500, seed: int = 0) -> tuple[float, float]:
    """Depth of the largest change of slope of E_int(V) and its bootstrap uncertainty (meV)."""
    depths, e_int, error = (np.asarray(x, float) for x in (depths, e_int, error))
    if len(depths) < 3:
        return math.nan, math.nan

    def locate(values):
        slopes = np.diff(values, axis=-1) / np.diff(depths)
        change = np.abs(np.diff(slopes, axis=-1))
        return depths[1:-1][np.argmax(change, axis=-1)]

    centre = float(locate(e_int))
    rng = np.random.default_rng(seed)
    draws = locate(e_int + error * rng.standard_normal((samples, len(depths))))
    i = int(np.searchsorted(depths, centre))
    spacing = 0.5 * (depths[min(i + 1, len(depths) - 1)] - depths[max(i - 1, 0)]) / 2
    return centre, float(math.hypot(np.std(draws), spacing))


def estimate_transition(depths: np.ndarray, order: np.ndarray, order_error: np.ndarray, e_int: np.ndarray, e_int_error: np.ndarray) -> Transition:
    """Both estimates and the combined one (see the module docstring)."""
    order_vc, order_err, width, step, step_err = fit_order_step(depths, order, order_error)
    kink, kink_err = energy_kink(depths, e_int, e_int_error)
    found = (
        math.isfinite(order_vc)
        and step > 3 * step_err
        and depths[0] <= order_vc <= depths[-1]
    )
    if found:
        depth, error, method = order_vc, order_err, "order-parameter step fit"
    else:
        depth, error, method = kink, kink_err, "interaction-energy slope change"
    return Transition(
        depth=depth, error=error, method=method,
        order_fit_depth=order_vc, order_fit_error=order_err, order_fit_width=width, order_step=step, order_step_error=step_err,
        energy_kink_depth=kink, energy_kink_error=kink_err,
    )
