import os

# One BLAS thread: the plane-wave eigensolvers are small, and on a loaded
# 2-core machine OpenBLAS threads contend badly with XLA's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# One persistent JAX compilation cache for the test process and every `qernel`
# process it starts: a program that several tests build (the same model,
# sampler or step, traced again) is compiled once per run. Point
# JAX_COMPILATION_CACHE_DIR at a lasting directory to keep it between runs.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="qernel-test-jax-cache-")
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")

# Compile fast (see clitools.FAST_COMPILE), in this process and the `qernel` processes it starts.
from clitools import FAST_COMPILE  # noqa: E402

if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {FAST_COMPILE}".strip()

from qernel_cli import configure_jax  # noqa: E402

configure_jax()  # before the first computation: the XLA flags are read when the backend starts

import jax  # noqa: E402

import fcntl  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from clitools import TINY_RUN, run_qernel  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compilation caches after each test module.

    Every training run builds fresh jitted closures, so one long pytest process
    accumulates hundreds of compiled XLA programs; releasing them per module
    keeps the process's memory flat (a CI run without this crashed inside
    XLA's compiler late in the session).
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def cli_env():
    """Environment for `qernel` subprocesses: one BLAS thread and the session's persistent JAX compilation cache (set above).

    Every `qernel train`/`sample` process compiles the same few programs; with
    the cache only the first one pays for it (a tiny run then starts in ~10 s instead of ~50 s).
    """
    return {**os.environ, "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "300"}


@pytest.fixture(scope="session")
def tiny_run_args():
    """`--set` arguments of :data:`TINY_RUN`."""
    return [a for s in TINY_RUN for a in ("--set", s)]


def made_once(tmp_path_factory, name: str, make) -> tuple[Path, subprocess.CompletedProcess]:
    """A directory made once per pytest run by ``make(directory) -> CompletedProcess``, shared by all xdist workers.

    The first worker to ask makes it under a file lock; the others wait and
    reuse it (with the process's exit status and output, kept as JSON beside it).
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's base directory, common to the workers
    directory, record = root / f"shared-{name}", root / f"shared-{name}.json"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            directory.mkdir()
            done = make(directory)
            record.write_text(json.dumps({"args": [str(a) for a in done.args], "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr}))
    saved = json.loads(record.read_text())
    return directory, subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])


@pytest.fixture(scope="session")
def tiny_train(tmp_path_factory, cli_env, tiny_run_args):
    """`qernel train` of :data:`TINY_RUN` (4 steps) with stdout and stderr pipes, as in a batch job; (run directory, CompletedProcess)."""
    env = {**cli_env, "QERNEL_PROGRESS_EVERY": "2"}
    where, done = made_once(tmp_path_factory, "tiny", lambda d: run_qernel(["train", "--out", d / "run", "--steps", 4, *tiny_run_args], env, timeout=600))
    assert done.returncode == 0, done.stderr[-3000:]
    return where / "run", done


@pytest.fixture(scope="session")
def tiny_run(tiny_train):
    """A trained tiny run directory (4 steps), made once per session by `qernel train`. Copy it before changing it."""
    return tiny_train[0]


@pytest.fixture(scope="session")
def tiny_samples(tmp_path_factory, tiny_run, cli_env):
    """A sample store of :func:`tiny_run` at 10 meV and 40 meV (outside the trained 0–30 meV); (path, CompletedProcess)."""
    args = ["sample", tiny_run, "--depth", 10, "--depth", 40, "--walkers", 4, "--records", 3, "--sweeps", 1, "--burn-in", 2, "--quiet"]
    where, done = made_once(tmp_path_factory, "tiny-samples", lambda d: run_qernel([*args, "--out", d / "s.zarr"], cli_env))
    assert done.returncode == 0, done.stderr[-3000:]
    return where / "s.zarr", done


@pytest.fixture(scope="session")
def qernel(cli_env):
    """``qernel(*args, timeout=300, env=None)``: run the CLI in a subprocess (``clitools.run_qernel``)."""

    def call(*args, timeout=300, env=None, **kwargs):
        return run_qernel(args, env or cli_env, timeout, **kwargs)

    return call


LONGEST_FIRST = (
    "test_parallel.py", "test_tutorial.py", "test_train_physics.py", "test_head_laplacian.py", "test_train.py",
    "test_faults.py", "test_bad_input.py", "test_stop_and_devices.py", "test_linalg.py", "test_workflows.py",
    "test_crystal.py", "test_chunking.py", "test_benchmark_run.py", "test_local_energy.py", "test_ewald.py", "test_model.py",
)
"""Test files by measured time, longest first (`-n 2 --dist loadfile`, 2 cores). They are collected in this order,
and xdist hands whole files out in collection order (``--no-loadscope-reorder`` in pyproject.toml; by default it
would hand out the files with the most tests first, which left a long one-test file running alone at the end)."""


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
