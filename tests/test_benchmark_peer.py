"""benchmarks/peer.py: the side-by-side table is built from both sides' own reports (no peer run here)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "peer.py"


def _load():
    spec = importlib.util.spec_from_file_location("peer_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
