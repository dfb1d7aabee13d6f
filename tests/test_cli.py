"""The `qernel` command line: listing, help, version, one-line errors."""

import os
import re
import subprocess
import sys
import tomllib

import pytest
from typer.testing import CliRunner

from qernel_cli import __version__
from qernel_cli.cli import app
from qernel_cli.config import from_dict

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_presets_lists_the_five_house_presets():
    result = runner.invoke(app, ["presets"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    rows = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines() if not line.startswith("#")}
    assert rows.pop("name")[:4] == ["name", "N (↑,↓)", "supercell", "filling ν"]
    for name, n, sc in [("moire-tiny", 6, "3×3"), ("moire24", 24, "6×6"), ("moire54", 54, "9×9"), ("moire96", 96, "12×12"), ("moire150", 150, "15×15")]:
        assert rows[name][1:4] == [f"{n} ({n},0)", sc, "2/3"]


@pytest.mark.parametrize("command", ["train", "sample", "observe", "phasediagram", "presets", "config", "info"])
def test_every_command_has_informative_help(command):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert len(result.stdout.split()) > 15


def test_config_prints_validated_toml():
    result = runner.invoke(app, ["config", "--preset", "moire24", "--set", "model.layers=7"])
    assert result.exit_code == 0
    c = from_dict(tomllib.loads(result.stdout))
    assert c.model.layers == 7 and c.n_electrons == 24


def test_info_reports_units_parameters_and_flops():
    import jax

    from qernel_cli.config import resolve
    from qernel_cli.model import make_wavefunction
    from qernel_cli.model.summary import parameter_count

    result = runner.invoke(app, ["info", "--preset", "moire-tiny"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "3.37556 meV" in result.stdout and "10.6235" in result.stdout
    n_params = parameter_count(make_wavefunction(resolve("moire-tiny"), jax.random.PRNGKey(0)))
    assert f"{n_params:,}" in result.stdout
    assert "per configuration" in result.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--out", "x", "--preset", "nope"], "unknown preset 'nope'"),
        (["config", "--set", "model.layrs=3"], "unknown key model.layrs"),
        (["info", "--set", "electrons.n_up=-2"], "electrons.n_up"),
        (["train", "-o", "x", "--set", "supercell.L1=4"], "electrons.filling"),
        (["train", "-o", "x", "--set", "model.layers=0"], "model.layers"),
    ],
)
def test_bad_input_is_one_line_error_and_nonzero_exit(args, message):
    result = subprocess.run([sys.executable, "-m", "qernel_cli.cli", *args], capture_output=True, text=True, env={"COLUMNS": "300", "PATH": ""})
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["sample", "no-such-run", "--depth", "10", "--out", "s.zarr"], "not a QERNEL run directory"),
        (["observe", "no-such-store.zarr"], "store not found"),
    ],
)
def test_sample_and_observe_refuse_missing_inputs(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and message in result.stderr
    assert not (tmp_path / "s.zarr").exists()


PROBE = """
import runpy, sys
sys.argv = ["qernel", *sys.argv[1:]]
try:
    runpy.run_module("qernel_cli", run_name="__main__")
except SystemExit as stop:
    code = stop.code if isinstance(stop.code, int) else 0
sys.stderr.write(f"JAX_IMPORTED={'jax' in sys.modules}\\n")
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args,code",
    [(["--help"], 0), (["--version"], 0), (["presets"], 0), (["config", "--preset", "moire150"], 0), (["train", "--help"], 0),
     (["train", "--no-such-option"], 2), (["config", "--set", "model.layrs=3"], 2), ([], 2),
     (["train", "--out", "/nonexistent/run", "--set", "model.layrs=3"], 2), (["train", "--resume", "--out", "/nonexistent/run"], 2),
     (["sample", "/nonexistent/run", "--depth", "5", "--out", "/nonexistent/s.zarr"], 2),
     (["phasediagram", "/nonexistent/run", "--out", "/nonexistent/pd", "--depths", "0:30:1"], 2)],
)
def test_commands_that_compute_nothing_never_import_jax(args, code):
    """Help, version, presets, config, usage errors and the refusals of bad input to the commands that compute
    (a wrong override, a directory that is not a run, a depth grid that does not parse) answer without loading JAX
    (the ~2 s that made `--help` slow, and ~4 s with the model).

    Their latency is measured by benchmarks/cli_latency.py; this is the contract behind it.
    """
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env={**os.environ, "COLUMNS": "120"}, timeout=60)
    assert done.returncode == code, done.stderr[-2000:]
    assert done.stderr.strip().endswith("JAX_IMPORTED=False"), done.stderr[-2000:]


def test_configure_jax_means_float64_before_or_after_jax_is_loaded():
    """`qernel_cli.configure_jax()` switches JAX to 64-bit whether JAX was imported before it or not."""
    for order in ("import qernel_cli; qernel_cli.configure_jax(); import jax", "import jax, qernel_cli; qernel_cli.configure_jax()"):
        code = f"{order}; import jax.numpy as jnp; print(jnp.zeros(1).dtype)"
        env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert done.stdout.strip() == "float64", (order, done.stderr[-2000:])


def test_importing_the_package_changes_nothing_and_a_run_needs_configure():
    """`import qernel_cli` leaves JAX and XLA_FLAGS alone; assembling a run in 32-bit mode is a clear error."""
    code = (
        "import os, qernel_cli, jax\n"
        "print(repr(os.environ.get('XLA_FLAGS')), jax.config.jax_enable_x64)\n"
        "from qernel_cli.config import resolve\n"
        "from qernel_cli.runtime import JaxNotConfiguredError\n"
        "from qernel_cli.vmc.assembly import build\n"
        "try:\n"
        "    build(resolve('moire-tiny'))\n"
        "except JaxNotConfiguredError as error:\n"
        "    print('refused:', error)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_ENABLE_X64", "XLA_FLAGS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    first, second = done.stdout.splitlines()
    assert first == "None False"
    assert second.startswith("refused: JAX is in 32-bit mode") and "configure_jax()" in second


def test_set_accepts_a_number_for_a_text_field():
    """`--set electrons.filling=1` means the filling "1" (TOML would read it as an integer)."""
    from qernel_cli.config import ConfigError, resolve

    c = resolve("moire-tiny", ["supercell.L1=2", "supercell.L2=3", "electrons.n_up=6", "electrons.filling=1"])
    assert c.electrons.filling == "1" and c.filling == 1.0
    with pytest.raises(ConfigError, match="does not fit|needs N"):
        resolve("moire-tiny", ["electrons.filling=1"])  # 6 electrons on 3×3 is 2/3, not 1
    with pytest.raises(ConfigError, match='write it in quotes: "1"'):
        from_dict({**tomllib.loads(runner.invoke(app, ["config"]).stdout), "electrons": {"n_up": 6, "n_down": 0, "filling": 1}})


def test_batch_job_output_of_train(tiny_train):
    """`qernel train > out 2> err`: progress as plain lines on stderr, the energy table with every digit on stdout."""
    import json

    run, done = tiny_train
    progress = [line for line in done.stderr.splitlines() if line.startswith("VMC ")]
    assert [line.split()[1] for line in progress] == ["1/4", "3/4", "4/4"], done.stderr  # first, 2 later (QERNEL_PROGRESS_EVERY), last
    for line in progress:
        assert re.search(r"E [+-]\d+\.\d{4}±\d+\.\d{4} meV/e  var \S+ meV²  acc \d\.\d\d  \S+ steps/s  elapsed \d:\d\d:\d\d", line), line
    assert "remaining" in progress[0] and "\x1b" not in done.stderr  # no terminal escapes in a log
    assert "Warning" not in done.stderr
    assert any(re.match(r"\[\d\d:\d\d:\d\d\] ", line) for line in done.stderr.splitlines())  # phase lines
    summary = json.loads((run / "summary.json").read_text())
    lines = done.stdout.splitlines()
    assert lines[0].startswith("# energies per electron after 4 steps")
    header = lines[1].split("\t")
    assert header[:3] == ["V (meV)", "E/N (meV)", "± (meV)"]
    rows = [line.split("\t") for line in lines[2 : 2 + len(summary["depths"])]]
    for row, depth in zip(rows, summary["depths"]):
        assert len(row) == len(header) and "…" not in "".join(row)
        assert float(row[1]) == pytest.approx(depth["energy_per_electron_meV"], abs=5e-5)
        assert float(row[2]) == pytest.approx(depth["energy_error_meV"], abs=5e-5)
