"""`qernel sample`, `observe` and `phasediagram` on a small trained run: stores, appends, locks, plots."""

import json
import os

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from qernel_cli.stores import store
from qernel_cli.cli import app
from qernel_cli.config import resolve
from qernel_cli.stores.store import StoreLocked
from qernel_cli.workflows.observe import observe_store
from qernel_cli.workflows.requests import RequestError, parse_depths
from qernel_cli.workflows.sample import sample_to_store
from zarrtools import open_zarr

runner = CliRunner()
CELL = resolve("moire-tiny").supercell_geometry


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    """The session's tiny trained run (conftest ``TINY_RUN``: 0–30 meV); read, never written."""
    return tiny_run


@pytest.fixture(scope="module")
def sampled(run_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("wf") / "s.zarr"
    warnings = []
    summary = sample_to_store(run_dir, [5.0, 40.0], path, walkers=8, records=6, sweeps=2, burn_in=4, warn=warnings.append)
    return path, summary, warnings


def test_sample_store_layout_units_and_energy_components(sampled):
    path, summary, warnings = sampled
    assert summary["records_per_depth"] == 6 and summary["session"] == 0 and summary["records_in_store"] == 12
    assert len(warnings) == 1 and "40" in warnings[0] and "extrapolates" in warnings[0]
    ds = open_zarr(path)
    assert ds["positions"].dims == ("record", "walker", "electron", "xy") and ds["positions"].shape == (12, 8, 6, 2)
    assert ds["energy"].attrs["units"] == "meV" and ds["positions"].attrs["units"] == "a_M"
    assert sorted(set(ds["depth"].values)) == [5.0, 40.0]
    total = ds["kinetic"] + ds["potential"] + ds["interaction"]
    np.testing.assert_allclose(ds["energy"].values, total.values, rtol=1e-12, atol=1e-9)
    # Positions are wrapped into the supercell.
    frac = ds["positions"].values @ np.linalg.inv(CELL.cell)
    assert np.all((frac >= -1e-12) & (frac < 1 + 1e-12))


def test_append_keeps_old_records_and_repairs_torn_writes(run_dir, tmp_path):
    path = tmp_path / "a.zarr"
    sample_to_store(run_dir, [10.0], path, walkers=4, records=3, sweeps=1, burn_in=0)
    before = zarr.open_group(str(path), mode="r")["positions"][:]
    # Simulate a writer killed mid-append: one array a row longer than the others.
    group = zarr.open_group(str(path), mode="a")
    group["energy"].append(np.zeros((1, 4)), axis=0)
    second = sample_to_store(run_dir, [20.0], path, walkers=4, records=2, sweeps=1, burn_in=0)
    assert second["session"] == 1 and second["records_in_store"] == 5
    ds = open_zarr(path)
    np.testing.assert_array_equal(ds["positions"].values[:3], before)
    assert list(ds["session"].values) == [0, 0, 0, 1, 1] and list(ds["depth"].values) == [10, 10, 10, 20, 20]
    with pytest.raises(store.StoreError, match="walkers"):
        sample_to_store(run_dir, [20.0], path, walkers=5, records=1)


def test_a_live_writer_locks_the_store(sampled, run_dir):
    path = sampled[0]
    lock = path.with_name(path.name + ".lock")
    lock.write_text(str(os.getppid()))  # a live process that is not us
    try:
        with pytest.raises(StoreLocked, match="another process"):
            sample_to_store(run_dir, [5.0], path, walkers=8, records=1)
    finally:
        lock.unlink()
    lock.write_text("999999999")  # a dead writer's stale lock is taken over
    sample_to_store(run_dir, [5.0], path, walkers=8, records=1, sweeps=1, burn_in=0)
    assert not lock.exists()


def test_observe_writes_observables_and_plots(sampled, tmp_path):
    path = sampled[0]
    results, attrs = observe_store(path, grid=12, plots_dir=tmp_path / "plots", out_store=tmp_path / "obs.zarr")
    ds = open_zarr(tmp_path / "obs.zarr")
    assert list(ds["depth"].values) == [5.0, 40.0]
    assert ds["density"].dims == ("depth", "s1", "s2") and ds["density_cell"].shape == (2, 4, 4)
    area = CELL.area
    np.testing.assert_allclose(ds["density"].sum(("s1", "s2")).values * area / 144, 6.0, rtol=1e-12)
    e = ds["energy"].values
    np.testing.assert_allclose(e, (ds["kinetic"] + ds["potential"] + ds["interaction"]).values, rtol=1e-10)
    assert np.all(ds["energy_error"].values > 0) and np.all(ds["structure_factor"].values > 0)
    assert np.all((ds["site_order"].values >= 0) & (ds["site_order"].values <= 1))
    assert {p.name for p in (tmp_path / "plots").iterdir()} >= {"density_V005.000meV.png", "structure_V040.000meV.png"}


def test_phasediagram_cli_json_resumes_without_resampling(run_dir, tmp_path):
    """Two depths lie outside the trained 0–30 meV: they are sampled, with a warning that the model extrapolates."""
    out = tmp_path / "pd"
    args = ["phasediagram", str(run_dir), "--depths", "-5,10,20,45", "--out", str(out), "--walkers", "8", "--records", "4", "--grid", "12", "--quiet", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    extrapolating = [w for w in warnings if "extrapolat" in w]
    assert extrapolating and "-5" in extrapolating[0] and "45" in extrapolating[0], result.stderr
    # 4 records cannot show a correlation time: flagged in one line that names the fix, and in the JSON
    (blocking,) = [w for w in warnings if "extrapolat" not in w]
    assert "blocking did not converge at V = -5, 10, 20, 45 meV" in blocking and "--records 16" in blocking and "--top-up" in blocking
    summary = json.loads(result.stdout)
    assert all(d["energy_converged"] is False and d["energy_tau_records"] is None for d in summary["depths"])
    assert [d["V_meV"] for d in summary["depths"]] == [-5.0, 10.0, 20.0, 45.0]
    assert summary["transition"]["method"] and (out / "phasediagram.png").is_file()
    ds = open_zarr(out / "phasediagram.zarr")
    assert ds.attrs["transition"] == summary["transition"]
    # One per-depth record: `observe --json` on the same samples has the same keys and values, and both are the store's
    observed = runner.invoke(app, ["observe", str(out / "samples.zarr"), "--grid", "12", "--plots", str(tmp_path / "p"), "--json"])
    assert observed.exit_code == 0, observed.stderr
    for a, b in zip(json.loads(observed.stdout)["depths"], summary["depths"], strict=True):
        assert a.keys() == b.keys() and a["energy_meV"] == pytest.approx(b["energy_meV"], rel=1e-12)
    for i, d in enumerate(summary["depths"]):
        for key in ("energy", "kinetic", "potential", "interaction"):
            assert d[f"{key}_meV"] == float(ds[key][i]) and d[f"{key}_error_meV"] == float(ds[f"{key}_error"][i])
            assert d[f"{key}_converged"] == bool(ds[f"{key}_converged"][i])
        assert d["V_meV"] == float(ds["depth"][i]) and d["site_order"] == float(ds["site_order"][i])
    records = zarr.open_group(str(out / "samples.zarr"), mode="r")["depth"].shape[0]
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and zarr.open_group(str(out / "samples.zarr"), mode="r")["depth"].shape[0] == records
    # Asking for more records (or finishing an interrupted run) tops every depth up with a new session.
    more = runner.invoke(app, [a if a != "4" else "6" for a in args])
    assert more.exit_code == 0, more.stderr
    depth = zarr.open_group(str(out / "samples.zarr"), mode="r")["depth"][:]
    assert sorted(np.unique(depth, return_counts=True)[1]) == [6, 6, 6, 6]
    # --top-up doubles the records where the energy blocking did not converge (here: everywhere), in new sessions
    topped = runner.invoke(app, [a if a != "4" else "6" for a in args] + ["--top-up", "1"])
    assert topped.exit_code == 0, topped.stderr
    group = zarr.open_group(str(out / "samples.zarr"), mode="r")
    assert sorted(np.unique(group["depth"][:], return_counts=True)[1]) == [12, 12, 12, 12]
    assert all(d["records"] == 12 for d in json.loads(topped.stdout)["depths"])


def test_bad_depth_grids_are_refused():
    np.testing.assert_allclose(parse_depths("0:30:16"), np.linspace(0, 30, 16))
    np.testing.assert_allclose(parse_depths("20,5,10"), [5, 10, 20])
    for spec in ("30:0:5", "0:30:1", "a:b:c", "0:30", "nan,1"):
        with pytest.raises(RequestError):
            parse_depths(spec)


def test_alignment_overlays_the_three_honeycomb_patterns():
    from qernel_cli.lattice import MOIRE_VECTORS, Supercell
    from qernel_cli.vmc.crystal import classical_ground_state
    from qernel_cli.workflows.observe import aligned_positions

    cell = Supercell(3, 3)
    honeycomb = classical_ground_state(cell, 6, 45.0)
    rng = np.random.default_rng(0)
    patterns = np.stack([honeycomb + m * MOIRE_VECTORS[0] for m in range(3)])  # the three degenerate crystals
    configs = patterns[rng.integers(0, 3, 300)] + 0.05 * rng.standard_normal((300, 6, 2))
    aligned = np.asarray(cell.wrap(aligned_positions(configs, cell)))
    # After alignment every configuration is the same pattern: one fixed set of 6 occupied sites.
    frac = np.rint(aligned @ np.linalg.inv(MOIRE_VECTORS)).astype(int) % 3
    occupied = {tuple(sorted(map(tuple, f))) for f in frac}
    assert len(occupied) == 1
