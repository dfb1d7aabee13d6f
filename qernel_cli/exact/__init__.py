"""Exact diagonalisation of a few electrons on the moiré torus (``qernel exact``).

The many-body Hamiltonian of :mod:`qernel_cli.hamiltonian` (kinetic, moiré
potential, Ewald Coulomb with its background and Madelung term) written in
second quantisation over the lowest Bloch bands at the supercell's momenta,
block-diagonal in total crystal momentum (and S_z), diagonalised by Lanczos.
A truncated band basis gives a variational upper bound to the true ground
state; the bound is followed as bands are added and extrapolated.

Modules: :mod:`.band_basis` (the orbitals), :mod:`.coulomb_matrix`
(two-body matrix elements), :mod:`.fock_space` (sectors and k-body operators),
:mod:`.diagonalise` (ground states, energy parts, band sweeps).
"""
