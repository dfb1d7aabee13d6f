"""The moiré Hamiltonian: potential, Ewald Coulomb interaction, local energy."""

from qernel_cli.hamiltonian.potential import moire_potential, total_moire_potential

__all__ = ["moire_potential", "total_moire_potential"]
