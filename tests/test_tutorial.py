"""docs/tutorial.md: its commands run, its files appear, its numbers are of the kind it describes.

The commands and the files the tutorial asks you to write are extracted from the
markdown by docs/make_tutorial_images.py (the same code that refreshes the
tutorial's pictures): lines of the ```bash blocks that start with `qernel ` or
`python ` (not `python -m pip`), and ```python blocks whose first line names a
file. The slow test runs all of them in order in a temporary directory.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from zarrtools import open_zarr

from clitools import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "make_tutorial_images.py"


def _load_script():
    return load_script(SCRIPT)


tutorial = _load_script()
TEXT = tutorial.TUTORIAL.read_text()


def _option(command: str, name: str) -> list[str]:
    """Every value of ``--name VALUE`` in a command line."""
    words = shlex.split(command)
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == name]


def _command(prefix: str, text: str = TEXT) -> str:
    found = [c for c in tutorial.commands(text) if c.startswith(prefix)]
    assert len(found) == 1, f"expected one `{prefix} ...` command in the tutorial, found {found}"
    return found[0]


# ---------------------------------------------------------------------------
# Fast checks of the text.


def test_every_referenced_image_exists_and_is_small():
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", TEXT)
    assert images, "the tutorial shows no pictures"
    for image in images:
        path = (tutorial.TUTORIAL.parent / image).resolve()
        assert path.is_file(), f"{image} is referenced in docs/tutorial.md but does not exist"
        assert path.stat().st_size < 200_000, f"{image} is larger than 200 KB"
    # The pictures the refresh script writes are the ones the tutorial shows.
    assert {Path(i).name for i in images} == set(tutorial.PICTURES.values())


def test_extraction_convention():
    text = """
```bash
python -m pip install -e '.[dev]'
qernel train --preset moire-tiny \\
  --set a=1 --out runs/x   # comment
ls runs
```
```python
# hello.py
print("hi")
```
```python
print("not a file")
```
```text
qernel not-a-command
```
"""
    assert tutorial.commands(text) == ["qernel train --preset moire-tiny --set a=1 --out runs/x   # comment"]
    assert tutorial.files(text) == {"hello.py": '# hello.py\nprint("hi")\n'}


def test_a_broken_command_stops_the_run(tmp_path):
    text = "```bash\npython -c \"print('first')\"\nqernel no-such-command\npython -c \"open('never', 'w')\"\n```\n"
    results = tutorial.run_tutorial(tmp_path, text)
    assert [r.returncode == 0 for r in results] == [True, False]
    assert results[0].stdout == "first\n" and not (tmp_path / "never").exists()


def test_the_tutorial_has_the_steps_it_promises():
    commands = tutorial.commands(TEXT)
    for prefix in ("qernel presets", "qernel info", "qernel config", "qernel train", "qernel sample", "qernel observe", "qernel phasediagram"):
        assert any(c.startswith(prefix) for c in commands), f"no `{prefix}` command in the tutorial"
    for name in tutorial.files(TEXT):
        assert any(c == f"python {name}" for c in commands), f"{name} is written but never run"
    # The pictures come from files that the commands write.
    for source in tutorial.PICTURES:
        assert source in TEXT or Path(source).name in TEXT, f"{source} is not mentioned in the tutorial"


# ---------------------------------------------------------------------------
# The whole tutorial.


QUICK_MODEL = (
    "layers=1", "width=16", "heads=2", "kv_heads=1", "mlp_width=16", "film_hidden=8", "determinants=1", "harmonics=1",
    "envelope_shells=2", "envelope_anchors=1", "pair_jastrow_qmax=0", "radial_jastrow=0",
)
"""The quick run's model: the tests' tiny one (``clitools.TINY_RUN``), quick to compile even with the Ewald sum."""

QUICK = {
    "training.steps=250": "training.steps=10 " + " ".join(f"--set model.{m}" for m in QUICK_MODEL),
    "pretrain.steps=100": "pretrain.steps=10",
    "sampler.walkers=128": "sampler.walkers=32",
    "training.evaluate_blocks=10": "training.evaluate_blocks=4",
    "--walkers 64": "--walkers 16",
    "--records 50": "--records 12",
    "--records 40": "--records 8",
    "--depths 0:30:7": "--depths 0:30:4",
}
"""The default test run follows the tutorial with a smaller model and fewer steps, walkers and records (the
same commands, files and checks; 4 depths in the phase diagram); ``pytest -m extended`` runs it exactly as written."""


def _quick(text: str) -> str:
    for old, new in QUICK.items():
        assert old in text, f"the tutorial no longer contains {old!r}: update QUICK in tests/test_tutorial.py"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module", params=["quick", pytest.param("as written", marks=pytest.mark.extended)])
def ran(request, tmp_path_factory):
    """(work directory, results, the text that ran): the tutorial's commands, shortened or as written."""
    text = _quick(TEXT) if request.param == "quick" else TEXT
    workdir = tmp_path_factory.mktemp("tutorial")
    timings = []
    results = tutorial.run_tutorial(workdir, text, echo=lambda r: timings.append(f"{r.seconds:6.1f} s  {r.command}"))
    print("\n".join(timings))
    return workdir, results, text


@pytest.mark.slow
def test_every_command_succeeds(ran):
    _, results, text = ran
    last = results[-1]
    assert last.returncode == 0, f"`{last.command}` exited with {last.returncode}:\n{last.stdout}\n{last.stderr}"
    assert [r.command for r in results] == tutorial.commands(text)


@pytest.mark.slow
def test_the_files_the_tutorial_shows_exist(ran):
    workdir, results, _ = ran
    assert results[-1].returncode == 0
    for path in sorted(set(re.findall(r"`(runs/[^`\s]+)`", TEXT))):
        assert (workdir / path).exists(), f"docs/tutorial.md mentions {path}, which the commands did not write"
    for source in tutorial.PICTURES:
        assert (workdir / source).is_file(), source


@pytest.mark.slow
def test_training_outputs_are_what_the_text_describes(ran):
    workdir, _, text = ran
    config = _command("qernel config", text)
    summary = json.loads((workdir / "runs/tutorial/summary.json").read_text())
    steps = [int(v.split("=")[1]) for v in _option(config, "--set") if v.startswith("training.steps=")]
    assert summary["steps"] == steps[0]
    for row in summary["depths"]:
        assert math.isfinite(row["energy_per_electron_meV"]) and row["energy_error_meV"] > 0
        total = row["kinetic_meV"] + row["potential_meV"] + row["interaction_meV"]
        assert total == pytest.approx(row["energy_per_electron_meV"], abs=1e-6)
    assert set(summary["health"]) >= {"acceptance", "clipped_fraction", "autocorrelation_sweeps"}

    train = open_zarr(workdir / "runs/tutorial/train.zarr")
    assert train.sizes["step"] == summary["steps"] and train["energy"].attrs["units"] == "meV"
    assert "pretrain_infidelity" in train


@pytest.mark.slow
def test_observables_at_the_two_depths(ran):
    workdir, _, text = ran
    depths = sorted(float(v) for v in _option(_command("qernel sample", text), "--depth"))
    obs = open_zarr(workdir / "runs/tutorial/s.zarr", group="observables")
    assert list(obs["depth"].values) == depths
    assert np.all(obs["energy_error"].values > 0)
    assert np.all((obs["site_order"].values >= 0) & (obs["site_order"].values <= 1))
    # Deeper moiré potential, lower energy per electron: by tens of meV over the tutorial's range.
    assert obs["energy"].values[-1] < obs["energy"].values[0] - 10


@pytest.mark.slow
def test_phase_diagram_json_and_store(ran):
    workdir, _, text = ran
    from qernel_cli.workflows.requests import parse_depths

    command = _command("qernel phasediagram", text)
    grid = parse_depths(_option(command, "--depths")[0])
    out = workdir / _option(command, "--out")[0]
    summary = json.loads((out / "phasediagram.json").read_text())
    rows = summary["depths"]
    np.testing.assert_allclose([r["V_meV"] for r in rows], grid)
    for r in rows:
        for key in ("energy", "kinetic", "potential", "interaction"):
            assert math.isfinite(r[f"{key}_meV"]) and r[f"{key}_error_meV"] >= 0
        assert 0 <= r["site_order"] <= 1 and r["site_order_error"] > 0
    energies = np.array([r["energy_meV"] for r in rows])
    assert np.all(np.diff(energies) < 0), "E/N should fall with the depth of the moiré potential"
    # The transition estimate the text explains: a depth with an error bar and the method that found it.
    transition = summary["transition"]
    assert set(transition) >= {"depth", "error", "method", "order_fit_depth", "energy_kink_depth"}
    if math.isfinite(transition["depth"]):
        assert grid[0] <= transition["depth"] <= grid[-1] and transition["error"] > 0

    store = open_zarr(out / "phasediagram.zarr")
    np.testing.assert_allclose(store["depth"].values, grid)
    assert store.attrs["transition"] == transition


@pytest.mark.slow
def test_reading_the_results_prints_the_transition(ran):
    _, results, _ = ran
    printed = next(r.stdout for r in results if r.command == "python read_results.py")
    assert re.search(r"V_c = \S+ ± \S+ meV", printed) and "site_order" in printed
