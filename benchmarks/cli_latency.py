"""How long the ``qernel`` command line takes to answer when it computes nothing.

Each command (``--help``, ``--version``, ``presets``, ``config``, a usage
error, ``train --help``, and bad input refused by ``train``, ``sample`` and
``phasediagram`` before they load the numerics) runs ``--repeats`` times in a fresh Python process,
as a user's shell starts it; the JSON gives the median and the slowest wall
time in seconds, the exit status, and whether JAX was imported. For scale it
also times ``python -c "import jax"`` and a bare ``python -c pass`` in the
same run (the machine may be shared: compare ratios, not seconds).

    python benchmarks/cli_latency.py [--repeats 5] [--out results/cli-latency-cpu.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROBE = (
    "import sys, runpy\n"
    "sys.argv = ['qernel', *sys.argv[1:]]\n"
    "try:\n"
    "    runpy.run_module('qernel_cli', run_name='__main__')\n"
    "except SystemExit as e:\n"
    "    code = e.code if isinstance(e.code, int) else 0\n"
    "else:\n"
    "    code = 0\n"
    "sys.stderr.write(f'\\nJAX_IMPORTED={\"jax\" in sys.modules}\\n')\n"
    "sys.exit(code)\n"
)
"""Runs ``python -m qernel_cli ARGS`` and reports on stderr whether JAX got imported."""

COMMANDS = {
    "--help": ["--help"],
    "--version": ["--version"],
    "presets": ["presets"],
    "config": ["config", "--preset", "moire150"],
    "usage error": ["train", "--no-such-option"],
    "train --help": ["train", "--help"],
    "train, wrong override": ["train", "--out", "/nonexistent/run", "--set", "model.layrs=3"],
    "train --resume, not a run": ["train", "--resume", "--out", "/nonexistent/run"],
    "sample, not a run": ["sample", "/nonexistent/run", "--depth", "5", "--out", "/nonexistent/s.zarr"],
    "phasediagram, bad grid": ["phasediagram", "/nonexistent/run", "--out", "/nonexistent/pd", "--depths", "0:30:1"],
}


def _time(argv: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, done


def measure(repeats: int) -> dict:
    env = {**os.environ, "COLUMNS": "200"}
    rows = {}
    for name, args in COMMANDS.items():
        times, codes, jax_loaded = [], set(), set()
        for _ in range(repeats):
            seconds, done = _time([sys.executable, "-c", PROBE, *args], env)
            times.append(seconds)
            codes.add(done.returncode)
            jax_loaded.add("JAX_IMPORTED=True" in done.stderr)
        rows[name] = {
            "argv": ["qernel", *args],
            "median_s": statistics.median(times),
            "max_s": max(times),
            "exit_codes": sorted(codes),
            "imports_jax": any(jax_loaded),
        }
    reference = {}
    for name, code in (("python -c pass", "pass"), ("python -c 'import jax'", "import jax")):
        times = [_time([sys.executable, "-c", code], env)[0] for _ in range(repeats)]
        reference[name] = {"median_s": statistics.median(times), "max_s": max(times)}
    slowest = max(r["median_s"] for r in rows.values())
    return {
        "benchmark": "cli_latency",
        "repeats": repeats,
        "commands": rows,
        "reference": reference,
        "slowest_median_s": slowest,
        "slowest_over_import_jax": slowest / reference["python -c 'import jax'"]["median_s"],
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    result = measure(args.repeats)
    emit(result, args.out, indent=2)


if __name__ == "__main__":
    main()
