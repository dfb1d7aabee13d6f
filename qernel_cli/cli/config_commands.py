"""The commands that read a configuration without running it: presets, config, info."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from qernel_cli import tables
from qernel_cli.cli.application import app, out, user_errors
from qernel_cli.cli.options import PresetOption, SetOption


@app.command()
@user_errors
def presets():
    """List the bundled presets: electrons, supercell, filling, material and depth range."""
    from qernel_cli.config import preset_names, resolve

    columns = ("name", "N (↑,↓)", "supercell", "filling ν", "material (a_M, m*, ε, φ)", "V range (meV)")
    configs = sorted(((resolve(name), name) for name in preset_names()), key=lambda cn: (cn[0].n_electrons, cn[1]))
    rows = []
    for c, name in configs:
        m, el = c.material, c.electrons
        rows.append((
            name,
            f"{c.n_electrons} ({el.n_up},{el.n_down})",
            f"{c.supercell.L1}×{c.supercell.L2}",
            _fraction(c.n_electrons, c.supercell.L1 * c.supercell.L2),
            f"{m.a_M_nm:g} nm, {m.m_star:g} mₑ, {m.epsilon:g}, {m.phi_deg:g}°",
            f"{c.hamiltonian.V_min_meV:g}–{c.hamiltonian.V_max_meV:g}",
        ))
    tables.show(out, "QERNEL presets", columns, rows, justify="left")


def _fraction(n: int, d: int) -> str:
    import fractions

    f = fractions.Fraction(n, d)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


@app.command()
@user_errors
def config(preset: PresetOption = "moire-tiny", set_: SetOption = None):
    """Print the resolved configuration (preset + overrides) as TOML, after validation."""
    from qernel_cli.config import resolve

    c = resolve(preset, set_ or [])
    sys.stdout.write(c.to_toml())


@app.command()
@user_errors
def info(
    preset: PresetOption = "moire-tiny",
    set_: SetOption = None,
    model: Annotated[bool, typer.Option(help="Also build the model: parameter count and FLOPs of one forward pass.")] = True,
):
    """Show the system in physical and moiré units (E_M, V/E_M, U, r_s) and the model size (parameters, FLOPs)."""
    from qernel_cli.config import resolve

    c = resolve(preset, set_ or [])
    mat = c.material_units
    rows = [
        ("electrons N (↑,↓)", f"{c.n_electrons} ({c.electrons.n_up},{c.electrons.n_down})"),
        ("supercell", f"{c.supercell.L1}×{c.supercell.L2} moiré cells, area {c.supercell_geometry.area:.4f} a_M²"),
        ("filling ν", f"{_fraction(c.n_electrons, c.supercell.L1 * c.supercell.L2)} ({c.filling:.6g})"),
        ("energy unit E_M = ħ²/(m* a_M²)", f"{mat.energy_unit_meV:.6g} meV"),
        ("effective Bohr radius a_B*", f"{mat.bohr_radius_nm:.6g} nm"),
        ("Coulomb strength U = a_M/a_B*", f"{mat.coulomb_strength:.6g}" + ("" if c.hamiltonian.coulomb else " (Coulomb off)")),
        ("r_s (units of a_B*)", f"{mat.r_s(c.filling):.6g}"),
        (
            "depth range V",
            f"{c.hamiltonian.V_min_meV:g}–{c.hamiltonian.V_max_meV:g} meV = "
            f"{mat.depth_to_moire(c.hamiltonian.V_min_meV):.6g}–{mat.depth_to_moire(c.hamiltonian.V_max_meV):.6g} E_M",
        ),
    ]
    if model:
        import jax

        from qernel_cli.model import make_wavefunction
        from qernel_cli.model.summary import forward_flops, parameter_breakdown

        wavefunction = make_wavefunction(c, jax.random.PRNGKey(0))
        parts = parameter_breakdown(wavefunction)
        m = c.model
        rows += [
            (
                "model",
                f"{m.layers} layers, width {m.width}, {m.heads} query / {m.kv_heads} kv heads, "
                f"{m.experts} experts (MLP {m.mlp_width}), {m.determinants} determinants, {m.dtype}",
            ),
            ("parameters", f"{sum(parts.values()):,} (" + ", ".join(f"{k} {v:,}" for k, v in parts.items()) + ")"),
            ("FLOPs per forward pass", f"{forward_flops(wavefunction):.4g} per configuration"),
        ]
    tables.show(out, f"{preset}: {c.description}", ("quantity", "value"), rows, header=False, justify="left")
