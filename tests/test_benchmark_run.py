"""benchmarks/run.py end to end on moire-tiny with a tiny model (one subprocess per preset, JSON report)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from clitools import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "run.py"

TINY = [
    "--preset", "moire-tiny", "--json",
    "--walkers", "8", "--steps", "1", "--repeats", "1",
    "--forward-walkers", "4", "--laplacian-walkers", "2", "--hessian-walkers", "2",
    "--timeout", "400",
    # a one-layer model and two sweeps: the structure of the report is the point here, not the numbers
    "--set", "model.layers=1", "--set", "model.width=16", "--set", "model.heads=2", "--set", "model.kv_heads=1",
    "--set", "model.mlp_width=16", "--set", "model.determinants=1", "--set", "sampler.steps_per_iteration=2",
]


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_benchmark_run_json(tmp_path):
    out_file = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, "--out", str(out_file)], capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert json.loads(out_file.read_text()) == report
    assert "moire-tiny" in done.stderr  # progress goes to stderr

    machine = report["machine"]
    assert machine["backend"] in ("cpu", "gpu", "cuda", "rocm", "tpu")
    assert machine["jax_version"] and machine["folx_version"] and machine["equinox_version"]
    assert machine["logical_cores"] >= 1 and machine["device_count"] >= 1
    assert report["model"] == "reference" and "model.width=64" in report["overrides"]

    (entry,) = report["presets"]
    assert "error" not in entry, entry.get("error")
    assert entry["preset"] == "moire-tiny" and entry["n_electrons"] == 6 and entry["supercell"] == [3, 3]
    assert entry["walkers"] == 8 and entry["parameters"] > 0
    assert entry["model"]["layers"] == 1 and entry["model"]["dtype"] == "float32"  # --set after the reference model
    assert _positive(entry["peak_rss_GiB"])

    for name in ("forward", "forward_laplacian", "folx_laplacian", "hessian_laplacian"):
        section = entry[name]
        assert _positive(section["compile_s"]) and _positive(section["per_walker_s"]), (name, section)
        assert section["finite"], name
    assert entry["forward"]["walkers"] == 4 and entry["forward_laplacian"]["walkers"] == 2
    assert _positive(entry["hessian_over_forward_laplacian"]) and _positive(entry["folx_over_forward_laplacian"])
    # QERNEL's forward Laplacian agrees with folx's (float32 trunk)
    folx = entry["folx_laplacian"]
    assert folx["walkers"] == 2
    assert folx["max_abs_difference_vs_forward"] <= 1e-3 * max(1.0, entry["hessian_laplacian"]["max_abs_laplacian"])
    # the two Laplacians agree (float32 model)
    hess = entry["hessian_laplacian"]
    assert hess["max_abs_difference_vs_forward"] <= 1e-3 * max(1.0, hess["max_abs_laplacian"])

    step = entry["step"]
    for key in ("first_step_s", "time_to_first_step_s", "step_s_median", "steps_per_s", "per_walker_step_s"):
        assert _positive(step[key]), (key, step[key])
    assert step["time_to_first_step_s"] >= step["first_step_s"]
    assert step["finite"] and step["accepted_steps"] == step["total_steps"] == 2
    assert step["depth_groups"] == 4 and step["optimizer"] == "spring"

    bound = entry["lower_bound"]  # the step's unavoidable parts, measured separately
    for key in ("spring_kernel_s", "spring_kernel_GFLOPs", "sampling_s", "local_energy_s"):
        assert _positive(bound[key]), (key, bound)
    assert bound["total_s"] == pytest.approx(bound["spring_kernel_s"] + bound["sampling_s"] + bound["local_energy_s"])
    assert bound["step_over_lower_bound"] == pytest.approx(step["step_s_median"] / bound["total_s"])

    # α needs presets with N ≥ 24: none here
    assert set(report["scaling"]) == {"forward", "forward_laplacian", "step_per_walker"}
    assert all(fit["alpha"] is None for fit in report["scaling"].values())


def test_fit_exponent_and_walkers_option():
    bench = load_script(SCRIPT)
    assert math.isclose(bench.fit_exponent([(24, 2.0 * 24**1.5), (54, 2.0 * 54**1.5), (96, 2.0 * 96**1.5)]), 1.5)
    assert bench.fit_exponent([(24, 1.0)]) is None
    assert bench._walkers_for(["moire150=8", "moire96=2"]) == {"moire150": 8, "moire96": 2}
