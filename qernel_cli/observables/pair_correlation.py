"""The pair correlation g(r) on the supercell torus (moiré units: r in a_M).

g(r): ordered pairs i ≠ j at minimum-image distance r, divided by the pair
count N(N−1)·a(r)/A expected for uncorrelated uniform particles, where a(r)
is the exact area of the annulus ∩ Wigner–Seitz cell of the supercell lattice
and A the supercell area. So g = 1 for uncorrelated particles out to the WS
circumradius. Errors are standard errors over independent samples, as in
:mod:`qernel_cli.observables.structure`.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from jaxtyping import Float

from qernel_cli.lattice import Supercell, reduce_basis
from qernel_cli.observables.blocking import Moments, as_samples, sample_chunks

__all__ = ["PairCorrelation", "annulus_areas", "pair_correlation", "wigner_seitz_cell"]


def wigner_seitz_cell(cell: Float[np.ndarray, "2 2"]) -> Float[np.ndarray, "n 2"]:
    """Vertices (counter-clockwise) of the Wigner–Seitz cell of the lattice spanned by ``cell`` rows."""
    basis = reduce_basis(cell)
    radius = 2.0 * float(np.sum(np.linalg.norm(basis, axis=-1)))
    polygon = radius * np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])  # counter-clockwise
    for m in itertools.product(range(-2, 3), repeat=2):
        if m == (0, 0):
            continue
        v = np.array(m, dtype=np.float64) @ basis
        polygon = _clip(polygon, v, 0.5 * float(v @ v))
    return polygon


def _clip(polygon: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Sutherland–Hodgman: the part of a convex polygon with x·normal ≤ offset."""
    out = []
    n = len(polygon)
    for i in range(n):
        a, b = polygon[i], polygon[(i + 1) % n]
        da, db = a @ normal - offset, b @ normal - offset
        if da <= 0:
            out.append(a)
        if da * db < 0:
            out.append(a + (b - a) * (da / (da - db)))
    return np.array(out)


def _disc_triangle_area(radius: float, a: np.ndarray, b: np.ndarray) -> float:
    """Signed area of disc(0, radius) ∩ triangle(0, a, b).

    The segment a → b is split where it crosses the circle; pieces inside the
    disc contribute their triangle with the centre, pieces outside a circular sector.
    """

    def sector(p, p1):
        return 0.5 * radius * radius * np.arctan2(p[0] * p1[1] - p[1] * p1[0], p @ p1)

    def triangle(p, p1):
        return 0.5 * (p[0] * p1[1] - p[1] * p1[0])

    d = b - a
    dd, ad, aa = d @ d, a @ d, a @ a
    disc = ad * ad - dd * (aa - radius * radius)
    if dd == 0.0 or disc <= 0.0:  # the line does not enter the open disc
        return sector(a, b)
    root = np.sqrt(disc)
    t1, t2 = np.clip([(-ad - root) / dd, (-ad + root) / dd], 0.0, 1.0)
    p1, p2 = a + t1 * d, a + t2 * d
    return sector(a, p1) + triangle(p1, p2) + sector(p2, b)


def annulus_areas(cell: Float[np.ndarray, "2 2"], edges: Float[np.ndarray, " n"]) -> Float[np.ndarray, " n-1"]:
    """Exact areas of the annuli edges[i] ≤ r < edges[i+1] intersected with the Wigner–Seitz cell."""
    polygon = wigner_seitz_cell(cell)
    edges_next = np.roll(polygon, -1, axis=0)
    disc = [sum(_disc_triangle_area(float(r), a, b) for a, b in zip(polygon, edges_next)) for r in edges]
    return np.diff(np.array(disc))


def _minimum_image_distance(d: np.ndarray, basis: np.ndarray, inverse: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    frac = d @ inverse
    reduced = (frac - np.round(frac)) @ basis
    r2 = np.sum((reduced[..., None, :] + shifts) ** 2, axis=-1)
    return np.sqrt(np.min(r2, axis=-1))


@dataclasses.dataclass(frozen=True, eq=False)
class PairCorrelation:
    """Radial pair correlation function.

    Attributes:
        r: (bins,) bin centres (a_M).
        edges: (bins + 1,) bin edges (a_M).
        g: (bins,) g(r), 1 for uncorrelated uniform particles.
        error: (bins,) standard error over samples.
        n_samples: number of independent samples.
    """

    r: Float[np.ndarray, " bins"]
    edges: Float[np.ndarray, " edges"]
    g: Float[np.ndarray, " bins"]
    error: Float[np.ndarray, " bins"]
    n_samples: int


def pair_correlation(
    positions: Float[np.ndarray, "... N 2"],
    supercell: Supercell,
    bins: int,
    r_max: float | None = None,
    independent_axes: int | None = None,
) -> PairCorrelation:
    """g(r) over all pairs i ≠ j at minimum-image distance r < r_max (see module conventions).

    ``r_max`` defaults to the inscribed radius of the supercell's Wigner–Seitz
    cell (half the shortest supercell vector), where every annulus is a full
    circle; it may go up to the WS circumradius (the annulus areas are exact).
    """
    samples = as_samples(positions, independent_axes)
    S, R, N = samples.shape[:3]
    if N < 2:
        raise ValueError("pair_correlation needs at least two electrons")
    basis = reduce_basis(supercell.cell)
    polygon = wigner_seitz_cell(supercell.cell)
    circumradius = float(np.max(np.linalg.norm(polygon, axis=-1)))
    if r_max is None:
        r_max = 0.5 * float(np.linalg.norm(basis[0]))
    if not 0.0 < r_max <= circumradius * (1 + 1e-12):
        raise ValueError(f"r_max must be in (0, {circumradius:.6g}] (the Wigner–Seitz circumradius), got {r_max!r}")
    bins = int(bins)
    edges = np.linspace(0.0, r_max, bins + 1)
    i, j = np.triu_indices(N, 1)
    inverse = np.linalg.inv(basis)
    shifts = np.array(list(itertools.product((-1, 0, 1), repeat=2)), dtype=np.float64) @ basis
    moments = Moments()
    for rows, record_slices in sample_chunks(S, R, 10 * len(i) + bins):
        counts = 0
        for records in record_slices:
            x = samples[rows, records]
            c = len(x)
            r = _minimum_image_distance(x[:, :, i] - x[:, :, j], basis, inverse, shifts).reshape(c, -1)
            index = np.floor(r / r_max * bins).astype(np.int64)
            inside = index < bins
            flat_index = (np.arange(c)[:, None] * bins + index)[inside]
            counts = counts + np.bincount(flat_index, minlength=c * bins).reshape(c, bins)
        moments.add(counts * (2.0 / R))  # ordered pairs per configuration
    expected = N * (N - 1) * annulus_areas(supercell.cell, edges) / supercell.area
    return PairCorrelation(
        r=0.5 * (edges[1:] + edges[:-1]),
        edges=edges,
        g=moments.mean / expected,
        error=moments.error / expected,
        n_samples=S,
    )
