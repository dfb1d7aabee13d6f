"""The `qernel` command line: listing, help, version, one-line errors."""

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
    for name, n, sc in [("moire-tiny", 6, "3×3"), ("moire24", 24, "6×6"), ("moire54", 54, "9×9"), ("moire96", 96, "12×12"), ("moire150", 150, "15×15")]:
        line = next(l for l in result.stdout.splitlines() if f" {name} " in l)
        assert f"{n} ({n},0)" in line and sc in line and "2/3" in line


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
