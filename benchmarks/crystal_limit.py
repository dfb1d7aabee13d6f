"""The deep-moiré check of the crystal branch: the harmonic estimate of a Wigner crystal against VMC.

    python benchmarks/crystal_limit.py --preset moire-tiny --depths 20 30 [--pd PD] [--json out.json]

For each depth (meV) prints, per electron in meV, the plain harmonic energy
(classical minimum + ½Σω), the estimate with the exact single-well energy
(``qernel_cli.hamiltonian.harmonic``: ε_W + Coulomb of the point charges +
the Coulomb change of the zero-point energy) and its parts; with ``--pd`` (a
two-branch phase diagram) the crystal branch's energy at that depth beside it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from qernel_cli.runtime import configure_jax


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="moire-tiny")
    parser.add_argument("--depths", type=float, nargs="+", required=True)
    parser.add_argument("--pd", help="a two-branch phasediagram output directory")
    parser.add_argument("--json")
    args = parser.parse_args()
    configure_jax()
    from qernel_cli.config import resolve
    from qernel_cli.hamiltonian.harmonic import harmonic_crystal
    from qernel_cli.vmc.crystal import classical_ground_state

    c = resolve(args.preset)
    mu, cell = c.material_units, c.supercell_geometry
    unit = mu.energy_unit_meV
    sites = classical_ground_state(cell, c.electrons.n_up, mu.phi_deg)
    vmc = {}
    if args.pd:
        for row in json.loads((Path(args.pd) / "phasediagram.json").read_text())["depths"]:
            vmc[round(row["V_meV"], 6)] = (row["crystal_energy_meV"], row["crystal_energy_error_meV"])
    rows = []
    for depth in args.depths:
        h = harmonic_crystal(cell, sites, mu.depth_to_moire(depth), mu.phi_deg, mu.coulomb_strength)
        row = {
            "V_meV": depth, "harmonic_meV": h.harmonic * unit, "estimate_meV": h.estimate * unit,
            "site_energy_meV": h.site_energy * unit, "coulomb_meV": h.coulomb * unit, "zero_point_shift_meV": h.zero_point_shift * unit,
            "relaxation_a_M": h.displacement,
        }
        if round(depth, 6) in vmc:
            row["vmc_crystal_meV"], row["vmc_crystal_error_meV"] = vmc[round(depth, 6)]
        rows.append(row)
    text = json.dumps({"preset": args.preset, "n_electrons": c.n_electrons, "depths": rows}, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
