"""Run every command of docs/tutorial.md and refresh its pictures (docs/images/tutorial-*.png).

    python docs/make_tutorial_images.py              # in a temporary directory
    python docs/make_tutorial_images.py --keep work  # keep the run directory in ./work

The commands are taken from the tutorial itself, with the convention that
tests/test_tutorial.py checks: in the ```bash blocks, every line that starts
with `qernel ` or `python ` is a command (a trailing backslash continues it on
the next line), except `python -m pip install ...`, which sets up the
environment; a ```python block whose first line is a comment naming a file
(`# plot_training.py`) is written to that file before the commands run. The
commands run in order, through bash, in one working directory, with the
`qernel` and `python` of this interpreter first on PATH.

The printed output of every command is echoed, so that the excerpts quoted in
the tutorial can be refreshed together with the pictures.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DOCS = Path(__file__).resolve().parent
TUTORIAL = DOCS / "tutorial.md"
IMAGES = DOCS / "images"

# Output of the tutorial's commands (relative to the working directory) -> picture in docs/images.
PICTURES = {
    "training.png": "tutorial-training.png",
    "runs/tutorial/s-plots/density_V005.000meV.png": "tutorial-density-5meV.png",
    "runs/tutorial/s-plots/density_V030.000meV.png": "tutorial-density-30meV.png",
    "runs/tutorial/s-plots/structure_V030.000meV.png": "tutorial-structure-30meV.png",
    "runs/tutorial/pd/phasediagram.png": "tutorial-phasediagram.png",
}

COMMAND = re.compile(r"^(qernel|python)\s")
SETUP = re.compile(r"^python\s+-m\s+pip\s")
FENCE = re.compile(r"^```(\w*)\s*$")
FILE_NAME = re.compile(r"^#\s*([\w.-]+\.py)\s*$")


def blocks(text: str) -> list[tuple[str, list[str]]]:
    """The fenced code blocks of a markdown text: (language, lines)."""
    found, language, lines = [], None, []
    for line in text.splitlines():
        match = FENCE.match(line.strip())
        if language is None:
            if match:
                language, lines = match.group(1), []
        elif line.strip() == "```":
            found.append((language, lines))
            language = None
        else:
            lines.append(line)
    if language is not None:
        raise ValueError("unterminated code block in the tutorial")
    return found


def commands(text: str) -> list[str]:
    """The commands of the ```bash blocks, in order (see the module docstring)."""
    result = []
    for language, lines in blocks(text):
        if language != "bash":
            continue
        joined, pending = [], ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1].strip() + " "
                continue
            joined.append((pending + line.strip()).strip())
            pending = ""
        result += [c for c in joined if COMMAND.match(c) and not SETUP.match(c)]
    return result


def files(text: str) -> dict[str, str]:
    """The ```python blocks that name their file on the first line: name -> content."""
    result = {}
    for language, lines in blocks(text):
        if language == "python" and lines and (match := FILE_NAME.match(lines[0].strip())):
            result[match.group(1)] = "\n".join(lines) + "\n"
    return result


def environment(shims: Path) -> dict[str, str]:
    """PATH for the commands: `python` is this interpreter, `qernel` the one installed beside it.

    ``shims`` (an empty directory) receives a `python` script, and a `qernel`
    script running ``python -m qernel_cli`` when none is installed beside the
    interpreter; rich tables are made as wide as in the tutorial's excerpts.
    """
    shims.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    scripts = {"python": f'exec "{sys.executable}" "$@"'}  # a script: a symlink would lose a virtual env
    if not (bin_dir / "qernel").is_file():
        scripts["qernel"] = f'exec "{sys.executable}" -m qernel_cli "$@"'
    for name, line in scripts.items():
        (shims / name).write_text(f"#!/bin/sh\n{line}\n")
        (shims / name).chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(shims), str(bin_dir), env.get("PATH", "")])
    env["COLUMNS"] = "120"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


@dataclass
class Result:
    command: str
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def run_tutorial(workdir: Path, text: str | None = None, echo=None, timeout: float = 1200.0) -> list[Result]:
    """Write the tutorial's files into ``workdir`` and run its commands there; stops at the first failure."""
    text = TUTORIAL.read_text() if text is None else text
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    for name, content in files(text).items():
        (workdir / name).write_text(content)
    results = []
    with tempfile.TemporaryDirectory(prefix="qernel-tutorial-bin-") as shims:
        env = environment(Path(shims))
        for command in commands(text):
            start = time.perf_counter()
            done = subprocess.run(
                command, check=False, shell=True, executable="/bin/bash", cwd=workdir, env=env,
                capture_output=True, text=True, timeout=timeout,
            )
            result = Result(command, time.perf_counter() - start, done.returncode, done.stdout, done.stderr)
            results.append(result)
            if echo is not None:
                echo(result)
            if done.returncode != 0:
                break
    return results


def _echo(result: Result) -> None:
    print(f"$ {result.command}    [{result.seconds:.1f} s, exit {result.returncode}]", flush=True)
    print(result.stdout, end="" if result.stdout.endswith("\n") or not result.stdout else "\n")
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qernel-tutorial-") as tmp:
        workdir = args.keep if args.keep is not None else Path(tmp)
        start = time.perf_counter()
        results = run_tutorial(workdir, echo=_echo)
        print(f"{len(results)} commands in {time.perf_counter() - start:.0f} s")
        if results[-1].returncode != 0:
            print(f"failed: {results[-1].command}", file=sys.stderr)
            return 1
        IMAGES.mkdir(exist_ok=True)
        for source, name in PICTURES.items():
            shutil.copyfile(workdir / source, IMAGES / name)
            print(f"{IMAGES / name}: {(IMAGES / name).stat().st_size / 1024:.0f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
