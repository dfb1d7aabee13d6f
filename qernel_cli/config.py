"""Run configuration: presets (TOML), ``--set section.key=value`` overrides, validation.

A config is a tree of frozen dataclasses; every field has a type that is
checked when the config is built, so a typo or a wrong type fails early with
one line naming the field. Physical inputs are in physical units (nm, meV,
degrees, m_e); conversion to moiré units happens in :mod:`qernel_cli.units`.
"""

from __future__ import annotations

import dataclasses
import difflib
import fractions
import math
import tomllib
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import tomli_w

from qernel_cli.errors import QernelError, os_reason
from qernel_cli.units import Material

if TYPE_CHECKING:
    from qernel_cli.lattice import Supercell


class ConfigError(QernelError, ValueError):
    """A configuration that cannot be used; the message is one line naming the field."""


@dataclasses.dataclass(frozen=True)
class MaterialConfig:
    """Material in physical units: moiré period (nm), effective mass (m_e), dielectric constant, phase (deg)."""

    a_M_nm: float = 8.031
    m_star: float = 0.35
    epsilon: float = 5.0
    phi_deg: float = 45.0


@dataclasses.dataclass(frozen=True)
class SupercellConfig:
    """Periodic supercell of L1 × L2 moiré cells."""

    L1: int = 3
    L2: int = 3


@dataclasses.dataclass(frozen=True)
class ElectronsConfig:
    """Electron numbers per spin; ``filling`` (optional, e.g. "2/3") is checked against N/(L1·L2)."""

    n_up: int = 6
    n_down: int = 0
    filling: str = ""


@dataclasses.dataclass(frozen=True)
class HamiltonianConfig:
    """The family of Hamiltonians: moiré depths V (meV) used in training; Coulomb on/off."""

    V_min_meV: float = 0.0
    V_max_meV: float = 30.0
    coulomb: bool = True


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Wavefunction size: transformer trunk (GQA + MoE + FiLM) and determinant head.

    ``envelope``: initialise the orbital envelopes from the non-interacting Bloch
    orbitals at the middle of the depth range ("bloch") or from free-electron
    plane waves; ``envelope_shells``: moiré reciprocal-vector shells of the envelopes;
    ``envelope_anchors``: depths (evenly spaced over the range) at which Bloch
    envelopes are anchored and between which they are interpolated (1: fixed);
    ``envelope_interpolation``: "smooth" (natural cubic spline in V: no kink
    at the anchors) or "linear" (piecewise linear, as in runs made before the
    spline; their stored configs lack the key and are read as "linear");
    ``envelope_momenta``: "fixed" (orbital j keeps the Bloch momentum k_j of its
    initial envelope, so ψ keeps the total crystal momentum of that filling) or
    "mixed" (each envelope is a trained mixture of the lowest
    ``envelope_bands`` Bloch bands at every supercell momentum: ψ may take
    another total momentum or break the translations, as a crystal does;
    ``envelope_bands`` is used only then);
    ``pair_jastrow_qmax``: cutoff (units of the shortest moiré reciprocal vector
    |g|) of the c-conditioned plane-wave pair Jastrow (0: off);
    ``radial_jastrow``: Gaussians exp(−d²/w_k²), w_k = 0.1·2^k a_M, per pair
    type of the c-conditioned short-range radial pair Jastrow (0: off).
    """

    layers: int = 2
    width: int = 32
    heads: int = 4
    kv_heads: int = 2
    mlp_width: int = 64
    experts: int = 2
    determinants: int = 2
    harmonics: int = 2
    film_hidden: int = 32
    jastrow: bool = True
    envelope: Literal["bloch", "plane-wave"] = "bloch"
    envelope_shells: int = 3
    envelope_anchors: int = 3
    envelope_interpolation: Literal["smooth", "linear"] = "smooth"
    envelope_momenta: Literal["fixed", "mixed"] = "fixed"
    envelope_bands: int = 2
    pair_jastrow_qmax: float = 0.0
    radial_jastrow: int = 0
    dtype: Literal["float32", "float64"] = "float64"


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Metropolis sampler: walkers, steps between updates, burn-in, initial move width (a_M).

    ``lattice_hops``: after every Gaussian move, propose a nearest-neighbour
    moiré-lattice hop of one electron (keeps deep-potential chains ergodic).
    """

    walkers: int = 256
    steps_per_iteration: int = 10
    burn_in: int = 100
    move_width: float = 0.2
    target_acceptance: float = 0.5
    lattice_hops: bool = True


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimiser: SPRING natural gradient (default) or Adam; learning rate schedule lr/(1 + step/decay).

    The gradient sees local energies clipped to median ± ``clip_mad``·MAD per
    depth group, MAD the median (``clip_deviation = "median"``) or the mean
    (``"mean"``, FermiNet's convention, wider for heavy tails) of |E_L − median|.
    """

    name: Literal["spring", "adam"] = "spring"
    learning_rate: float = 0.005
    lr_decay_steps: float = 1000.0
    damping: float = 0.1
    momentum: float = 0.9
    max_norm: float = 0.1
    clip_mad: float = 5.0
    clip_deviation: Literal["median", "mean"] = "median"


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Supervised pre-training (fidelity) on a reference determinant at the drawn depths.

    ``target``: "bloch", the non-interacting Bloch determinant (the liquid), or
    "crystal", Gaussians on the classical Coulomb ground state of the moiré
    sites (see ``qernel_cli.vmc.crystal``).
    """

    steps: int = 200
    learning_rate: float = 3e-4
    target: Literal["bloch", "crystal"] = "bloch"


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Training loop: optimisation steps, depths drawn per step, seed, checkpoint interval (minutes).

    ``evaluate_start``: measure the energies after pre-training (before VMC) at
    the evaluation depths, so the summary shows what VMC gained.
    ``walker_chunk``: evaluate local energies and log-derivatives this many
    walkers (per device) at a time, which bounds memory for any walker count
    (0: all walkers at once).
    ``evaluate_blocks``: blocks of ``sampler.steps_per_iteration`` sweeps in
    the start and final energy evaluations (errors from their spread).
    ``laplacian_sparsity``: 0 (default) uses QERNEL's own forward Laplacian
    (hand-written jets of trunk, determinant head and Jastrows); a threshold
    in (0, 1] uses folx's generic forward Laplacian of the whole log ψ with
    that sparsity threshold instead (~0.6 uses the per-electron sparsity of
    the first layers; slower than the default and twice the compile time).
    """

    steps: int = 500
    depths_per_step: int = 4
    seed: int = 0
    checkpoint_minutes: float = 5.0
    evaluate_start: bool = True
    walker_chunk: int = 0
    laplacian_sparsity: float = 0.0
    evaluate_blocks: int = 20


@dataclasses.dataclass(frozen=True)
class Config:
    """A complete, validated run configuration."""

    description: str = ""
    material: MaterialConfig = MaterialConfig()
    supercell: SupercellConfig = SupercellConfig()
    electrons: ElectronsConfig = ElectronsConfig()
    hamiltonian: HamiltonianConfig = HamiltonianConfig()
    model: ModelConfig = ModelConfig()
    sampler: SamplerConfig = SamplerConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    pretrain: PretrainConfig = PretrainConfig()
    training: TrainingConfig = TrainingConfig()

    def __post_init__(self):
        validate(self)

    # Derived quantities -------------------------------------------------

    @property
    def n_electrons(self) -> int:
        return self.electrons.n_up + self.electrons.n_down

    @property
    def supercell_geometry(self) -> Supercell:
        from qernel_cli.lattice import Supercell  # imports JAX: not needed to read or print a config

        return Supercell(self.supercell.L1, self.supercell.L2)

    @property
    def filling(self) -> float:
        return self.n_electrons / (self.supercell.L1 * self.supercell.L2)

    @property
    def material_units(self) -> Material:
        m = self.material
        return Material(a_M_nm=m.a_M_nm, m_star=m.m_star, epsilon=m.epsilon, phi_deg=m.phi_deg)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


# ---------------------------------------------------------------------------
# Building a config from plain data, with type checks.


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, field: str) -> Any:
    """Check ``value`` against the annotated type ``tp`` (ints are accepted for floats)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{field}: expected one of {_type_name(tp)}, got {_short(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{field}: expected true or false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected an integer, got {_short(value)}")
        if not -(2**63) <= value < 2**63:  # TOML integers are 64-bit; so are the arrays they size
            raise ConfigError(f"{field}: {_short(value)} is out of the 64-bit integer range")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{field}: expected a number, got {_short(value)}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{field}: expected a finite number, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            quoted = f' (write it in quotes: "{value}")' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
            raise ConfigError(f"{field}: expected a string, got {_short(value)}{quoted}")
        return value
    raise TypeError(f"unsupported config type {tp!r} for {field}")  # pragma: no cover


def _short(value: Any, limit: int = 80) -> str:
    """``repr`` of a value (one line: strings escape their line breaks), cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unknown_key(path: str, name: str, known: list[str]) -> str:
    """"unknown key a.b; did you mean a.c? known: …" (the suggestion only if a known key is close)."""
    close = difflib.get_close_matches(name, known, n=1) or difflib.get_close_matches(name.lower(), known, n=1)
    hint = f"; did you mean {path[: -len(name)]}{close[0]}?" if close else ";"
    return f"unknown key {path}{hint} known: {', '.join(sorted(known))}"


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table, got {_short(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"[{prefix}]" if prefix else "top level"
        raise ConfigError(f"{_unknown_key(f'{prefix}.{unknown[0]}' if prefix else unknown[0], unknown[0], sorted(names))} (in {where})")
    kwargs = {}
    for name in names & set(data):
        tp = hints[name]
        path = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data[name], path)
        else:
            kwargs[name] = _coerce(data[name], tp, path)
    return kwargs if cls is Config else cls(**kwargs)


def from_dict(data: dict[str, Any]) -> Config:
    """Build and validate a :class:`Config` from nested plain data (as read from TOML)."""
    return Config(**_build(Config, data, ""))


def validate(config: Config) -> None:
    """Physical and structural consistency checks; raises :class:`ConfigError`."""
    m, sc, el, ham = config.material, config.supercell, config.electrons, config.hamiltonian
    for name in ("a_M_nm", "m_star", "epsilon"):
        if not getattr(m, name) > 0:
            raise ConfigError(f"material.{name}: must be positive, got {getattr(m, name)!r}")
    for name in ("L1", "L2"):
        if getattr(sc, name) < 1:
            raise ConfigError(f"supercell.{name}: must be a positive integer, got {getattr(sc, name)!r}")
    for name in ("n_up", "n_down"):
        if getattr(el, name) < 0:
            raise ConfigError(f"electrons.{name}: must be non-negative, got {getattr(el, name)!r}")
    n = el.n_up + el.n_down
    if n < 1:
        raise ConfigError(f"electrons: need at least one electron, got n_up={el.n_up}, n_down={el.n_down}")
    if el.filling:
        try:
            nu = fractions.Fraction(el.filling)
        except (ValueError, ZeroDivisionError):
            raise ConfigError(f"electrons.filling: expected a fraction like '2/3', got {el.filling!r}") from None
        if nu <= 0:
            raise ConfigError(f"electrons.filling: must be positive, got {el.filling!r}")
        expected = nu * sc.L1 * sc.L2
        if expected.denominator != 1:
            raise ConfigError(
                f"electrons.filling: ν = {el.filling} does not fit the {sc.L1}×{sc.L2} supercell "
                f"(ν·L1·L2 = {float(expected):g} is not an integer)"
            )
        if int(expected) != n:
            raise ConfigError(
                f"electrons.filling: ν = {el.filling} on {sc.L1}×{sc.L2} needs N = {_short(int(expected))} electrons, "
                f"but n_up + n_down = {n}"
            )
    if ham.V_min_meV < 0 or ham.V_max_meV < ham.V_min_meV:
        raise ConfigError(
            f"hamiltonian.V_max_meV: need 0 ≤ V_min_meV ≤ V_max_meV, got {ham.V_min_meV!r}..{ham.V_max_meV!r}"
        )
    md = config.model
    for name in ("layers", "width", "heads", "kv_heads", "mlp_width", "experts", "determinants", "harmonics", "film_hidden", "envelope_shells", "envelope_anchors", "envelope_bands"):
        if getattr(md, name) < 1:
            raise ConfigError(f"model.{name}: must be a positive integer, got {getattr(md, name)!r}")
    if not 0.0 <= md.pair_jastrow_qmax <= 5.0:
        raise ConfigError(f"model.pair_jastrow_qmax: must be between 0 (off) and 5 (units of |g|), got {md.pair_jastrow_qmax!r}")
    if not 0 <= md.radial_jastrow <= 8:
        raise ConfigError(f"model.radial_jastrow: must be between 0 (off) and 8 Gaussians, got {md.radial_jastrow!r}")
    if md.envelope_momenta == "mixed" and md.envelope != "bloch":
        raise ConfigError('model.envelope_momenta: "mixed" mixes Bloch bands; it needs model.envelope = "bloch"')
    if md.envelope_momenta == "mixed" and max(config.electrons.n_up, config.electrons.n_down) > md.envelope_bands * config.supercell.L1 * config.supercell.L2:
        raise ConfigError(
            f"model.envelope_bands: {md.envelope_bands} band(s) × {config.supercell.L1 * config.supercell.L2} momenta hold fewer "
            f"states than the {max(config.electrons.n_up, config.electrons.n_down)} electrons of one spin"
        )
    if md.heads % md.kv_heads:
        raise ConfigError(f"model.kv_heads: must divide model.heads={md.heads}, got {md.kv_heads}")
    if md.width % md.heads:
        raise ConfigError(f"model.heads: must divide model.width={md.width}, got {md.heads}")
    sa = config.sampler
    for name in ("walkers", "steps_per_iteration"):
        if getattr(sa, name) < 1:
            raise ConfigError(f"sampler.{name}: must be a positive integer, got {getattr(sa, name)!r}")
    if sa.burn_in < 0:
        raise ConfigError(f"sampler.burn_in: must be non-negative, got {sa.burn_in!r}")
    if not sa.move_width > 0:
        raise ConfigError(f"sampler.move_width: must be positive, got {sa.move_width!r}")
    if not 0 < sa.target_acceptance < 1:
        raise ConfigError(f"sampler.target_acceptance: must lie in (0, 1), got {sa.target_acceptance!r}")
    op = config.optimizer
    for name in ("learning_rate", "lr_decay_steps", "max_norm", "clip_mad"):
        if not getattr(op, name) > 0:
            raise ConfigError(f"optimizer.{name}: must be positive, got {getattr(op, name)!r}")
    if op.damping < 0:
        raise ConfigError(f"optimizer.damping: must be non-negative, got {op.damping!r}")
    if not 0 <= op.momentum < 1:
        raise ConfigError(f"optimizer.momentum: must lie in [0, 1), got {op.momentum!r}")
    if config.pretrain.steps < 0:
        raise ConfigError(f"pretrain.steps: must be non-negative, got {config.pretrain.steps!r}")
    if not config.pretrain.learning_rate > 0:
        raise ConfigError(f"pretrain.learning_rate: must be positive, got {config.pretrain.learning_rate!r}")
    tr = config.training
    for name in ("steps", "depths_per_step"):
        if getattr(tr, name) < 1:
            raise ConfigError(f"training.{name}: must be a positive integer, got {getattr(tr, name)!r}")
    if tr.seed < 0:
        raise ConfigError(f"training.seed: must be non-negative, got {tr.seed!r}")
    if not 0.0 <= tr.laplacian_sparsity <= 1.0:
        raise ConfigError(f"training.laplacian_sparsity: must lie in [0, 1] (0: dense), got {tr.laplacian_sparsity!r}")
    if tr.evaluate_blocks < 2:
        raise ConfigError(f"training.evaluate_blocks: needs at least 2 blocks for an error bar, got {tr.evaluate_blocks!r}")
    if tr.walker_chunk < 0:
        raise ConfigError(f"training.walker_chunk: must be non-negative (0: no chunking), got {tr.walker_chunk!r}")
    if not tr.checkpoint_minutes > 0:
        raise ConfigError(f"training.checkpoint_minutes: must be positive, got {tr.checkpoint_minutes!r}")


# ---------------------------------------------------------------------------
# Overrides.


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``section.key=value``; the value is read as a TOML value, else as a bare string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {_short(text)}: expected section.key=value")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise ConfigError(f"override {_short(text)}: malformed key {_short(key)}")
    raw = raw.strip()
    if not raw:
        raise ConfigError(f"override {_short(text)}: missing value")
    try:
        document = tomllib.loads(f"v = {raw}")
        value = document["v"] if len(document) == 1 else raw  # "3\nother = 4" is not one TOML value
    except tomllib.TOMLDecodeError:
        value = raw
    return [p.strip() for p in parts], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of nested ``data`` with ``section.key=value`` overrides applied.

    Unknown sections and keys are rejected against the :class:`Config` schema,
    so a typo never silently adds a setting.
    """
    import copy

    data = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        cls: Any = Config
        node = data
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if part not in fields:
                raise ConfigError(f"override {_short(text)}: {_unknown_key(path, part, sorted(fields))}")
            tp = typing.get_type_hints(cls)[part]
            last = i == len(parts) - 1
            if dataclasses.is_dataclass(tp):
                if last:
                    raise ConfigError(f"override {_short(text)}: {path} is a section; set one of its keys, e.g. {path}.<key>=...")
                node = node.setdefault(part, {})
                if not isinstance(node, dict):  # the preset file has a value where a section belongs
                    raise ConfigError(f"{path}: expected a table, got {_short(node)}")
                cls = tp
            else:
                if not last:
                    raise ConfigError(f"override {_short(text)}: {path} is a value, not a section")
                if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
                    value = text.partition("=")[2].strip()  # a number typed for a text field (filling=1) means its text
                node[part] = value
    return data


# ---------------------------------------------------------------------------
# Presets.


def presets_dir() -> Path:
    """Directory of the bundled preset TOML files (installed copy first, then the source tree)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_presets", here.parent / "presets"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("preset directory not found: the installation is incomplete")


def preset_names() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.toml"))


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file with one-line errors for missing or malformed files."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {os_reason(err)}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"cannot read config file {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"malformed TOML in {path}: {err}") from None


def load_preset_data(name: str) -> dict[str, Any]:
    """Raw data of a preset by name, or of a TOML file if ``name`` is a path."""
    path = Path(name)
    if path.suffix == ".toml" and path.exists():
        return read_toml(path)
    candidate = presets_dir() / f"{name}.toml"
    if not candidate.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return read_toml(candidate)


def resolve(preset: str, overrides: list[str] | None = None) -> Config:
    """Preset (name or TOML path) + overrides → validated :class:`Config`.

    Errors from a preset file are prefixed with the preset's name.
    """
    data = load_preset_data(preset)
    data = apply_overrides(data, list(overrides or []))
    return from_dict(data)
