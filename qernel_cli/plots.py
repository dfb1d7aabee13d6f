"""PNG figures: charge densities, S(q), g(r) and the phase diagram (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from qernel_cli.lattice import MOIRE_VECTORS, Supercell


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cell_mesh(cell: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Cartesian corners of a grid of bins over the parallelogram spanned by the rows of ``cell``."""
    s1, s2 = np.meshgrid(np.linspace(0, 1, shape[0] + 1), np.linspace(0, 1, shape[1] + 1), indexing="ij")
    xy = np.stack([s1, s2], axis=-1) @ cell
    return xy[..., 0], xy[..., 1]


def _draw_density(ax, density: np.ndarray, cell: np.ndarray, title: str, sites: np.ndarray | None = None):
    x, y = _cell_mesh(cell, density.shape)
    mesh = ax.pcolormesh(x, y, density, shading="flat", cmap="magma", rasterized=True)
    if sites is not None:
        ax.plot(sites[:, 0], sites[:, 1], "o", mfc="none", mec="cyan", ms=4, mew=0.6, alpha=0.7)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("x (a_M)")
    ax.set_ylabel("y (a_M)")
    return mesh


def density_figure(path: Path, supercell: Supercell, phi_deg: float, depth_meV: float, density: np.ndarray, folded: np.ndarray, aligned: np.ndarray | None = None) -> None:
    """Density on the supercell (electrons/a_M²), folded into one moiré cell, and crystal-aligned if given.

    Circles mark the moiré potential minima (for the phase φ).
    """
    from qernel_cli.hamiltonian.potential import moire_sites

    plt = _pyplot()
    panels = 3 if aligned is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.8), constrained_layout=True)
    sites = np.asarray(supercell.wrap(moire_sites(supercell, phi_deg)))
    m = _draw_density(axes[0], density, supercell.cell, f"n(r), V = {depth_meV:g} meV", sites)
    fig.colorbar(m, ax=axes[0], label="electrons / a_M²")
    m = _draw_density(axes[1], folded, MOIRE_VECTORS, "folded into one moiré cell")
    fig.colorbar(m, ax=axes[1], label="electrons / a_M²")
    if aligned is not None:
        m = _draw_density(axes[2], aligned, supercell.cell, "aligned to the crystal pattern", sites)
        fig.colorbar(m, ax=axes[2], label="electrons / a_M²")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def structure_figure(path: Path, depth_meV: float, q_norm: np.ndarray, s: np.ndarray, s_err: np.ndarray, r: np.ndarray, g: np.ndarray, g_err: np.ndarray, k_norm: float | None = None) -> None:
    """S(q) versus |q| and g(r) at one depth."""
    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6), constrained_layout=True)
    a.errorbar(q_norm, s, yerr=s_err, fmt="o", ms=3, lw=0.8)
    if k_norm is not None:
        a.axvline(k_norm, color="gray", ls=":", label="|K| (ordering)")
        a.legend(fontsize=8)
    a.set_xlabel("|q| (1/a_M)")
    a.set_ylabel("S(q)")
    a.set_title(f"structure factor, V = {depth_meV:g} meV", fontsize=9)
    b.fill_between(r, g - g_err, g + g_err, alpha=0.3)
    b.plot(r, g, lw=1)
    b.axhline(1.0, color="gray", lw=0.6)
    b.set_xlabel("r (a_M)")
    b.set_ylabel("g(r)")
    b.set_title("pair correlation", fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def phase_diagram_figure(path: Path, depths: np.ndarray, series: dict[str, tuple[np.ndarray, np.ndarray]], order: tuple[np.ndarray, np.ndarray], transition: tuple[float, float] | None, liquid_order: float | None = None) -> None:
    """Energy components, interaction energy per electron and the order parameter versus depth."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    for name, (value, error) in series.items():
        axes[0].errorbar(depths, value, yerr=error, fmt="o-", ms=3, lw=1, label=name)
    axes[0].set_ylabel("energy per electron (meV)")
    axes[0].legend(fontsize=8)
    e_int, e_int_err = series["interaction"]
    axes[1].errorbar(depths, e_int, yerr=e_int_err, fmt="o-", ms=3, lw=1, color="C3")
    axes[1].set_ylabel("E_int / N (meV)")
    axes[2].errorbar(depths, order[0], yerr=order[1], fmt="o-", ms=3, lw=1, color="C4")
    if liquid_order is not None:
        axes[2].axhline(liquid_order, color="gray", ls=":", lw=0.8, label="randomly occupied sites")
        axes[2].legend(fontsize=8)
    axes[2].set_ylabel("site-projected crystal order m²_site")
    _save_depth_axes(fig, axes, path, transition)


def _save_depth_axes(fig, axes, path: Path, band: tuple[float, float] | None) -> None:
    """Label every panel's depth axis, shade V_c ± σ on each (where given), save and close the figure."""
    for ax in axes:
        ax.set_xlabel("moiré depth V (meV)")
        if band is not None and np.isfinite(band[0]):
            ax.axvspan(band[0] - band[1], band[0] + band[1], color="orange", alpha=0.2)
            ax.axvline(band[0], color="orange", lw=1)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)


def branches_figure(
    path: Path,
    depths: np.ndarray,
    energies: dict[str, tuple[np.ndarray, np.ndarray]],
    orders: dict[str, tuple[np.ndarray, np.ndarray]],
    crossing: tuple[float, float] | None,
    distinct: tuple[float, float] | None,
    liquid_order: float | None = None,
) -> None:
    """Both branches versus depth: E/N, the difference E_crystal − E_liquid with the crossing, and m²_site with the window where they differ."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    colours = {"liquid": "C0", "crystal": "C3"}
    for name, (value, error) in energies.items():
        axes[0].errorbar(depths, value, yerr=error, fmt="o-", ms=3, lw=1, color=colours.get(name), label=f"{name} branch")
    axes[0].set_ylabel("E/N (meV)")
    axes[0].legend(fontsize=8)
    (el, sl), (ec, sc) = energies["liquid"], energies["crystal"]
    axes[1].errorbar(depths, ec - el, yerr=np.hypot(sl, sc), fmt="o-", ms=3, lw=1, color="C2")
    axes[1].axhline(0.0, color="gray", lw=0.8)
    axes[1].set_ylabel("E_crystal/N − E_liquid/N (meV)")
    for name, (value, error) in orders.items():
        axes[2].errorbar(depths, value, yerr=error, fmt="o-", ms=3, lw=1, color=colours.get(name), label=f"{name} branch")
    if liquid_order is not None:
        axes[2].axhline(liquid_order, color="gray", ls=":", lw=0.8, label="randomly occupied sites")
    if distinct is not None:
        axes[2].axvspan(distinct[0], distinct[1], color="gray", alpha=0.15, label="branches distinct")
    axes[2].legend(fontsize=8)
    axes[2].set_ylabel("site-projected crystal order m²_site")
    _save_depth_axes(fig, axes, path, crossing)
