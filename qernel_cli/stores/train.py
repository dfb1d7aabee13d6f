"""The schema of ``train.zarr``: one row per optimisation step (per walker group where a quantity has one), plus the pre-training log."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from qernel_cli.stores import store

if TYPE_CHECKING:
    from qernel_cli.vmc.assembly import Run

V = store.Variable
TRAIN_VARIABLES = {
    "step": V(("step",), "int64", "1", "optimisation step index"),
    "depth": V(("step", "group"), "float64", "meV", "moiré depth V of each walker group in this step"),
    "energy": V(("step", "group"), "float64", "meV", "mean local energy per electron"),
    "energy_error": V(("step", "group"), "float64", "meV", "standard error of the energy per electron (walkers treated as independent)"),
    "variance": V(("step", "group"), "float64", "meV^2", "variance of the total local energy"),
    "kinetic": V(("step", "group"), "float64", "meV", "kinetic energy per electron"),
    "potential": V(("step", "group"), "float64", "meV", "moiré potential energy per electron"),
    "interaction": V(("step", "group"), "float64", "meV", "Coulomb interaction energy per electron"),
    "acceptance": V(("step", "group"), "float64", "1", "Metropolis acceptance rate"),
    "clipped_fraction": V(("step", "group"), "float64", "1", "fraction of local energies clipped to median ± clip_mad·MAD in the gradient"),
    "move_width": V(("step", "group"), "float64", "a_M", "Gaussian move width after adaptation"),
    "learning_rate": V(("step",), "float64", "1", "learning rate of this step"),
    "update_norm": V(("step",), "float64", "1", "Euclidean norm of the parameter update"),
    "accepted": V(("step",), "int8", "1", "1 if the step was finite and applied, 0 if rejected and rolled back"),
    "wall_time": V(("step",), "float64", "s", "wall-clock time since the start of the run (summed over resumes)"),
}
PRETRAIN_VARIABLES = {
    "pretrain_infidelity": V(("pretrain_step", "group"), "float64", "1", "1 − fidelity with the Bloch determinant"),
    "pretrain_depth": V(("pretrain_step", "group"), "float64", "meV", "depth of each group in the pre-training step"),
}


def create_train_store(path: Path, run: Run, *, pretrain_steps: int) -> Any:
    """A new train.zarr for ``run`` (with the pre-training variables when it pre-trains), its config and units in the attributes."""
    cfg = run.config
    mat = cfg.material_units
    variables = dict(TRAIN_VARIABLES)
    if pretrain_steps:
        variables.update(PRETRAIN_VARIABLES)
    return store.create(
        path,
        variables,
        {"group": run.n_groups},
        {
            "kind": "train",
            "config_toml": cfg.to_toml(),
            "n_electrons": cfg.n_electrons,
            "energy_unit_meV": mat.energy_unit_meV,
            "coulomb_strength_U": run.physics.coulomb_strength,
            "training_depths_moire": [run.physics.v_min, run.physics.v_max],
            "seed": cfg.training.seed,
        },
    )
