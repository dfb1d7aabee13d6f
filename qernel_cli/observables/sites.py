"""Site-projected crystal order: electrons assigned to their nearest moiré potential minimum.

The continuous order parameter m² = 4⟨|ρ_K|²⟩/N² is reduced by the spread of
each localised electron around its site (a form factor e^{-K²σ²}), which for
small N hides the crystal behind the liquid's own 4/N. Projecting every
electron onto its nearest moiré site R_s (the deepest potential minimum of its
moiré cell) removes that form factor:

    m²_site = (4/N²)·⟨|Σ_j e^{-iK·R_{s(j)}}|²⟩, averaged over the six K points,

which is exactly 1 for a ν = 2/3 honeycomb crystal (one √3×√3 sublattice
empty) whatever the spread, and N(M − N)/(M − 1)·4/N² for electrons occupying
N of the M sites uniformly at random (a site-disordered state). Electrons on
doubly occupied sites, or between sites, simply count at the nearest one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from jaxtyping import Float

from qernel_cli.hamiltonian.potential import potential_minimum
from qernel_cli.lattice import MOIRE_VECTORS, Supercell
from qernel_cli.observables.blocking import Moments, as_samples
from qernel_cli.observables.structure import ordering_vectors


def random_site_order(n_electrons: int, n_sites: int) -> float | None:
    """m²_site of N electrons on N of M sites chosen uniformly at random: 4(M − N)/(N(M − 1)); None for M = 1."""
    if n_sites < 2 or n_electrons < 1:
        return None
    return 4.0 * (n_sites - n_electrons) / (n_electrons * (n_sites - 1))


def nearest_sites(positions: Float[np.ndarray, "... N 2"], origin: Float[np.ndarray, "2"]) -> Float[np.ndarray, "... N 2"]:
    """The nearest point of the triangular lattice origin + n_1 a_1 + n_2 a_2 to every position."""
    x = np.asarray(positions, dtype=np.float64) - origin
    frac = x @ np.linalg.inv(MOIRE_VECTORS)
    base = np.floor(frac)
    corners = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=np.float64)
    candidates = (base[..., None, :] + corners) @ MOIRE_VECTORS  # (..., N, 4, 2): the rhombus corners
    distance = np.linalg.norm(x[..., None, :] - candidates, axis=-1)
    best = np.take_along_axis(candidates, np.argmin(distance, axis=-1)[..., None, None], axis=-2)[..., 0, :]
    return best + origin


@dataclasses.dataclass(frozen=True)
class SiteOrder:
    """⟨m²_site⟩ with its standard error and the values of the reference states."""

    value: float
    error: float
    random_sites: float  # N of M sites occupied at random
    crystal: float  # the honeycomb crystal: 1


def site_order(positions: Float[np.ndarray, "... N 2"], supercell: Supercell, phi_deg: float, independent_axes: int | None = None) -> SiteOrder:
    """Site-projected crystal order m²_site (see the module docstring)."""
    samples = as_samples(positions, independent_axes)  # (S, R, N, 2)
    n = samples.shape[2]
    k = ordering_vectors(supercell)
    moments = Moments()
    origin = potential_minimum(phi_deg)
    chunk = max(1, (1 << 20) // max(1, samples.shape[1] * n))
    for start in range(0, len(samples), chunk):
        sites = nearest_sites(samples[start : start + chunk], origin)
        phase = sites @ k.T  # (c, R, N, 6)
        rho = np.sum(np.exp(-1j * phase), axis=-2)
        m2 = 4.0 / n**2 * np.mean(np.abs(rho) ** 2, axis=-1)  # (c, R)
        moments.add(np.mean(m2, axis=1))
    m = supercell.n_cells
    return SiteOrder(value=float(moments.mean), error=float(moments.error), random_sites=random_site_order(n, m), crystal=1.0)
