"""Helpers for tests that run the `qernel` command line in subprocesses (faults, bad input)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ERROR_PREFIX = "qernel: error:"
PROGRESS_LINE = re.compile(r"^(\[\d\d:\d\d:\d\d\] |(pre-train|VMC|sample|phase diagram) \d+)")
"""The plain progress lines a command writes to a stderr that is not a terminal (``qernel_cli.progress``)."""


def run_qernel(args, env, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m qernel_cli ARGS` in a subprocess (text output captured)."""
    return subprocess.run([sys.executable, "-m", "qernel_cli", *map(str, args)], capture_output=True, text=True, env=env, timeout=timeout, **kwargs)


def tree_hashes(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (or of ``root`` itself), by relative path; directories as "dir"."""
    root = Path(root)
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        hashes[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def error_line(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """Assert that a failed command printed exactly one error line (warnings aside) and nothing else; return the message.

    No traceback, no usage box, the given exit status, nothing on stdout.
    """
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert done.returncode == code, (done.returncode, done.stderr[-4000:])
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    others = [line for line in lines if not line.startswith((ERROR_PREFIX, "warning:")) and not PROGRESS_LINE.match(line)]
    assert len(errors) == 1 and not others, done.stderr[-4000:]
    assert done.stdout == "", done.stdout[-2000:]
    return errors[0][len(ERROR_PREFIX) :].strip()
