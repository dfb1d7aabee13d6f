"""benchmarks/peer.py: the side-by-side table is built from both sides' own reports (no peer run here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer.py"


def _load():
    return load_script(SCRIPT)


PEER = {  # the shape of ../shared/peer/timing.sh's JSON
    "walkers": 256, "mcmc_steps_per_iter": 10, "optimizer": "kfac",
    "cases": [
        {"N": 6, "cells": "3x3", "median_s_per_iter": 0.5, "start_to_iter0_done_s": 50.0, "peak_rss_GB": 1.0},
        {"N": 24, "cells": "6x6", "median_s_per_iter": 5.0, "start_to_iter0_done_s": 70.0, "peak_rss_GB": 2.0},
    ],
}
QERNEL = {  # the shape of benchmarks/run.py's JSON (only N = 6 measured)
    "presets": [{
        "preset": "moire-tiny", "n_electrons": 6, "parameters": 1000,
        "step": {"walkers": 256, "mcmc_sweeps_per_step": 10, "optimizer": "spring", "step_s_median": 2.0,
                 "time_to_first_step_s": 40.0, "peak_rss_GiB": 2.0 * 1e9 / 2**30},
        "forward": {"per_walker_s": 1e-4}, "forward_laplacian": {"per_walker_s": 2e-3}, "folx_laplacian": {"error": "x"},
    }],
}


def test_ratios_are_qernel_over_peer_for_the_systems_both_measured():
    rows = _load().compare(PEER, QERNEL)
    assert [r["N"] for r in rows] == [6]
    ratio = rows[0]["qernel_over_peer"]
    assert ratio["step_s"] == pytest.approx(4.0) and ratio["launch_to_first_step_s"] == pytest.approx(0.8)
    assert ratio["peak_rss_GB"] == pytest.approx(2.0)
    q = rows[0]["qernel"]
    assert q["log_psi_per_walker_ms"] == pytest.approx(0.1) and q["forward_laplacian_per_walker_ms"] == pytest.approx(2.0)
    assert q["folx_laplacian_per_walker_ms"] is None  # a phase that failed is not a number


def test_a_peer_run_with_other_walkers_is_refused(tmp_path):
    (tmp_path / "peer.json").write_text(json.dumps({**PEER, "walkers": 128}))
    done = subprocess.run([sys.executable, str(SCRIPT), "--peer-json", str(tmp_path / "peer.json")], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "128 walkers" in done.stderr


def _trace(path: Path, seconds: list[float]) -> Path:
    """A run_pw.py trace.tsv with the given per-iteration seconds."""
    lines = ["# iter\twall_s_since_start\tdt_s\tE_code(E_M,total)\tE_per_elec_meV\tvar_code\tpmove"]
    wall = 60.0
    for i, dt in enumerate(seconds):
        wall += dt
        lines.append(f"{i}\t{wall:.3f}\t{dt:.4f}\t-10.0\t-60.0\t0.1\t0.5")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_peer_iteration_time_is_the_median_after_the_warm_up(tmp_path):
    median, timed = _load()._peer_iteration_s(_trace(tmp_path / "t.tsv", [30.0, 9.0, 1.0, 3.0, 2.0]), warmup=2)
    assert (median, timed) == (2.0, 3)
    with pytest.raises(SystemExit):
        _load()._peer_iteration_s(_trace(tmp_path / "u.tsv", [30.0]), warmup=2)


def test_both_steps_are_taken_apart_into_the_same_parts():
    """Peer: sweeps and local energies from two evaluation runs, the optimiser as training − evaluation; QERNEL: its parts."""
    module = _load()
    walkers, sweeps, more = 256, 10, 30
    step, local_all = 0.01, 0.2  # the peer's synthetic truth: one Metropolis step of all walkers, all local energies
    measured = {"N": 6, "eval_s": sweeps * step + local_all, "eval_more_sweeps_s": more * step + local_all}
    parts = {"walkers": walkers, "cases": [module.split_evaluation(measured, sweeps, more)]}
    components = {"cases": [{
        "n_electrons": 6, "step_walkers": walkers,
        "per_walker_s": {"log_psi": 1e-4},
        "per_step_s": {"step": 2.0},
        "step_parts_s": {"sweeps": 0.5, "local_energies": 0.4, "log_derivatives": 0.3, "spring_direction": 1.0},
    }]}
    rows = module.compare_components(PEER, parts, components)
    assert [r["N"] for r in rows] == [6]
    peer, ours, ratio = rows[0]["peer"], rows[0]["qernel"], rows[0]["qernel_over_peer"]
    assert peer["sweeps_s"] == pytest.approx(0.1) and peer["local_energies_s"] == pytest.approx(0.2)
    assert peer["log_psi_per_walker_ms"] == pytest.approx(1e3 * step / walkers)
    assert peer["optimizer_s"] == pytest.approx(0.5 - 0.3)  # timing.sh's training iteration − the evaluation iteration
    assert ours["optimizer_s"] == pytest.approx(1.3) and ours["local_energy_per_walker_ms"] == pytest.approx(1e3 * 0.4 / 256)
    assert ratio["sweeps_s"] == pytest.approx(5.0) and ratio["step_s"] == pytest.approx(4.0)
    other = {"cases": [{**components["cases"][0], "step_walkers": 128}]}
    assert module.compare_components(PEER, parts, other) == []  # different walkers: no ratio


def test_the_benchmarks_write_their_json_into_new_folders(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    from report import emit

    out = tmp_path / "new" / "folder" / "r.json"
    emit({"a": 1}, out, indent=2)
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    assert out.read_text().endswith("}\n") and json.loads(out.read_text()) == {"a": 1}
    emit({"b": 2}, None, stdout=False)
    assert capsys.readouterr().out == ""


def test_peer_command_runs_the_harness_wrapper_in_the_peer_venv(tmp_path, monkeypatch):
    monkeypatch.setenv("PEER_HOME", str(tmp_path / "home"))
    cmd = _load().peer_command(Path("/harness"), cells=6, nup=24, depth=12.5, walkers=256, sweeps=10, burn_in=100,
                            iterations=35, save=tmp_path / "out", extra=("--optimizer", "none"))
    assert cmd[:2] == [str(tmp_path / "home" / "venv" / "bin" / "python"), "/harness/run_pw.py"]
    args = dict(zip(cmd[2::2], cmd[3::2]))
    assert args == {"--cells": "6", "--nup": "24", "--V": "12.5", "--batch": "256", "--iterations": "35", "--mcmc-steps": "10",
                    "--burn-in": "100", "--save-path": str(tmp_path / "out"), "--optimizer": "none"}
