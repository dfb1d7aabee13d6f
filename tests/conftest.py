import os

# One BLAS thread: the plane-wave eigensolvers are small, and on a loaded
# 2-core machine OpenBLAS threads contend badly with XLA's.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import qernel_cli  # noqa: E402,F401  (XLA flags must be set before the first computation)
import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import gc  # noqa: E402

import pytest  # noqa: E402
from clitools import run_qernel  # noqa: E402


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


TINY_RUN = [
    "model.layers=1", "model.width=16", "model.heads=2", "model.kv_heads=1", "model.mlp_width=16", "model.experts=2",
    "model.determinants=1", "model.film_hidden=8", "model.harmonics=1", "model.envelope_shells=2", "model.envelope_anchors=1",
    "model.pair_jastrow_qmax=0", "sampler.walkers=16", "sampler.burn_in=10", "sampler.steps_per_iteration=2",
    "training.depths_per_step=2", "pretrain.steps=0", "training.evaluate_start=false", "training.evaluate_blocks=2",
    "optimizer.name=adam", "hamiltonian.coulomb=false",
]
"""The smallest `moire-tiny` run that goes through every phase (the fastest to compile: no Ewald sum, Adam); tests that start `qernel` processes share it."""


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    """Environment for `qernel` subprocesses: one BLAS thread and a persistent JAX compilation cache for the session.

    Every `qernel train`/`sample` process compiles the same few programs; with
    the cache only the first one pays for it (a tiny run then starts in ~10 s instead of ~50 s).
    """
    cache = tmp_path_factory.mktemp("jax-cache")
    return {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "COLUMNS": "300",
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


@pytest.fixture(scope="session")
def tiny_run_args():
    """`--set` arguments of :data:`TINY_RUN`."""
    return [a for s in TINY_RUN for a in ("--set", s)]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, cli_env, tiny_run_args):
    """A trained tiny run directory (4 steps), made once per session by `qernel train`. Copy it before changing it."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    done = run_qernel(["train", "--out", out, "--steps", 4, "--quiet", *tiny_run_args], cli_env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_samples(tmp_path_factory, tiny_run, cli_env):
    """A sample store of :func:`tiny_run` at 10 meV and 40 meV (outside the trained 0–30 meV); (path, CompletedProcess)."""
    path = tmp_path_factory.mktemp("tiny-samples") / "s.zarr"
    args = ["sample", tiny_run, "--depth", 10, "--depth", 40, "--out", path, "--walkers", 4, "--records", 3, "--sweeps", 1, "--burn-in", 2, "--quiet"]
    done = run_qernel(args, cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    return path, done


@pytest.fixture(scope="session")
def qernel(cli_env):
    """``qernel(*args, timeout=300, env=None)``: run the CLI in a subprocess (``clitools.run_qernel``)."""

    def call(*args, timeout=300, env=None, **kwargs):
        return run_qernel(args, env or cli_env, timeout, **kwargs)

    return call
