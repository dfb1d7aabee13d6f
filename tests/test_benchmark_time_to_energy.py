"""benchmarks/time_to_energy.py: energies reached and crossing times from both codes' traces (no run here).

Synthetic traces with step-shaped energies make every trailing mean exact, so
the crossing times have closed forms.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import zarr

from clitools import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "time_to_energy.py"
WINDOW = 20.0
HORIZON_MINUTES = 2.0


def _load():
    return load_script(SCRIPT)


def _work(tmp_path: Path) -> Path:
    """Peer at −50 meV until t = 60 s, then −52; QERNEL at −51 until t = 90 s, then −53 (one rejected step at +999)."""
    work = tmp_path / "work"
    (work / "peer_V15").mkdir(parents=True)
    (work / "setup.json").write_text(json.dumps({"minutes": HORIZON_MINUTES, "depths": [15.0]}))
    t = np.arange(10.0, 121.0)
    e = np.where(t < 60, -50.0, -52.0)
    rows = [f"{i}\t{ti:.3f}\t1.0\t{6 * ei / 1.5:.6f}\t{ei:.6f}\t1.0\t0.5" for i, (ti, ei) in enumerate(zip(t, e))]
    (work / "peer_V15" / "trace.tsv").write_text("# iter\twall\tdt\tE\tE_meV\tvar\tpmove\n" + "\n".join(rows) + "\n")
    leg = work / "qernel_V15"
    leg.mkdir()
    offset = 5.0
    (leg / "done.json").write_text(json.dumps({"offset_s": offset}))
    wall = np.arange(10.0, 121.0) - offset  # train()'s clock
    energy = np.where(wall + offset < 90, -51.0, -53.0)
    accepted = np.ones(wall.size, dtype=np.int8)
    accepted[50] = 0
    energy[50] = 999.0
    group = zarr.open_group(str(leg / "run" / "train.zarr"), mode="w")
    group.create_array("wall_time", data=wall)
    group.create_array("energy", data=np.repeat(energy[:, None], 4, axis=1))
    group.create_array("accepted", data=accepted)
    return work


def test_trailing_mean_and_first_crossing_have_their_closed_forms():
    tte = _load()
    t = np.arange(10.0, 121.0)
    e = np.where(t < 90, -51.0, -53.0)
    mean, error, count = tte.trailing(t, e, 120.0, WINDOW)
    assert (mean, error, count) == (-53.0, 0.0, 20)
    mean, _, count = tte.trailing(t, e, 99.0, WINDOW)
    assert count == 20 and mean == pytest.approx((10 * -53.0 + 10 * -51.0) / 20)
    # mean over (t − 20, t] = (−53 (t − 89) − 51 (109 − t)) / 20 ≤ −52  ⇔  t ≥ 99
    assert tte.first_time_at_or_below(t, e, -52.0, WINDOW) == 99.0
    assert tte.first_time_at_or_below(t, e, -53.5, WINDOW) is None
    assert np.isnan(tte.trailing(t, e, 12.0, WINDOW)[0])  # fewer than 8 batches: no estimate


def test_analysis_reports_both_crossing_times_from_the_traces(tmp_path):
    tte = _load()
    work = _work(tmp_path)
    out = tmp_path / "result.json"
    tte.analyse(SimpleNamespace(work=str(work), json=str(out), plot=str(tmp_path / "plot.png"), window=WINDOW))
    result = json.loads(out.read_text())
    (depth,) = result["depths"]
    assert depth["V_meV"] == 15.0
    assert depth["peer"]["energy_at_horizon_meV"] == -52.0
    assert depth["qernel"]["energy_at_horizon_meV"] == -53.0
    assert depth["qernel"]["steps"] == 110  # the rejected step is not a batch energy
    assert depth["qernel_time_to_peer_energy_s"] == 99.0  # launch offset included
    assert depth["peer_time_to_qernel_energy_s"] is None  # the peer never gets to −53
    assert depth["ratio_qernel_time_to_peer_horizon"] == pytest.approx(99.0 / 120.0)
    assert (tmp_path / "plot.png").stat().st_size > 0
