"""``python -m qernel_cli.cli`` runs the ``qernel`` command line."""

from qernel_cli.cli import main

main()
