"""The tables and summary lines the commands print on stdout (their text output without --json)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qernel_cli import tables
from qernel_cli.cli.application import out

if TYPE_CHECKING:
    from qernel_cli.config import Config


def print_energies(summary: dict) -> None:
    """`qernel train`: the energies per depth after training, and the health line."""
    start = all("start_energy_per_electron_meV" in d for d in summary["depths"])
    columns = ["V (meV)", "E/N (meV)", "± (meV)", "kinetic", "moiré", "interaction"] + (["before VMC", "VMC gain"] if start else [])
    rows = []
    for d in summary["depths"]:
        row = [
            f"{d['V_meV']:.3f}",
            f"{d['energy_per_electron_meV']:.4f}",
            f"{d['energy_error_meV']:.4f}",
            f"{d['kinetic_meV']:.4f}",
            f"{d['potential_meV']:.4f}",
            f"{d['interaction_meV']:.4f}",
        ]
        if start:
            gain = d["start_energy_per_electron_meV"] - d["energy_per_electron_meV"]
            sigma = (d["start_energy_error_meV"] ** 2 + d["energy_error_meV"] ** 2) ** 0.5
            row += [f"{d['start_energy_per_electron_meV']:.4f} ± {d['start_energy_error_meV']:.4f}", f"{gain:+.4f} ({gain / sigma:+.1f}σ)"]
        rows.append(row)
    tables.show(out, f"energies per electron after {summary['steps']} steps ({summary['wall_time_s']:.0f} s)", columns, rows)
    h = summary.get("health")
    if h:
        taus = ", ".join(f"{t:.0f}" for t in h["autocorrelation_sweeps"])
        out.print(
            f"health: {h['rejected_steps']} of {h['steps']} steps rejected, acceptance {h['acceptance']:.2f} "
            f"({h['acceptance_min']:.2f}–{h['acceptance_max']:.2f}), clipped local energies {h['clipped_fraction']:.2%} "
            f"(max {h['clipped_fraction_max']:.2%}), autocorrelation time {taus} sweeps (error bars include it)",
            soft_wrap=True, highlight=False,
        )


def print_samples(summary: dict) -> None:
    """`qernel sample`: one line on what was appended to the store."""
    out.print(
        f"{summary['records_per_depth']} records × {summary['walkers']} walkers at "
        f"{', '.join(f'{v:g}' for v in summary['depths_meV'])} meV → {summary['store']} "
        f"(session {summary['session']}, {summary['records_in_store']} records in the store)"
    )


def observables_summary(results, attrs) -> dict:
    """`qernel observe`: the JSON summary of the observables per depth, with the liquid and random-site references."""
    from qernel_cli.observables.sites import random_site_order

    n, m = attrs["n_electrons"], attrs["supercell"][0] * attrs["supercell"][1]
    return {
        "n_electrons": n,
        "order_parameter_liquid": 4.0 / n,
        "site_order_random_sites": random_site_order(n, m),
        "depths": [r.summary() for r in results],
    }


def print_observables(summary: dict) -> None:
    """`qernel observe`: the table of observables per depth and what the order parameters mean."""
    columns = ("V (meV)", "E/N", "kinetic", "moiré", "interaction", "τ", "m²", "m²_site", "acc")

    def pm(row, key):
        return f"{row[key + '_meV']:.4f} ± {row[key + '_error_meV']:.4f}"

    def order(row, key):
        return "—" if row[key] is None else f"{row[key]:.3f} ± {row[key + '_error']:.3f}"

    def tau(row):
        value = row["energy_tau_records"]
        return "—" if value is None else f"{value:.1f}"

    rows = [
        (
            f"{row['V_meV']:g}", pm(row, "energy"), pm(row, "kinetic"), pm(row, "potential"), pm(row, "interaction"),
            tau(row), order(row, "order_parameter"), order(row, "site_order"), f"{row['acceptance']:.2f}",
        )
        for row in summary["depths"]
    ]
    tables.show(out, f"observables per electron (meV), N = {summary['n_electrons']}", columns, rows)
    out.print(
        f"crystal order (1 = honeycomb crystal): m² = 4⟨|ρ_K|²⟩/N², {summary['order_parameter_liquid']:.3f} for an uncorrelated liquid; "
        f"m²_site (electrons on their nearest moiré site), {summary['site_order_random_sites']:.3f} for randomly occupied sites. τ: autocorrelation time (records)."
    )


def print_branches(summary: dict) -> None:
    """`qernel train` of both branches: each branch's energies, then which branch is lower at every depth."""
    for name, branch in summary["branches"].items():
        out.print(f"branch {name} ({branch['run_dir']})", highlight=False)
        print_energies(branch)
    if summary.get("pending"):
        out.print(
            f"branch {', '.join(summary['pending'])} not trained yet: the comparison follows when both are "
            f"(`qernel train --resume --out {summary['run_dir']}`)",
            highlight=False,
        )
        return
    rows = [
        (
            f"{d['V_meV']:.3f}",
            f"{d['liquid_energy_per_electron_meV']:.4f} ± {d['liquid_energy_error_meV']:.4f}",
            f"{d['crystal_energy_per_electron_meV']:.4f} ± {d['crystal_energy_error_meV']:.4f}",
            f"{d['crystal_minus_liquid_meV']:+.4f} ± {d['crystal_minus_liquid_error_meV']:.4f}",
            d["lower"],
        )
        for d in summary["depths"]
    ]
    tables.show(out, "the two branches (E/N, meV)", ("V (meV)", "liquid", "crystal", "crystal − liquid", "lower"), rows)


def print_phase_diagram(summary: dict) -> None:
    """`qernel phasediagram`: the energies and site order per depth, and the transition depth."""
    rows = []
    for d in summary["depths"]:
        order = "—" if d["site_order"] is None else f"{d['site_order']:.3f} ± {d['site_order_error']:.3f}"
        rows.append((
            f"{d['V_meV']:g}",
            *(f"{d[k + '_meV']:.4f} ± {d[k + '_error_meV']:.4f}" for k in ("energy", "kinetic", "potential", "interaction")),
            order,
        ))
    columns = ("V (meV)", "E/N", "kinetic", "moiré", "interaction", "m²_site")
    tables.show(out, f"phase diagram, N = {summary['n_electrons']} (per electron, meV)", columns, rows)
    t = summary["transition"]
    if t and t["depth"] is not None:
        out.print(f"transition depth V_c = {t['depth']:.2f} ± {t['error']:.2f} meV ({t['method']})")
        if t["energy_kink_depth"] is not None:
            out.print(f"  interaction-energy slope change at {t['energy_kink_depth']:.2f} ± {t['energy_kink_error']:.2f} meV")
    else:
        out.print("no transition found in this range of depths")
    out.print(f"plots and stores in {summary['out_dir']}")


def print_branch_diagram(summary: dict) -> None:
    """`qernel phasediagram` of a two-branch run: both branches per depth, the lower one, the crossing and where both exist."""
    def order(d, name):
        value = d[f"{name}_site_order"]
        return "—" if value is None else f"{value:.3f} ± {d[f'{name}_site_order_error']:.3f}"

    rows = [
        (
            f"{d['V_meV']:g}",
            f"{d['liquid_energy_meV']:.4f} ± {d['liquid_energy_error_meV']:.4f}",
            f"{d['crystal_energy_meV']:.4f} ± {d['crystal_energy_error_meV']:.4f}",
            f"{d['crystal_minus_liquid_meV']:+.4f} ± {d['crystal_minus_liquid_error_meV']:.4f}",
            d["lower"], order(d, "liquid"), order(d, "crystal"),
        )
        for d in summary["depths"]
    ]
    columns = ("V (meV)", "E/N liquid", "E/N crystal", "crystal − liquid", "lower", "m²_site liquid", "m²_site crystal")
    tables.show(out, f"two branches, N = {summary['n_electrons']} (per electron, meV)", columns, rows)
    c, h = summary["crossing"], summary["hysteresis"]
    if c and c["found"]:
        out.print(f"branches cross at V_c = {c['depth']:.2f} ± {c['error']:.2f} meV (the {c['lower_below']} branch is lower below it)")
        if c["sign_changes"] > 1:
            out.print(f"  E_crystal − E_liquid changes sign {c['sign_changes']} times: the crossing is fitted over {c['window'][0]:g}–{c['window'][1]:g} meV")
    elif c and c["depth"] is not None:
        out.print(f"no resolved crossing: the fitted root {c['depth']:.2f} ± {c['error']:.2f} meV is not significant")
    elif c:
        lower = c["lower_below"]
        significant = sum(d["lower"] == lower for d in summary["depths"])
        out.print(
            f"E_crystal − E_liquid keeps its sign over the grid: the {lower} branch is lower or equal throughout "
            f"(significantly at {significant} of {len(summary['depths'])} depths)"
        )
    g = summary.get("ground_state_transition")
    if g and g["depth"] is not None:
        out.print(f"lower branch's curve: transition at {g['depth']:.2f} ± {g['error']:.2f} meV ({g['method']})")
    if h and h["from_meV"] is not None:
        out.print(f"branches distinct states (hysteresis window) at {h['from_meV']:g}–{h['to_meV']:g} meV ({h['criterion']})")
    elif h:
        out.print("the branches are the same state at every depth (no hysteresis)")
    out.print(f"plots and stores in {summary['out_dir']}")


def print_exact(result: dict, c: Config) -> None:
    """`qernel exact`: the bounds per number of bands, their extrapolation and the largest basis's parts, per depth."""
    rows = []
    for d in result["depths"]:
        last = d["bands"][-1]
        x = d["extrapolated_per_electron_meV"]
        rows.append((
            f"{d['V_meV']:g}",
            " ".join(f"{b['energy_per_electron_meV']:.4f}" for b in d["bands"]),
            "—" if x is None else f"{x:.4f} ± {d['extrapolation_error_meV']:.4f}",
            f"{d['determinant_per_electron_meV']:.4f}",
            f"{d['correlation_per_electron_meV']:.4f}",
            f"{last['kinetic_per_electron_meV']:.4f}",
            f"{last['moire_per_electron_meV']:.4f}",
            f"{last['interaction_per_electron_meV']:.4f}",
            "({},{})".format(*last["momentum"]),
            f"{last['states']:,}",
        ))
    bands_label = ", ".join(str(b["n_bands"]) for b in result["depths"][0]["bands"])
    columns = ("V (meV)", f"E/N bound, {bands_label} bands", "E/N extrapolated", "best determinant", "E_c/N", "kinetic", "moiré", "interaction", "momentum", "states")
    n = c.n_electrons
    tables.show(out, f"exact ground state, N = {n} on {c.supercell.L1}×{c.supercell.L2} (per electron, meV)", columns, rows)
