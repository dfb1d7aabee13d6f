"""Physics acceptance of `qernel train` on moire-tiny (marked slow; the interacting check is `extended`).

* Non-interacting limit: the trained family reproduces the exact plane-wave
  ground-state energy at every evaluated depth to 0.1 % and 3 standard errors,
  and pre-training alone already gets close.
* Interacting: at every evaluated depth VMC lowers the energy of the
  pre-trained model, and the final energy lies below the energy of the
  non-interacting Bloch determinant, each by more than 3 standard errors.
"""

import numpy as np
import pytest

from qernel_cli.config import resolve
from qernel_cli.vmc.reference import bloch_reference
from qernel_cli.vmc.train import train
from zarrtools import open_zarr

pytestmark = pytest.mark.slow

COMMON = ["sampler.walkers=256", "training.depths_per_step=2", "pretrain.steps=100"]


def test_noninteracting_family_reaches_exact_band_energies(tmp_path):
    config = resolve(
        "moire-tiny",
        [*COMMON, "hamiltonian.coulomb=false", "hamiltonian.V_min_meV=15.0", "hamiltonian.V_max_meV=30.0", "training.steps=400"],
    )
    summary = train(config, tmp_path / "free")
    depths = np.array([d["V_meV"] for d in summary["depths"]])
    exact = bloch_reference(config, depths, walkers=16, blocks=2)["exact_noninteracting"]
    energy = np.array([d["energy_per_electron_meV"] for d in summary["depths"]])
    error = np.array([d["energy_error_meV"] for d in summary["depths"]])
    print("V", depths, "E", energy, "±", error, "exact", exact)
    assert np.all(np.abs(energy - exact) <= 1e-3 * np.abs(exact)), (energy, exact)
    assert np.all(np.abs(energy - exact) <= 3 * error + 1e-9), (energy, error, exact)
    assert summary["rejected_steps"] == 0
    # Pre-training alone gets close: a small infidelity with the Bloch determinants.
    log = open_zarr(tmp_path / "free" / "train.zarr")
    assert float(log["pretrain_infidelity"][-10:].mean()) < 0.01


@pytest.mark.extended
def test_interacting_energy_decreases_and_beats_the_bloch_determinant(tmp_path):
    config = resolve("moire-tiny", [*COMMON, "training.steps=200", "training.evaluate_start=true"])
    summary = train(config, tmp_path / "coulomb")
    depths = np.array([d["V_meV"] for d in summary["depths"]])
    reference = bloch_reference(config, depths, walkers=256, blocks=10)
    energy = np.array([d["energy_per_electron_meV"] for d in summary["depths"]])
    error = np.array([d["energy_error_meV"] for d in summary["depths"]])
    start = np.array([d["start_energy_per_electron_meV"] for d in summary["depths"]])
    start_error = np.array([d["start_energy_error_meV"] for d in summary["depths"]])
    print("V", depths, "E", energy, "±", error, "start", start, "±", start_error, "Bloch", reference["total"], "±", reference["total_error"])
    # VMC lowers the energy of the pre-trained model at every evaluated depth ...
    assert np.all(start - energy > 3 * np.hypot(error, start_error)), (start, energy)
    # ... and ends below the single Bloch determinant with the interacting Hamiltonian.
    gap = reference["total"] - energy
    assert np.all(gap > 3 * np.hypot(error, reference["total_error"])), (energy, reference["total"])
