"""`qernel train`: run directories, store, checkpoints, exact resume, rollback of non-finite steps."""

import json

import numpy as np
import pytest

from qernel_cli.stores import checkpoint
from qernel_cli.config import resolve
from qernel_cli.vmc.assembly import build, initial_state
from qernel_cli.vmc.step import make_step
from qernel_cli.workflows import train as training
from qernel_cli.stores.run_dir import RunError
from qernel_cli.workflows.train import train
from clitools import TINY_RUN
from zarrtools import open_zarr

SMALL = TINY_RUN
"""The tests' shared tiny run (``clitools.TINY_RUN``): its programs are compiled once per test session."""


def small_config(steps, *extra):
    return resolve("moire-tiny", [*SMALL, f"training.steps={steps}", *extra])


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    """A short run with a NaN injected into the local energies at step 2."""
    out = tmp_path_factory.mktemp("runs") / "faulty"
    summary = train(small_config(5), out, fault_at={2: float("nan")})
    return out, summary


def test_store_has_named_dimensions_units_and_provenance(faulty_run):
    out, summary = faulty_run
    ds = open_zarr(out / "train.zarr")
    assert ds["energy"].dims == ("step", "group") and ds.sizes["step"] == 5 and ds.sizes["group"] == 2
    assert ds["energy"].attrs["units"] == "meV" and ds["move_width"].attrs["units"] == "a_M"
    assert ds["pretrain_infidelity"].dims == ("pretrain_step", "group") and ds.sizes["pretrain_step"] == 2
    assert list(ds["step"].values) == [0, 1, 2, 3, 4]
    assert ds.attrs["jax_version"] and ds.attrs["qernel_version"] and ds.attrs["seed"] == 0
    assert resolve("moire-tiny", [*SMALL, "training.steps=5"]).to_toml() == ds.attrs["config_toml"]
    # Depths are stratified: group g always lies in its half of [0, 30] meV.
    depth = ds["depth"].values
    assert np.all((depth[:, 0] >= 0) & (depth[:, 0] < 15) & (depth[:, 1] >= 15) & (depth[:, 1] < 30))
    assert np.all((ds["acceptance"].values >= 0) & (ds["acceptance"].values <= 1))


def test_nonfinite_step_is_rejected_and_rolled_back(faulty_run):
    out, summary = faulty_run
    ds = open_zarr(out / "train.zarr")
    assert list(ds["accepted"].values) == [1, 1, 0, 1, 1]
    assert np.isnan(ds["energy"].values[2]).all() and np.isfinite(ds["energy"].values[[0, 1, 3, 4]]).all()
    assert summary["rejected_steps"] == 1 and summary["steps"] == 5
    assert all(np.isfinite(d["energy_per_electron_meV"]) for d in summary["depths"])
    assert json.loads((out / "summary.json").read_text()) == summary
    # Numerical health: 1 of 5 steps rejected is far above 1 % and is the one warning.
    health = summary["health"]
    assert health["rejected_steps"] == 1 and health["steps"] == 5
    acceptance = ds["acceptance"].values
    assert health["acceptance"] == pytest.approx(np.mean(acceptance), rel=1e-12)  # the chains moved in every step
    clipped = ds["clipped_fraction"].values
    assert ds["clipped_fraction"].dims == ("step", "group") and np.all((clipped[[0, 1, 3, 4]] >= 0) & (clipped[[0, 1, 3, 4]] <= 1))
    assert all(d["autocorrelation_sweeps"] >= 2.0 for d in summary["depths"])  # τ ≥ 1 block of 2 sweeps
    assert any("1 of 5 steps were non-finite" in w for w in summary["warnings"])
    prov = summary["provenance"]
    assert prov["seed"] == 0 and prov["jax_version"] and prov["equinox_version"] and prov["folx_version"] and prov["device"]


def test_repeated_failures_stop_with_a_valid_checkpoint(tmp_path):
    out = tmp_path / "diverged"
    nan = float("nan")
    with pytest.raises(RunError, match="consecutive non-finite steps"):
        train(small_config(30), out, fault_at={s: nan for s in range(30)})
    header = checkpoint.read_header(out / "checkpoint.npz")
    assert header["step"] == training.MAX_CONSECUTIVE_FAILURES  # every iteration counts, rejected or not
    assert header["rejected"] == training.MAX_CONSECUTIVE_FAILURES


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    train(small_config(6), full)
    train(small_config(3), part)
    train(None, part, resume=True, steps=6)
    a = open_zarr(full / "train.zarr")
    b = open_zarr(part / "train.zarr")
    assert b.sizes["step"] == 6
    for name in ("energy", "variance", "acceptance", "move_width", "depth"):
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-10, atol=1e-12, err_msg=name)
    template_state = checkpoint.restore(full / "checkpoint.npz", _state_template(full))[0]
    resumed_state = checkpoint.restore(part / "checkpoint.npz", _state_template(part))[0]
    import jax

    for x, y in zip(jax.tree.leaves(template_state.params), jax.tree.leaves(resumed_state.params)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-10, atol=1e-12)
    # Same seed, same device count: the same numbers, bit for bit.
    full_summary = json.loads((full / "summary.json").read_text())
    part_summary = json.loads((part / "summary.json").read_text())
    assert part_summary["parameter_fingerprint"] == full_summary["parameter_fingerprint"]
    assert part_summary["depths"] == full_summary["depths"]


def _state_template(run_dir):
    """Rebuild the TrainState structure of a run (as the resume path does)."""
    import jax.numpy as jnp

    from qernel_cli.config import from_dict, read_toml
    from qernel_cli.vmc.mcmc import Walkers
    from qernel_cli.vmc.step import TrainState, init_opt_state

    cfg = from_dict(read_toml(run_dir / "config.toml"))
    run = build(cfg)
    g, w, n = run.n_groups, run.walkers_per_group, cfg.n_electrons
    walkers = Walkers(positions=jnp.zeros((g, w, n, 2)), conditions=jnp.zeros((g, 1)), log_abs=jnp.zeros((g, w)), width=jnp.zeros(g))
    return TrainState(params=run.params, opt_state=init_opt_state(run.settings, run.params), walkers=walkers, key=jnp.zeros(2, jnp.uint32), step=jnp.zeros((), jnp.int64))


def test_run_directory_safety(tmp_path, faulty_run):
    out, _ = faulty_run
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RunError, match="already exists"):
        train(small_config(2), out)
    assert sorted(p.name for p in out.iterdir()) == before
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "precious.txt").write_text("data")
    with pytest.raises(RunError, match="not a QERNEL run directory"):
        train(small_config(2), other, force=True)
    assert (other / "precious.txt").read_text() == "data"
    with pytest.raises(RunError, match="cannot resume"):
        train(None, tmp_path / "missing", resume=True)
    with pytest.raises(RunError, match="multiple of"):
        train(resolve("moire-tiny", [*SMALL, "sampler.walkers=33"]), tmp_path / "odd")


def test_cli_train_json_summary_and_refusal(tmp_path):
    from typer.testing import CliRunner

    from qernel_cli.cli import app

    runner = CliRunner()
    out = tmp_path / "cli-run"
    args = ["train", "--out", str(out), "--steps", "2", "--quiet", "--json"] + [a for s in SMALL for a in ("--set", s)]
    args += ["--set", "training.evaluate_start=true"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["steps"] == 2 and len(summary["depths"]) == 2
    assert all(np.isfinite(d["energy_per_electron_meV"]) and d["energy_error_meV"] > 0 for d in summary["depths"])
    # The energy before VMC (after pre-training) is measured at the same depths.
    assert all(np.isfinite(d["start_energy_per_electron_meV"]) and d["start_energy_error_meV"] > 0 for d in summary["depths"])
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume", "--steps", "3", "--quiet", "--json"])
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 3


def test_ctrl_c_saves_a_checkpoint_and_resume_completes(tmp_path):
    """SIGINT mid-run: exit 130 with a one-line message, checkpoint and store agree, --resume finishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import zarr

    out = tmp_path / "interrupted"
    args = [sys.executable, "-m", "qernel_cli.cli", "train", "--out", str(out), "--steps", "4000", "--quiet", "--json"]
    args += [a for s in SMALL for a in ("--set", s)]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                if zarr.open_group(str(out / "train.zarr"), mode="r", use_consolidated=False)["step"].shape[0] >= 3:
                    break
            except Exception:  # store not created yet
                continue
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout == "" and "Traceback" not in stderr
    assert "interrupted (SIGINT) at step" in stderr and "--resume" in stderr
    header = checkpoint.read_header(out / "checkpoint.npz")
    stopped = header["step"]
    assert 3 <= stopped < 4000
    ds = open_zarr(out / "train.zarr")
    assert list(ds["step"].values) == list(range(stopped))
    assert ds.sizes["pretrain_step"] == 2
    summary = train(None, out, resume=True, steps=stopped + 2)
    assert summary["steps"] == stopped + 2
    ds = open_zarr(out / "train.zarr")
    assert list(ds["step"].values) == list(range(stopped + 2)) and ds.sizes["pretrain_step"] == 2


def test_the_step_compiles_once(caplog):
    """Later optimisation steps reuse the first step's executable (no recompilation)."""
    import logging

    import jax
    import jax.numpy as jnp

    run = build(small_config(3))
    state = initial_state(run, jax.random.PRNGKey(0))
    step = make_step(run.static, run.physics, run.settings, run.ewald)
    fault = jnp.zeros(())
    state, _ = step(state, fault)
    jax.block_until_ready(state)
    with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
        caplog.clear()
        for _ in range(2):
            state, stats = step(state, fault)
        jax.block_until_ready(state)
    compiles = [r.getMessage() for r in caplog.records if "Compiling" in r.getMessage() or "compil" in r.getMessage().lower()]
    assert not compiles, compiles
    assert int(state.step) == 3
