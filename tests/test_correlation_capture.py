"""VMC against exact diagonalisation (``extended``): the captured fraction of the correlation energy.

Two spin-polarised electrons on the 2×1 torus at 15 meV (system A of
``benchmarks/correlation_capture.py``): 400 steps of the default training at a
single depth must capture at least 98 % of the correlation energy
E_det − E_0 (E_det the best single determinant of band orbitals, E_0 the
exact ground state from ``qernel exact``), within two of its standard errors,
and must not lie below E_0 by more than three (the variational principle).

98 % is issue #20's target. The protocol before it (pre-training that bent
the cusp Jastrow, SPRING momentum 0.9, pair Jastrow to 1.2|g|) captured
93.0 ± 3.2 % after 400 steps and 93.4 ± 1.4 % after 1200 and fails this
test; see docs/validation.md.
"""

import math

import pytest

from qernel_cli.config import resolve
from qernel_cli.workflows.train import train
from qernel_cli.workflows.exact import exact_energies

SYSTEM_A = ["supercell.L1=2", "supercell.L2=1", "electrons.n_up=2", "electrons.filling=1",
            "hamiltonian.V_min_meV=15", "hamiltonian.V_max_meV=15", "model.envelope_momenta=fixed", "pretrain.target=bloch"]
STEPS = ["training.steps=400", "training.evaluate_blocks=100"]  # the default protocol, sampled long enough to tell


@pytest.mark.extended
def test_default_training_captures_98_percent_of_the_correlation_energy_of_two_electrons(tmp_path):
    config = resolve("moire-tiny", SYSTEM_A + STEPS)
    exact = exact_energies(config, [15.0], max_bands=16)["depths"][0]
    e0, e0_err, det = exact["extrapolated_per_electron_meV"], exact["extrapolation_error_meV"], exact["determinant_per_electron_meV"]
    assert det - e0 > 0.5  # a correlation energy large enough to measure a fraction of (0.86 meV per electron)
    groups = train(config, tmp_path / "vmc")["depths"]
    energy = sum(d["energy_per_electron_meV"] for d in groups) / len(groups)
    error = math.sqrt(sum(d["energy_error_meV"] ** 2 for d in groups)) / len(groups)
    fraction = (det - energy) / (det - e0)
    fraction_error = math.hypot(error, fraction * e0_err) / (det - e0)
    print(f"E0 {e0:.4f} ± {e0_err:.4f}  det {det:.4f}  VMC {energy:.4f} ± {error:.4f}  captured {fraction:.4f} ± {fraction_error:.4f}")
    assert energy >= e0 - 3 * math.hypot(error, e0_err)
    assert fraction_error < 0.02  # sampled long enough to tell the fraction to a few per cent
    assert fraction + 2 * fraction_error >= 0.98
