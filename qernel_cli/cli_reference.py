"""Markdown reference of the ``qernel`` command line, generated from the typer app.

The reference is read off the Click objects that typer builds from
``qernel_cli.cli.app`` (``typer.main.get_command``): every command, its help
text and every argument and option with its flags, type, allowed range,
default and help. Nothing is written by hand, so the reference cannot miss a
command or an option. Regenerate ``docs/cli.md`` with

    python -m qernel_cli.cli_reference > docs/cli.md

(``tests/test_docs.py`` fails while the file differs from the rendered text).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperOption

REGENERATE = "python -m qernel_cli.cli_reference > docs/cli.md"


def _click_context(command: Any, name: str, parent: Any = None) -> Any:
    """A Click context for ``command`` (needed to ask parameters for their type and default)."""
    return command.context_class(command, info_name=name, parent=parent)


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _help_text(text: str | None) -> str:
    """A command's help text as Markdown paragraphs (Click's ``\\b`` no-rewrap markers dropped)."""
    if not text:
        return ""
    text = inspect.cleandoc(text)
    paragraphs = [p for p in text.split("\n\n") if p.strip()]
    return "\n\n".join("\n".join(line for line in p.splitlines() if line.strip() != "\b") for p in paragraphs)


def _summary(command: Any) -> str:
    """The first paragraph of a command's help, on one line."""
    if getattr(command, "short_help", None):
        return _cell(command.short_help)
    text = _help_text(command.help)
    return _cell(text.split("\n\n")[0]) if text else ""


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False))


def _type_name(param: Any, ctx: Any) -> str:
    """Value type as the CLI shows it (``int``, ``path``, ``str``, ...); ``bool`` for flags."""
    if isinstance(param, (TyperOption, TyperArgument)):  # typer's own parameters
        name = str(param.display_type(ctx)).strip("<>")
    else:  # plain Click parameters
        name = str(getattr(param.type, "name", param.type))
    name = name.removesuffix(" range")
    if name.startswith("list[") and name.endswith("]"):
        name = name[5:-1]
    return name


def _range(param: Any) -> str:
    """'≥ 1', '0 … 10' etc. for a numeric option with bounds, else ''."""
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    if low is None and high is None:  # Click's IntRange/FloatRange keep the bounds on the type
        low, high = getattr(getattr(param, "type", None), "min", None), getattr(getattr(param, "type", None), "max", None)
    if low is not None and high is not None:
        return f"{low} … {high}"
    if low is not None:
        return f"≥ {low}"
    if high is not None:
        return f"≤ {high}"
    return ""


def _type_cell(param: Any, ctx: Any) -> str:
    parts = [_type_name(param, ctx)]
    bounds = _range(param)
    if bounds:
        parts.append(bounds)
    text = " ".join(parts)
    if getattr(param, "multiple", False):
        text += ", repeatable"
    return text


def _default_cell(param: Any, ctx: Any) -> str:
    if param.required:
        return "required"
    default = param.get_default(ctx, call=False)
    if callable(default):
        return "(dynamic)"
    if _is_flag(param) and isinstance(default, bool):
        if param.secondary_opts:  # --x / --no-x: the default is the form that is on
            return f"`{param.opts[0] if default else param.secondary_opts[0]}`"
        return "on" if default else "off"
    if default is None or default == () or default == []:
        return "—"
    if isinstance(default, (list, tuple)):
        return ", ".join(f"`{v}`" for v in default)
    return f"`{default}`"


def _argument_name(param: Any) -> str:
    """A positional argument as usage lines write it: its metavar, or its name in capitals."""
    return str(getattr(param, "metavar", None) or param.name).upper()


def _flags_cell(param: Any) -> str:
    """``--out``, ``-o`` for options (``--x`` / ``--no-x`` for switches); the metavar for arguments."""
    if param.param_type_name == "argument":
        return f"`{_argument_name(param)}`"
    flags = ", ".join(f"`{opt}`" for opt in param.opts)
    if param.secondary_opts:
        flags += " / " + ", ".join(f"`{opt}`" for opt in param.secondary_opts)
    return flags


def _param_table(params: list[Any], ctx: Any) -> list[str]:
    lines = ["| Name | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for p in params:
        lines.append(
            f"| {_flags_cell(p)} | {_cell(_type_cell(p, ctx))} | {_default_cell(p, ctx)} | {_cell(getattr(p, 'help', None) or '')} |"
        )
    return lines


def _visible(params: list[Any]) -> list[Any]:
    return [p for p in params if not getattr(p, "hidden", False)]


def _usage(command: Any, ctx: Any, path: str) -> str:
    pieces = []
    for param in command.params:
        if param.param_type_name == "argument" and not getattr(param, "hidden", False):
            pieces.append(_argument_name(param))
    return " ".join([path, "[OPTIONS]", *pieces])


def _command_section(name: str, command: Any, parent_ctx: Any, prog: str) -> list[str]:
    ctx = _click_context(command, name, parent_ctx)
    path = f"{prog} {name}"
    lines = [f"## `{path}`", "", "```", _usage(command, ctx, path), "```", ""]
    text = _help_text(command.help)
    if text:
        lines += [text, ""]
    params = _visible(command.params)
    arguments = [p for p in params if p.param_type_name == "argument"]
    options = [p for p in params if p.param_type_name != "argument"]
    if arguments:
        lines += ["**Arguments**", "", *_param_table(arguments, ctx), ""]
    panels: dict[str | None, list[Any]] = {}
    for p in options:
        panels.setdefault(getattr(p, "rich_help_panel", None), []).append(p)
    for panel, members in panels.items():
        lines += [f"**{panel or 'Options'}**", "", *_param_table(members, ctx), ""]
    if not options:
        lines += ["No options besides `--help`.", ""]
    return lines


def commands(app: typer.Typer | None = None) -> dict[str, Any]:
    """The app's visible commands, name → Click command, in the order ``qernel --help`` lists them."""
    group = _group(app)
    ctx = _click_context(group, group.name or "qernel")
    found = {}
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not getattr(command, "hidden", False):
            found[name] = command
    return found


def _group(app: typer.Typer | None) -> Any:
    if app is None:
        from qernel_cli.cli import app
    return typer.main.get_command(app)


def option_flags(command: Any) -> list[str]:
    """Every flag of a command's visible options (long and short, with the ``--no-`` forms)."""
    flags = []
    for p in _visible(command.params):
        if p.param_type_name != "argument":
            flags += [*p.opts, *p.secondary_opts]
    return flags


def render(app: typer.Typer | None = None, prog: str = "qernel") -> str:
    """The complete Markdown reference of ``app`` (default: ``qernel_cli.cli.app``)."""
    group = _group(app)
    ctx = _click_context(group, prog)
    found = commands(app)
    lines = [
        f"# `{prog}` command-line reference",
        "",
        f"<!-- Generated from the typer app in qernel_cli/cli/ by `{REGENERATE}`; do not edit by hand. -->",
        "",
        (
            f"Generated from the command line itself; regenerate with `{REGENERATE}` after changing a command "
            "(`tests/test_docs.py` checks that this file is up to date)."
        ),
        "",
    ]
    text = _help_text(group.help)
    if text:
        lines += [text, ""]
    lines += ["```", f"{prog} [OPTIONS] COMMAND [ARGS]...", "```", ""]
    group_options = _visible(group.params)
    if group_options:
        lines += ["**Options of `qernel` itself**", "", *_param_table(group_options, ctx), ""]
    lines += ["Every command also accepts `--help`.", "", "| Command | Summary |", "| --- | --- |"]
    for name, command in found.items():
        anchor = f"{prog}-{name}".lower()
        lines.append(f"| [`{prog} {name}`](#{anchor}) | {_summary(command)} |")
    lines.append("")
    for name, command in found.items():
        lines += _command_section(name, command, ctx, prog)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print the reference (UTF-8) on stdout, or write it to the file given as the only argument."""
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if argv:
        with open(argv[0], "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.buffer.write(text.encode("utf-8"))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
