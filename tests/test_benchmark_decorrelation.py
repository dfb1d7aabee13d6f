"""benchmarks/decorrelation.py samples a copy of the run with the sampler's lattice hops switched as asked."""

from __future__ import annotations

from pathlib import Path

from qernel_cli.config import resolve
from qernel_cli.stores.run_dir import CHECKPOINT_FILE, CONFIG_FILE, stored_config

from clitools import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "decorrelation.py"


def _load():
    return load_script(SCRIPT)


def test_copies_of_the_run_differ_only_in_the_hops(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(resolve("moire-tiny").to_toml())
    (run / CHECKPOINT_FILE).write_bytes(b"weights")
    work = tmp_path / "work"
    work.mkdir()
    bench = _load()
    off = bench._with_hops(run, False, work)
    on = bench._with_hops(run, True, work)
    assert stored_config(off).sampler.lattice_hops is False and stored_config(on).sampler.lattice_hops is True
    assert stored_config(off).model == stored_config(run).model
    assert (off / CHECKPOINT_FILE).read_bytes() == b"weights"
    assert bench._with_hops(run, False, work) == off  # a second variant without hops reuses the copy
