"""``python -m qernel_cli`` runs the ``qernel`` command line."""

from qernel_cli.cli import main

main()
