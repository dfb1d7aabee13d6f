"""User-facing errors: the CLI prints their message as one line and exits non-zero."""


class QernelError(Exception):
    """An error caused by the user's input or environment, not by a bug."""

    exit_code = 2
