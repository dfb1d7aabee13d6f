"""Presets, overrides and validation."""

import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qernel_cli.config import Config, ConfigError, apply_overrides, from_dict, load_preset_data, preset_names, resolve

HOUSE_FAMILY = {"moire-tiny": (6, 3), "moire24": (24, 6), "moire54": (54, 9), "moire96": (96, 12), "moire150": (150, 15)}


def test_bundled_presets_are_the_house_family():
    assert set(HOUSE_FAMILY) <= set(preset_names())
    for name, (n, L) in HOUSE_FAMILY.items():
        c = resolve(name)
        assert (c.n_electrons, c.supercell.L1, c.supercell.L2) == (n, L, L)
        assert c.filling == pytest.approx(2 / 3)
        assert c.electrons.n_down == 0  # spin-polarised
        assert c.hamiltonian.V_min_meV <= 15.0 <= c.hamiltonian.V_max_meV


def test_presets_set_every_field_explicitly():
    # A preset documents the run: no field silently falls back to a code default.
    for name in preset_names():
        data = load_preset_data(name)
        for section, value in Config().to_dict().items():
            if isinstance(value, dict):
                assert set(data[section]) == set(value), (name, section)


def test_overrides_change_only_what_they_name():
    base = resolve("moire-tiny")
    c = resolve("moire-tiny", ["model.layers=5", "hamiltonian.coulomb=false", "material.epsilon=10", "optimizer.name=adam"])
    assert (c.model.layers, c.hamiltonian.coulomb, c.material.epsilon, c.optimizer.name) == (5, False, 10.0, "adam")
    assert c.model.width == base.model.width and c.sampler == base.sampler


def test_spinful_configuration_is_accepted():
    c = resolve("moire-tiny", ["electrons.n_up=3", "electrons.n_down=3", "pretrain.target=bloch"])
    assert (c.electrons.n_up, c.electrons.n_down, c.n_electrons) == (3, 3, 6)


def test_toml_round_trip():
    c = resolve("moire54", ["model.layers=3"])
    assert from_dict(tomllib.loads(c.to_toml())) == c


@pytest.mark.parametrize(
    "override,field",
    [
        ("model.layrs=3", "model.layrs"),
        ("modle.layers=3", "modle"),
        ("model.layers=abc", "model.layers"),
        ("model.layers=2.5", "model.layers"),
        ("hamiltonian.coulomb=1", "hamiltonian.coulomb"),
        ("material.a_M_nm=-8", "material.a_M_nm"),
        ("material.epsilon=0", "material.epsilon"),
        ("material.m_star=nan", "material.m_star"),
        ("electrons.n_up=-6", "electrons.n_up"),
        ("electrons.n_up=5", "electrons.filling"),
        ("electrons.filling='1/2'", "electrons.filling"),
        ("electrons.filling='two thirds'", "electrons.filling"),
        ("supercell.L1=0", "supercell.L1"),
        ("supercell.L2=4", "electrons.filling"),
        ("hamiltonian.V_max_meV=-1", "hamiltonian.V_max_meV"),
        ("model.kv_heads=3", "model.kv_heads"),
        ("model.dtype='float16'", "model.dtype"),
        ("optimizer.name=sgd", "optimizer.name"),
        ("sampler.target_acceptance=1.5", "sampler.target_acceptance"),
        ("model=3", "model"),
        ("model.layers", "section.key=value"),
        ("model.layers=", "missing value"),
    ],
)
def test_bad_overrides_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")) as info:
        resolve("moire-tiny", [override])
    assert "\n" not in str(info.value)


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*moire-tiny"):
        resolve("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nlayers = 2\n")
    with pytest.raises(ConfigError, match="malformed TOML"):
        resolve(str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[modell]\nlayers = 2\n")
    with pytest.raises(ConfigError, match="unknown key modell"):
        resolve(str(unknown))
    custom = tmp_path / "custom.toml"
    custom.write_text("[supercell]\nL1 = 2\nL2 = 2\n[electrons]\nn_up = 2\nn_down = 2\nfilling = '1'\n")
    c = resolve(str(custom))  # a partial file falls back to defaults for the rest
    assert (c.n_electrons, c.supercell.L1) == (4, 2)


@settings(max_examples=60, deadline=None)
@given(layers=st.integers(1, 64), eps=st.floats(0.1, 100.0), coulomb=st.booleans())
def test_valid_overrides_round_trip(layers, eps, coulomb):
    c = resolve("moire-tiny", [f"model.layers={layers}", f"material.epsilon={eps!r}", f"hamiltonian.coulomb={str(coulomb).lower()}"])
    assert (c.model.layers, c.material.epsilon, c.hamiltonian.coulomb) == (layers, eps, coulomb)


@settings(max_examples=60, deadline=None)
@given(key=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="=."), min_size=1, max_size=12))
def test_unknown_keys_are_always_rejected(key):
    known = {f for f in Config().to_dict()["model"]}
    if key in known:
        return
    with pytest.raises(ConfigError):
        apply_overrides(load_preset_data("moire-tiny"), [f"model.{key}=1"])


def test_runs_stored_before_the_envelope_spline_keep_linear_envelopes(tmp_path):
    """A stored config without model.envelope_interpolation was written when envelopes were piecewise linear in V."""
    import tomli_w

    from qernel_cli.stores.run_dir import CONFIG_FILE, stored_config

    data = tomllib.loads(resolve("moire-tiny").to_toml())
    assert data["model"]["envelope_interpolation"] == "smooth"
    (tmp_path / CONFIG_FILE).write_text(tomli_w.dumps(data))
    assert stored_config(tmp_path).model.envelope_interpolation == "smooth"
    del data["model"]["envelope_interpolation"]
    (tmp_path / CONFIG_FILE).write_text(tomli_w.dumps(data))
    assert stored_config(tmp_path).model.envelope_interpolation == "linear"


def test_runs_stored_before_band_mixing_keep_fixed_momenta(tmp_path):
    """A stored config without model.envelope_momenta was written when every orbital kept its Bloch momentum."""
    import tomli_w

    from qernel_cli.stores.run_dir import CONFIG_FILE, stored_config

    data = tomllib.loads(resolve("moire-tiny", ["model.envelope_momenta=mixed", "pretrain.target=bloch"]).to_toml())
    (tmp_path / CONFIG_FILE).write_text(tomli_w.dumps(data))
    assert stored_config(tmp_path).model.envelope_momenta == "mixed"
    del data["model"]["envelope_momenta"]
    (tmp_path / CONFIG_FILE).write_text(tomli_w.dumps(data))
    assert stored_config(tmp_path).model.envelope_momenta == "fixed"


def test_several_type_errors_report_the_first_field_in_declaration_order():
    """Which error is reported must not depend on the process's string hashing (set order): fields are checked in order."""
    import os
    import subprocess
    import sys

    code = (
        "from qernel_cli.config import ConfigError, resolve\n"
        "try:\n"
        "    resolve('moire-tiny', ['model.width=\"a\"', 'model.layers=\"b\"', 'model.heads=\"c\"', 'sampler.walkers=\"d\"'])\n"
        "except ConfigError as error:\n"
        "    print(error)\n"
    )
    seen = set()
    for seed in ("0", "1", "2", "3"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        seen.add(done.stdout.strip())
    assert len(seen) == 1 and next(iter(seen)).startswith("model.layers:"), seen
