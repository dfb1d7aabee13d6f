"""The typer app ``qernel``: its consoles, the --version callback, one-line errors and ``main``."""

from __future__ import annotations

import functools
import sys
from typing import Annotated, Callable

import typer
from rich.console import Console
from rich.markup import escape

from qernel_cli import __version__, configure_jax
from qernel_cli.errors import QernelError, one_line, os_error_message

app = typer.Typer(
    name="qernel",
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console()
out.soft_wrap = not out.is_terminal  # in a pipe or a log file a line is never broken or cut
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``qernel: error: message`` on stderr (one line) and return the Exit to raise."""
    err.print(f"[bold red]qernel: error:[/] {escape(one_line(message))}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def warning(message: str) -> None:
    """Print ``warning: message`` on stderr (one line; the message is not read as markup)."""
    err.print(f"[yellow]warning:[/] {escape(one_line(message))}", soft_wrap=True, highlight=False)


def user_errors(command: Callable) -> Callable:
    """Turn :class:`QernelError` raised by a command into a one-line error and non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except QernelError as error:
            raise fail(str(error), error.exit_code) from None
        except OSError as error:  # the file system refused (disk full, read-only, no permission) where no caller said more
            if isinstance(error, BrokenPipeError):  # `qernel … | head`: typer exits quietly
                raise
            raise fail(os_error_message(error)) from None
        except Exception as error:  # noqa: BLE001  (only device out-of-memory is translated)
            if "RESOURCE_EXHAUSTED" not in str(error):
                raise
            first = str(error).split("RESOURCE_EXHAUSTED:", 1)[-1].strip().splitlines()[0]
            raise fail(
                f"out of device memory ({first}); lower training.walker_chunk or sampler.walkers, "
                "or use model.dtype=float32 (see docs/scaling.md); existing files are intact",
                3,
            ) from None

    return wrapper


def _version_callback(value: bool):
    if value:
        out.print(f"qernel {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
):
    """QERNEL: one transformer wavefunction trained by VMC on a whole family of moiré Hamiltonians.

    Typical use: `qernel train --preset moire-tiny --out runs/tiny`, then
    `qernel phasediagram runs/tiny --depths 0:30:16 --out pd`.
    """
    if ctx.invoked_subcommand is None:  # `qernel` alone: the help, with a usage error's exit status
        text = ctx.get_help()  # typer's rich help prints itself and returns ""
        if text:
            typer.echo(text)
        raise typer.Exit(2)


def main() -> None:
    """Console-script entry point.

    Usage errors (an unknown option, a bad option value, a missing argument)
    are one ``qernel: error:`` line pointing to ``--help``, like every other
    error; ``qernel`` alone prints the help.
    """
    configure_jax()
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # click's usage errors
        code = error.exit_code
        ctx = getattr(error, "ctx", None)
        fail(error.format_message() + (f" (see `{ctx.command_path} --help`)" if ctx is not None else ""), code)
    except typer.Abort:
        fail("aborted", 1)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
