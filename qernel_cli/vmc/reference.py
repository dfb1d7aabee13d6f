"""Reference energies of the non-interacting Bloch determinant.

The Slater determinant of the lowest non-interacting Bloch orbitals at depth v
is the band-theory reference: with the Coulomb interaction switched on, its
energy ⟨Ψ_B|H|Ψ_B⟩ (sampled here by Metropolis over |Ψ_B|²) is what a
correlated wavefunction must beat; with it off, it is exact.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from qernel_cli.config import Config
from qernel_cli.hamiltonian.ewald import EwaldSum
from qernel_cli.hamiltonian.local_energy import local_energy
from qernel_cli.vmc.mcmc import equilibrate, initial_walkers, metropolis_sweeps
from qernel_cli.vmc.pretrain import bloch_log_psi, family_orbitals


def bloch_reference(
    config: Config,
    depths_meV: np.ndarray,
    *,
    walkers: int = 512,
    blocks: int = 20,
    sweeps_per_block: int = 10,
    n_shells: int = 5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """⟨H⟩ per electron (meV) of the Bloch determinant at each depth: mean and standard error over blocks.

    Returns arrays over depths: ``total``, ``total_error``, ``kinetic``, ``potential``,
    ``interaction`` (meV per electron) and ``exact_noninteracting`` (sum of band energies per electron).
    """
    material = config.material_units
    unit = material.energy_unit_meV
    sc = config.supercell_geometry
    n_up, n_down, n = config.electrons.n_up, config.electrons.n_down, config.n_electrons
    v = np.asarray(depths_meV, dtype=np.float64) / unit
    orbitals = family_orbitals(sc, n_up, n_down, v, config.material.phi_deg, n_shells)
    coulomb = material.coulomb_strength if config.hamiltonian.coulomb else 0.0
    ewald = EwaldSum(sc.cell, n_electrons=n) if coulomb else None

    def log_abs(x, orb):
        return jnp.real(bloch_log_psi(orb, n_up, x))

    key = jax.random.PRNGKey(seed)
    state = initial_walkers(log_abs, key, sc, orbitals, walkers, n, 0.2)

    @eqx.filter_jit
    def sweeps(state, key):
        return metropolis_sweeps(log_abs, state, key, sc, sweeps_per_block)

    @eqx.filter_jit
    def block(state, key):
        state, _ = sweeps(state, key)

        def one(x, orb, depth):
            return local_energy(
                lambda y: bloch_log_psi(orb, n_up, y), x, v=depth, phi_deg=config.material.phi_deg,
                coulomb_strength=coulomb, interaction=ewald,
            )

        e = jax.vmap(jax.vmap(one, (0, None, None)), (0, 0, 0))(state.positions, orbitals, jnp.asarray(v))
        return state, e

    state = equilibrate(sweeps, state, key, 10, target=0.5)  # then the width stays fixed while energies are recorded
    rows = {"total": [], "kinetic": [], "potential": [], "interaction": []}
    for i in range(blocks):
        state, e = block(state, jax.random.fold_in(key, 100 + i))
        for name in rows:
            rows[name].append(np.mean(np.asarray(getattr(e, name)), axis=1) * unit / n)
    out = {name: np.mean(values, axis=0) for name, values in rows.items()}
    out["total_error"] = np.std(rows["total"], axis=0, ddof=1) / np.sqrt(blocks)
    out["exact_noninteracting"] = np.asarray(orbitals.energies).sum(axis=1) * unit / n
    return out
