"""The two-branch protocol: training both starts, resuming, their comparison, crossing and hysteresis window."""

import json
import math

import numpy as np
import pytest
from clitools import TINY_RUN, error_line, run_qernel, tree_hashes

from qernel_cli.config import ConfigError, resolve
from qernel_cli.observables.branches import branch_crossing, hysteresis_window, lower_branch

BOTH = [*TINY_RUN, "model.envelope_momenta=mixed", "pretrain.target=both", "training.steps=2"]  # (TINY_RUN: one branch, fixed momenta)


def test_both_starts_need_envelopes_that_can_break_the_translations():
    with pytest.raises(ConfigError, match="envelope_momenta"):
        resolve("moire-tiny", [*TINY_RUN, "model.envelope_momenta=fixed", "pretrain.target=both"])
    with pytest.raises(ConfigError, match="spin-polarised"):
        resolve("moire-tiny", ["electrons.n_up=3", "electrons.n_down=3", "pretrain.target=crystal"])


def test_crossing_of_a_straight_line_and_its_error_bar():
    """ΔE = b(V − V₀) with Gaussian noise of known σ: the root scatters around V₀ as its stated error says."""
    rng = np.random.default_rng(3)
    v = np.linspace(0.0, 30.0, 16)
    truth, slope, sigma = 17.3, -0.05, 0.03
    roots, errors = [], []
    for _ in range(400):
        c = branch_crossing(v, slope * (v - truth) + sigma * rng.normal(size=v.size), np.full(v.size, sigma))
        if c.found:
            roots.append(c.depth)
            errors.append(c.error)
            assert c.lower_below in ("liquid", "crystal") and c.window[0] <= c.depth <= c.window[1]
    roots, errors = np.array(roots), np.array(errors)
    assert len(roots) > 380
    pull = (roots - truth) / errors
    assert abs(np.mean(pull)) < 0.2 and 0.8 < np.std(pull) < 1.25
    clean = branch_crossing(v, slope * (v - truth), np.full(v.size, sigma))
    assert clean.found and clean.depth == pytest.approx(truth, abs=1e-9) and clean.lower_below == "liquid"
    assert clean.slope == pytest.approx(slope) and clean.sign_changes == 1


def test_no_crossing_and_an_unresolved_one():
    v = np.linspace(0.0, 30.0, 7)
    apart = branch_crossing(v, 0.5 + 0.0 * v, np.full(v.size, 0.01))
    assert not apart.found and math.isnan(apart.depth) and apart.lower_below == "liquid" and apart.sign_changes == 0
    noise = branch_crossing(v, np.array([0.01, -0.01, 0.02, -0.02, 0.01, -0.01, 0.01]), np.full(v.size, 0.1))
    assert not noise.found and noise.sign_changes == 6
    assert lower_branch(-0.3, 0.1) == "crystal" and lower_branch(0.3, 0.1) == "liquid" and lower_branch(0.15, 0.1) == "undecided"


def test_hysteresis_window_is_where_the_crystal_branch_is_more_ordered():
    v = np.array([0.0, 10.0, 15.0, 20.0, 30.0])
    liquid, crystal = np.array([0.5, 0.5, 0.52, 0.9, 0.95]), np.array([0.5, 0.9, 0.92, 0.95, 0.95])
    window = hysteresis_window(v, liquid, np.full(5, 0.02), crystal, np.full(5, 0.02))
    assert window["distinct_depths_meV"] == [10.0, 15.0] and (window["from_meV"], window["to_meV"]) == (10.0, 15.0)
    none = hysteresis_window(v, liquid, np.full(5, 0.5), crystal, np.full(5, 0.5))
    assert none["from_meV"] is None and none["distinct_depths_meV"] == []


def test_two_branches_train_join_resume_and_compare(tmp_path, cli_env):
    from qernel_cli.workflows.branch_diagram import branch_phase_diagram
    from qernel_cli.workflows.branches import train_branches

    run, config = tmp_path / "run", resolve("moire-tiny", BOTH)
    # One branch: its summary, the other pending.
    first = train_branches(config, run, branch="liquid")
    assert first["pending"] == ["crystal"] and list(first["branches"]) == ["liquid"] and (run / "branches.toml").is_file()
    assert f'target = "bloch"' in (run / "liquid" / "config.toml").read_text() and not (run / "crystal").exists()
    liquid = tree_hashes(run / "liquid")
    # The other branch joins the run from another process (same config); then the comparison is complete.
    (tmp_path / "both.toml").write_text(config.to_toml())
    done = run_qernel(["train", "--preset", tmp_path / "both.toml", "--branch", "crystal", "--out", run, "--json", "--quiet"], cli_env)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert f'target = "crystal"' in (run / "crystal" / "config.toml").read_text() and tree_hashes(run / "liquid") == liquid
    assert json.loads((run / "summary.json").read_text()) == summary and "pending" not in summary
    for name in ("liquid", "crystal"):
        assert summary["branches"][name]["steps"] == 2
    for d in summary["depths"]:
        delta = d["crystal_energy_per_electron_meV"] - d["liquid_energy_per_electron_meV"]
        assert d["crystal_minus_liquid_meV"] == pytest.approx(delta) and d["lower"] == lower_branch(delta, d["crystal_minus_liquid_error_meV"])
    # A branch that has begun does not start again; a resume leaves finished branches alone; the config stays the stored one.
    assert "has begun" in error_line(run_qernel(["train", "--preset", tmp_path / "both.toml", "--branch", "crystal", "--out", run], cli_env))
    crystal = tree_hashes(run / "crystal")
    resumed = run_qernel(["train", "--resume", "--out", run, "--json", "--quiet"], cli_env)
    assert resumed.returncode == 0 and json.loads(resumed.stdout)["depths"] == summary["depths"]
    assert tree_hashes(run / "liquid") == liquid and tree_hashes(run / "crystal") == crystal
    assert "stored config" in error_line(run_qernel(["train", "--resume", "--out", run, "--set", "training.seed=1"], cli_env))

    # Sampling needs one branch; the phase diagram takes both.
    refused = error_line(run_qernel(["sample", run, "--depth", "10", "--out", tmp_path / "s.zarr"], cli_env))
    assert "two branches" in refused and str(run / "liquid") in refused
    pd = branch_phase_diagram(run, np.array([5.0, 25.0]), tmp_path / "pd", records=3)
    assert (tmp_path / "pd" / "branches.png").is_file() and (tmp_path / "pd" / "liquid" / "phasediagram.zarr").exists()
    assert json.loads((tmp_path / "pd" / "phasediagram.json").read_text()) == pd
    assert [d["V_meV"] for d in pd["depths"]] == [5.0, 25.0] and pd["crossing"]["sign_changes"] in (0, 1)
    assert pd["ground_state_transition"] is None  # (needs three depths)
    for d in pd["depths"]:
        assert 0.0 <= d["liquid_site_order"] <= 1.0 and 0.0 <= d["crystal_site_order"] <= 1.0
