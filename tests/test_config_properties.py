"""Property tests of config parsing and overrides (hypothesis).

Whatever the overrides or the TOML document, building a config either
succeeds, and then the config round-trips through its TOML and shows every
override, or fails with a one-line :class:`ConfigError`; never another exception.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qernel_cli.config import (
    Config,
    ConfigError,
    apply_overrides,
    from_dict,
    load_preset_data,
    parse_override,
    resolve,
)

SECTIONS = {name: tp for name, tp in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(tp)}
FIELDS = [(section, name, tp) for section, cls in SECTIONS.items() for name, tp in typing.get_type_hints(cls).items()]
BASE = load_preset_data("moire-tiny")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _toml_float(x: float) -> str:
    return "nan" if math.isnan(x) else repr(x)  # repr gives inf, -inf, 1e+300: all TOML


def value_text(tp) -> st.SearchStrategy[str]:
    """TOML text of plausible values of type ``tp`` (edge values included)."""
    if typing.get_origin(tp) is typing.Literal:
        return st.sampled_from([json.dumps(a) for a in typing.get_args(tp)] + ['"float16"', '"sgd"'])
    if tp is bool:
        return st.sampled_from(["true", "false"])
    if tp is int:
        return st.one_of(st.integers(-2, 40), st.integers(-(2**70), 2**70)).map(str)
    if tp is float:
        return st.one_of(st.floats(-1.0, 50.0), st.floats(allow_nan=True, allow_infinity=True)).map(_toml_float)
    return st.sampled_from(['"2/3"', '"1/3"', '"1"', '"1/2"', '""', '"two thirds"', '"1/0"'])


@st.composite
def overrides(draw, well_typed: bool = True):
    """``section.key=value`` texts for schema fields; values of the field's type, or of any field's type."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        section, name, tp = draw(st.sampled_from(FIELDS))
        if not well_typed:
            tp = draw(st.sampled_from(FIELDS))[2]
        out.append(f"{section}.{name}={draw(value_text(tp))}")
    return out


def assert_one_line(error: ConfigError) -> None:
    message = str(error)
    assert message and len(message.splitlines()) == 1, message


@SETTINGS
@given(overrides(well_typed=True))
def test_valid_overrides_round_trip_and_show_in_the_config(texts):
    try:
        c = resolve("moire-tiny", texts)
    except ConfigError as error:  # e.g. walkers=0, an impossible filling, NaN
        assert_one_line(error)
        return
    assert from_dict(tomllib.loads(c.to_toml())) == c
    last = {}
    for text in texts:
        path, value = parse_override(text)
        last[tuple(path)] = value
    for (section, name), value in last.items():
        assert getattr(getattr(c, section), name) == value


@SETTINGS
@given(overrides(well_typed=False))
def test_mistyped_overrides_resolve_or_fail_in_one_line(texts):
    _resolves_and_round_trips_or_fails_in_one_line(texts)


def _resolves_and_round_trips_or_fails_in_one_line(texts):
    try:
        c = resolve("moire-tiny", texts)
    except ConfigError as error:
        assert_one_line(error)
    else:
        assert from_dict(tomllib.loads(c.to_toml())) == c


junk = st.one_of(
    st.text(max_size=40),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=20), st.text(max_size=20)),
    st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from([f[0] for f in FIELDS] + ["description", "x"]), st.text(max_size=12), st.text(max_size=12)),
)


@SETTINGS
@given(st.lists(junk, min_size=1, max_size=3))
def test_arbitrary_override_strings_never_raise_anything_but_a_config_error(texts):
    _resolves_and_round_trips_or_fails_in_one_line(texts)


toml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(allow_nan=True), st.text(max_size=8)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)),
    max_leaves=8,
)
section_names = st.sampled_from([s.name for s in dataclasses.fields(Config)] + ["modell", ""])


@SETTINGS
@given(
    st.dictionaries(section_names, st.one_of(toml_values, st.dictionaries(st.sampled_from([f[1] for f in FIELDS] + ["zz"]), toml_values, max_size=4)), max_size=4),
    st.lists(junk, max_size=2),
)
def test_arbitrary_documents_with_overrides_build_or_fail_in_one_line(document, texts):
    """A parsed TOML document (any shape, any values) with overrides on top of it: a Config or one ConfigError line."""
    data = {**BASE, **document}
    try:
        c = from_dict(apply_overrides(data, texts))
    except ConfigError as error:
        assert_one_line(error)
    else:
        assert from_dict(tomllib.loads(c.to_toml())) == c


def test_an_override_value_is_one_toml_value():
    """Text after the value's line is not read as more settings."""
    with pytest.raises(ConfigError, match="model.layers: expected an integer") as info:
        resolve("moire-tiny", ["model.layers=3\ntraining.steps = 4"])
    assert_one_line(info.value)
    assert resolve("moire-tiny", ["model.layers=3 # a comment"]).model.layers == 3
