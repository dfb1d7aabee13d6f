"""Bad input across the command line: every case is one `qernel: error:` line, a non-zero exit, no traceback,
and leaves the files it was given byte for byte as they were.

The cases run as real `qernel` processes, two at a time (the fixture
``outcomes``); each test then checks one of them. Depths outside the trained
range are not errors: they run, with a warning that the model extrapolates (here for `sample`; for
`phasediagram` in test_workflows).
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from clitools import error_line, run_qernel, tree_hashes


@dataclass
class Case:
    """``setup(dir, run, samples) -> (args, protected paths)``; ``expect``: text the error line must contain."""

    setup: Callable
    expect: str
    code: int = 2
    absent: list = field(default_factory=list)  # paths (relative to the case's dir) that must not appear


CASES: dict[str, Case] = {}


def case(name: str, expect: str, code: int = 2, absent=()):
    def register(setup):
        CASES[name] = Case(setup, expect, code, list(absent))
        return setup

    return register


def simple(name: str, args: list, expect: str, code: int = 2):
    """A case that needs no files: ``args`` may contain "{out}" (a run directory that must not be created)."""
    case(name, expect, code, absent=["out"])(lambda d, run, samples: ([str(d / "out") if a == "{out}" else a for a in args], []))


def toml_file(name: str, text: str | bytes, expect: str, command: str = "config"):
    def setup(d, run, samples):
        path = d / "c.toml"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        args = ["train", "--out", str(d / "out"), "--preset", str(path)] if command == "train" else [command, "--preset", str(path)]
        return args, [path]

    case(name, expect, absent=["out"])(setup)


# Config files ------------------------------------------------------------------

toml_file("malformed-toml", "[model\nlayers = 2\n", "malformed TOML in")
toml_file("malformed-toml-train", "[training]\nsteps = = 3\n", "malformed TOML in", command="train")
toml_file("not-utf8", b"\xff\xfe[model]\n", "cannot read config file")
toml_file("nan-in-file", "[material]\nepsilon = nan\n", "material.epsilon: expected a finite number, got nan", command="train")
toml_file("inf-in-file", "[hamiltonian]\nV_max_meV = inf\n", "hamiltonian.V_max_meV: expected a finite number, got inf")
toml_file("minus-inf-in-file", "[optimizer]\nlearning_rate = -inf\n", "optimizer.learning_rate: expected a finite number, got -inf")
toml_file("nan-for-int-in-file", "[model]\nlayers = nan\n", "model.layers: expected an integer, got nan")
toml_file("unknown-section-in-file", "[modell]\nlayers = 2\n", "unknown key modell; did you mean model?")
toml_file("unknown-key-in-file", "[sampler]\nwalker = 8\n", "unknown key sampler.walker; did you mean sampler.walkers?")
toml_file("section-as-value", "model = 3\n", "model: expected a table, got 3")
toml_file("huge-integer", "[training]\nsteps = 99999999999999999999\n", "training.steps: 99999999999999999999 is out of the 64-bit integer range")


@case("config-is-a-directory", "cannot read config file")
def _(d, run, samples):
    (d / "dir.toml").mkdir()
    return ["config", "--preset", str(d / "dir.toml")], []


# Presets and overrides -----------------------------------------------------------

simple("unknown-preset", ["train", "--out", "{out}", "--preset", "moire-huge"], "unknown preset 'moire-huge'; available: moire-tiny")
simple("mistyped-key", ["config", "--set", "model.layrs=3"], "unknown key model.layrs; did you mean model.layers?")
simple("branch-of-a-one-branch-run", ["train", "--out", "{out}", "--set", "pretrain.target=bloch", "--branch", "liquid"], "--branch liquid: needs a two-branch run")
simple("unknown-branch", ["train", "--out", "{out}", "--branch", "solid"], "--branch solid: needs a two-branch run (pretrain.target = \"both\") and one of liquid, crystal")
simple("both-starts-spinful", ["train", "--out", "{out}", "--set", "electrons.n_up=3", "--set", "electrons.n_down=3"], 'pretrain.target: "both" starts from the classical crystal')
simple("mistyped-section", ["config", "--set", "sampeler.walkers=8"], "unknown key sampeler; did you mean sampler?")
simple("wrong-case-key", ["train", "--out", "{out}", "--set", "training.Steps=3"], "did you mean training.steps?")
simple("unknown-key-no-suggestion", ["config", "--set", "model.zzz=3"], "unknown key model.zzz; known: determinants")
simple("markup-in-key", ["config", "--set", "model.[red]x[/]=1"], "unknown key model.[red]x[/];")
simple("override-without-value", ["config", "--set", "model.layers"], "expected section.key=value")
simple("override-of-a-section", ["config", "--set", "model=3"], "model is a section")
simple("string-for-int", ["config", "--set", "model.layers=abc"], "model.layers: expected an integer, got 'abc'")
simple("float-for-int", ["info", "--set", "model.layers=2.5"], "model.layers: expected an integer, got 2.5")
simple("int-for-bool", ["config", "--set", "hamiltonian.coulomb=1"], "hamiltonian.coulomb: expected true or false, got 1")
simple("bad-choice", ["config", "--set", "optimizer.name=sgd"], "optimizer.name: expected one of 'spring' | 'adam', got 'sgd'")
simple("nan-override", ["train", "--out", "{out}", "--set", "material.m_star=nan"], "material.m_star: expected a finite number, got nan")
simple("inf-override", ["config", "--set", "material.epsilon=inf"], "material.epsilon: expected a finite number, got inf")
simple("minus-inf-override", ["config", "--set", "sampler.move_width=-inf"], "sampler.move_width: expected a finite number, got -inf")
simple("overflow-override", ["config", "--set", "hamiltonian.V_max_meV=1e400"], "hamiltonian.V_max_meV: expected a finite number, got inf")
simple("impossible-filling", ["train", "--out", "{out}", "--set", "electrons.filling='1/2'"], "ν = 1/2 does not fit the 3×3 supercell")
simple("filling-needs-other-N", ["config", "--set", "electrons.n_up=5"], "ν = 2/3 on 3×3 needs N = 6 electrons, but n_up + n_down = 5")
simple("filling-not-a-fraction", ["config", "--set", "electrons.filling='two thirds'"], "expected a fraction like '2/3'")
simple("negative-N", ["train", "--out", "{out}", "--set", "electrons.n_up=-6"], "electrons.n_up: must be non-negative, got -6")
simple("no-electrons", ["config", "--set", "electrons.n_up=0", "--set", "electrons.filling=''"], "need at least one electron")
simple("zero-supercell", ["config", "--set", "supercell.L1=0"], "supercell.L1: must be a positive integer")

# Usage errors (click) ------------------------------------------------------------

simple("zero-steps", ["train", "--out", "{out}", "--steps", "0"], "Invalid value for '--steps'")
simple("unknown-option", ["config", "--layers", "3"], "No such option: --layers")
simple("missing-out", ["train", "--steps", "3"], "Missing option '--out'")
simple("depth-not-a-number", ["sample", "run", "--depth", "deep", "--out", "s.zarr"], "Invalid value for '--depth'")


# Runs and checkpoints -------------------------------------------------------------


def _copy_run(d, run):
    target = d / "run"
    shutil.copytree(run, target)
    return target


@case("resume-without-checkpoint", "checkpoint.npz is missing but")
def _(d, run, samples):
    target = _copy_run(d, run)
    (target / "checkpoint.npz").unlink()
    return ["train", "--out", str(target), "--resume", "--quiet"], [target]


@case("resume-truncated-checkpoint", "is corrupt or truncated")
def _(d, run, samples):
    target = _copy_run(d, run)
    data = (target / "checkpoint.npz").read_bytes()
    (target / "checkpoint.npz").write_bytes(data[: len(data) // 3])
    return ["train", "--out", str(target), "--resume", "--quiet"], [target]


@case("resume-checkpoint-of-another-version", "has format 'qernel-checkpoint/99'")
def _(d, run, samples):
    target = _copy_run(d, run)
    path = target / "checkpoint.npz"
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(bytes(arrays["__meta__"]).decode())
    meta["format"] = "qernel-checkpoint/99"
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return ["train", "--out", str(target), "--resume", "--quiet"], [target]


@case("resume-corrupt-config", "malformed TOML in")
def _(d, run, samples):
    target = _copy_run(d, run)
    (target / "config.toml").write_text("[model\n")
    return ["train", "--out", str(target), "--resume", "--quiet"], [target]


@case("resume-not-a-run", "not a QERNEL run directory")
def _(d, run, samples):
    (d / "empty").mkdir()
    return ["train", "--out", str(d / "empty"), "--resume", "--quiet"], [d / "empty"]


@case("new-run-over-existing", "already exists and is not empty")
def _(d, run, samples):
    target = _copy_run(d, run)
    return ["train", "--out", str(target), "--steps", "2", "--quiet"], [target]


@case("sample-run-without-checkpoint", "has no checkpoint yet")
def _(d, run, samples):
    target = _copy_run(d, run)
    (target / "checkpoint.npz").unlink()
    return ["sample", str(target), "--depth", "10", "--out", str(d / "s.zarr")], [target]


@case("sample-nan-depth", "depth must be a finite number", absent=["s.zarr"])
def _(d, run, samples):
    return ["sample", str(run), "--depth", "nan", "--out", str(d / "s.zarr")], [run]


simple("phasediagram-bad-grid", ["phasediagram", "run", "--out", "{out}", "--depths", "0:30:1"], "--depths must be START:STOP:COUNT")


# Stores ----------------------------------------------------------------------------


def _store_case(name: str, damage: Callable, expect: str):
    """The damaged copy of a sample store, given to `observe` and appended to by `sample --out`."""

    def setup_observe(d, run, samples):
        target = d / "s.zarr"
        shutil.copytree(samples, target)
        damage(target)
        return ["observe", str(target), "--grid", "12", "--plots", str(d / "plots")], [target]

    def setup_append(d, run, samples):
        target = d / "s.zarr"
        shutil.copytree(samples, target)
        damage(target)
        return ["sample", str(run), "--depth", "10", "--out", str(target), "--walkers", "4", "--records", "2"], [target]

    case(f"observe-{name}", expect, absent=["plots"])(setup_observe)
    case(f"append-{name}", expect, absent=["s.zarr.lock"])(setup_append)


def _edit_attrs(path: Path, **attrs):
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"].update(attrs)
    (path / "zarr.json").write_text(json.dumps(meta))


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


_store_case("other-version", lambda s: _edit_attrs(s, format="qernel-store/2", qernel_version="9.9.9"), "was written by another version of QERNEL (9.9.9, format 'qernel-store/2')")
_store_case("truncated-metadata", lambda s: _truncate(s / "zarr.json"), "(damaged or not a zarr store): JSONDecodeError")
_store_case("truncated-array-metadata", lambda s: _truncate(s / "positions" / "zarr.json"), "damaged: cannot read the metadata of positions (JSONDecodeError)")
_store_case("deleted-chunk", lambda s: (s / "positions" / "c" / "0" / "0" / "0" / "0").unlink(), "damaged")
_store_case("truncated-chunk", lambda s: _truncate(s / "energy" / "c" / "0" / "0"), "damaged: cannot read energy")
_store_case("deleted-array", lambda s: shutil.rmtree(s / "interaction"), "damaged: missing interaction")
_store_case("other-kind", lambda s: _edit_attrs(s, kind="train"), "is a QERNEL 'train' store, not a sample store")
_store_case("not-zarr", lambda s: (shutil.rmtree(s), s.mkdir(), (s / "notes.txt").write_text("hello")), "cannot open store")


@case("append-other-walkers", "holds 4 walkers of 6 electrons; use --walkers 4")
def _(d, run, samples):
    target = d / "s.zarr"
    shutil.copytree(samples, target)
    return ["sample", str(run), "--depth", "10", "--out", str(target), "--walkers", "8", "--records", "2"], [target]


@case("sample-more-walkers-than-starts", "exceeds the 16 distinct trained configurations", absent=["s.zarr"])
def _(d, run, samples):
    return ["sample", str(run), "--depth", "10", "--out", str(d / "s.zarr"), "--walkers", "17", "--records", "2"], []


@case("append-other-run", "holds samples of a different run/config")
def _(d, run, samples):
    target = d / "s.zarr"
    shutil.copytree(samples, target)
    other = _copy_run(d, run)
    text = (other / "config.toml").read_text()
    (other / "config.toml").write_text(text.replace("seed = 0", "seed = 1"))
    return ["sample", str(other), "--depth", "10", "--out", str(target), "--walkers", "4", "--records", "2"], [target]


simple("exact-too-big", ["exact", "--bands", "9", "--depths", "25", "--max-memory", "1"], "need ≈72.8 GiB (36,060,025 states per momentum sector), more than --max-memory 1.0 GiB")
simple("exact-too-few-bands", ["exact", "--set", "supercell.L1=2", "--set", "supercell.L2=1", "--set", "electrons.filling=3/2", "--set", "electrons.n_up=3", "--bands", "1"], "--bands 1 holds 2 orbitals per spin, fewer than the 3 electrons; use --bands 2")


@case("exact-out-exists", "exists; choose another --out (nothing was overwritten)")
def _(d, run, samples):
    target = d / "exact.json"
    target.write_text("{}")
    return ["exact", "--bands", "1", "--out", str(target)], [target]


# ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory, tiny_run, tiny_samples, cli_env):
    """Set up every case, hash its protected files, run all `qernel` processes (two at a time), hash again."""
    root = tmp_path_factory.mktemp("bad-input")
    prepared = {}
    for name, c in CASES.items():
        d = root / name
        d.mkdir()
        args, protected = c.setup(d, tiny_run, tiny_samples[0])
        prepared[name] = (d, args, protected, {str(p): tree_hashes(p) for p in protected})

    def run(name):
        d, args, protected, _ = prepared[name]
        done = run_qernel(args, cli_env, timeout=300, cwd=d)
        return name, done, {str(p): tree_hashes(p) for p in protected}

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = {name: (done, after) for name, done, after in pool.map(run, CASES)}
    return {name: (prepared[name][0], prepared[name][3], *results[name]) for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_touches_nothing(name, outcomes):
    d, before, done, after = outcomes[name]
    c = CASES[name]
    message = error_line(done, c.code)
    assert c.expect in message, message
    assert after == before  # the files given are unchanged
    for rel in c.absent:
        assert not (d / rel).exists(), rel
    assert not [p.name for p in d.rglob("*") if p.name.endswith((".tmp", ".partial", ".lock"))]


def test_sampling_outside_the_trained_range_warns_and_runs(tiny_samples):
    """`qernel sample --depth 40` on a run trained on 0–30 meV: exit 0, one warning naming the extrapolation."""
    done = tiny_samples[1]
    assert done.returncode == 0 and "Traceback" not in done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "40" in warnings[0] and "extrapolat" in warnings[0] and "[0, 30]" in warnings[0], done.stderr
    assert "error" not in done.stderr


def test_bare_qernel_prints_help_not_an_error():
    done = subprocess.run([sys.executable, "-m", "qernel_cli"], capture_output=True, text=True, env={"COLUMNS": "120", "PATH": ""})
    assert done.returncode == 2 and "Usage" in done.stdout + done.stderr and "qernel: error" not in done.stderr
