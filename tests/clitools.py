"""Helpers for tests that run the `qernel` command line in subprocesses (faults, bad input)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ERROR_PREFIX = "qernel: error:"
PROGRESS_LINE = re.compile(r"^(\[\d\d:\d\d:\d\d\] |(pre-train|VMC|sample|phase diagram) \d+)")
"""The plain progress lines a command writes to a stderr that is not a terminal (``qernel_cli.progress``)."""

FAST_COMPILE = "--xla_backend_optimization_level=0"
"""XLA flag of every test process (set by conftest, inherited by subprocesses).

The tests compile far more than they compute: at LLVM optimisation level 0 a
tiny `qernel train` compiles in ~60 % of the time (36 s instead of 58 s cold,
2-core CPU) and runs its steps ~1.3× slower, with bit-identical results.
Long physics runs that compute more than they compile drop it (``xla_flags(fast_compile=False)``).
"""


def load_script(path: Path) -> ModuleType:
    """A script of the repository (a benchmark, a docs generator) imported as a module.

    Its folder goes on ``sys.path`` (scripts import their neighbours) and the
    module is registered in ``sys.modules`` (dataclasses look their module up there).
    """
    path = Path(path).resolve()
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    name = f"{path.parent.name}_{path.stem}_script"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def xla_flags(devices: int | None = None, fast_compile: bool = True) -> str:
    """``XLA_FLAGS`` for a test subprocess: :data:`FAST_COMPILE` and, if given, that many CPU devices."""
    flags = [FAST_COMPILE] if fast_compile else []
    if devices:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    return " ".join(flags)


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


TINY_RUN = [
    "model.layers=1", "model.width=16", "model.heads=2", "model.kv_heads=1", "model.mlp_width=16", "model.experts=2",
    "model.determinants=1", "model.film_hidden=8", "model.harmonics=1", "model.envelope_shells=2", "model.envelope_anchors=1",
    "model.pair_jastrow_qmax=0", "model.radial_jastrow=0", "sampler.walkers=16", "sampler.burn_in=10", "sampler.steps_per_iteration=2",
    "training.depths_per_step=2", "pretrain.steps=2", "training.evaluate_start=false", "training.evaluate_blocks=2",
    "hamiltonian.coulomb=false", "model.envelope_momenta=fixed", "pretrain.target=bloch",
]
"""The smallest `moire-tiny` run that goes through every phase (pre-training, burn-in, SPRING steps, evaluation),
without the Ewald sum (slow to compile). Every test that trains a model for its own sake, in a subprocess or in
this process, uses it (with its own number of steps), so that the programs it compiles are found in the shared cache."""
