"""The documentation follows the code.

* docs/cli.md is exactly what ``qernel_cli.cli_reference`` renders from the
  typer app, and names every command, argument and option of the app;
* docs/store-format.md documents every array (with its dimensions, dtype and
  units) and every group attribute that the stores really hold; the stores
  are written here by the real writers, with the expensive JAX sampling
  replaced by random configurations, so this takes seconds;
* every relative link and image in docs/*.md and README.md resolves, anchors
  included.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Annotated

import numpy as np
import pytest
import typer
import zarr

from qernel_cli import cli_reference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CLI_DOC = DOCS / "cli.md"
STORE_DOC = DOCS / "store-format.md"


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# docs/cli.md


def test_cli_reference_is_regenerated():
    expected = cli_reference.render()
    actual = _read(CLI_DOC) if CLI_DOC.exists() else ""
    if actual != expected:
        diff = "".join(
            list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True), "docs/cli.md", "rendered"))[:40]
        )
        pytest.fail(
            f"docs/cli.md is out of date with the CLI; regenerate it with `{cli_reference.REGENERATE}` "
            f"(run in the repository root). First differences:\n{diff}"
        )


def test_cli_reference_module_entry_point_prints_the_reference():
    result = subprocess.run(
        [sys.executable, "-m", "qernel_cli.cli_reference"], cwd=ROOT, capture_output=True, timeout=120, check=True
    )
    assert result.stdout.decode("utf-8") == cli_reference.render()


def _command_sections(text: str) -> dict[str, str]:
    """'## `qernel NAME`' section bodies by command name."""
    parts = re.split(r"^## `qernel ([\w-]+)`\s*$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def test_every_command_argument_and_option_is_in_the_cli_reference():
    """Checked against the Click objects directly, independently of the renderer."""
    from qernel_cli.cli import app

    group = typer.main.get_command(app)
    text = _read(CLI_DOC)
    sections = _command_sections(text)
    commands = {name: cmd for name, cmd in group.commands.items() if not getattr(cmd, "hidden", False)}
    assert commands, "the app has no commands?"
    missing_commands = sorted(set(commands) - set(sections))
    assert not missing_commands, f"commands missing from docs/cli.md: {missing_commands}; run `{cli_reference.REGENERATE}`"
    for flag in (f for p in group.params if not getattr(p, "hidden", False) for f in (*p.opts, *p.secondary_opts)):
        assert f"`{flag}`" in text, f"`qernel {flag}` missing from docs/cli.md"
    for name, command in commands.items():
        section = sections[name]
        first_line = (command.help or "").strip().splitlines()[0] if command.help else ""
        assert first_line in section, f"help text of `qernel {name}` missing from docs/cli.md"
        for p in command.params:
            if getattr(p, "hidden", False):
                continue
            if p.param_type_name == "argument":
                assert f"`{p.name.upper()}`" in section, f"argument {p.name} of `qernel {name}` missing from docs/cli.md"
                continue
            for flag in (*p.opts, *p.secondary_opts):
                assert f"`{flag}`" in section, f"option {flag} of `qernel {name}` missing from docs/cli.md"
            if p.help:
                assert " ".join(p.help.split()) in section.replace("\\|", "|"), f"help of {p.opts[0]} (`qernel {name}`) missing"


def test_renderer_covers_a_new_command_and_option():
    """A command or option added to an app shows up in the rendered reference without any hand-written text."""
    demo = typer.Typer(name="demo")

    @demo.command()
    def first(count: Annotated[int, typer.Option("--count", "-c", min=1, help="How many.")] = 3):
        """First command."""

    @demo.command()
    def second(path: Annotated[Path, typer.Argument(help="Where.")], loud: Annotated[bool, typer.Option(help="Shout.")] = False):
        """Second command.

        Longer description."""

    text = cli_reference.render(demo, prog="demo")
    sections = _command_sections(text.replace("## `demo ", "## `qernel "))
    assert set(sections) == {"first", "second"}
    assert "| `--count`, `-c` | int ≥ 1 | `3` | How many. |" in sections["first"]
    assert "| `PATH` | path | required | Where. |" in sections["second"]
    assert "`--loud` / `--no-loud`" in sections["second"] and "Longer description." in sections["second"]


# ---------------------------------------------------------------------------
# docs/store-format.md


def _store_sections() -> dict[str, str]:
    """Sections of store-format.md by '## ' or '### ' heading."""
    parts = re.split(r"^#{2,3} (.+)$", _read(STORE_DOC), flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _section(keyword: str) -> str:
    found = [body for title, body in _store_sections().items() if keyword in title]
    assert len(found) == 1, f"docs/store-format.md needs exactly one section whose heading names {keyword!r}"
    return found[0]


def _table_row(section: str, name: str) -> list[str] | None:
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == f"`{name}`":
            return cells
    return None


def _variable_tables():
    from qernel_cli.stores import observables, samples, train

    return {
        "train.zarr": {**train.TRAIN_VARIABLES, **train.PRETRAIN_VARIABLES},
        "Sample store": samples.SAMPLE_VARIABLES,
        "Observables store": observables.OBSERVABLE_VARIABLES,
    }


@pytest.mark.parametrize("section_key", ["train.zarr", "Sample store", "Observables store"])
def test_every_store_variable_is_documented_with_dims_dtype_and_units(section_key):
    variables = _variable_tables()[section_key]
    section = _section(section_key)
    for name, var in variables.items():
        row = _table_row(section, name)
        assert row is not None, f"variable {name!r} ({section_key}) has no row in docs/store-format.md"
        dims = "(" + ", ".join(var.dims) + ("," if len(var.dims) == 1 else "") + ")"  # as a Python tuple prints
        assert row[1:4] == [dims, var.dtype, var.units], (
            f"docs/store-format.md: {name!r} documented as {row[1:4]}, the code writes "
            f"dims {var.dims}, dtype {var.dtype}, units {var.units}"
        )


@pytest.fixture(scope="module")
def written_stores(tmp_path_factory):
    """Every kind of store, written by the real writers (sampling replaced by random walkers)."""
    from qernel_cli.config import resolve
    from qernel_cli.stores import checkpoint
    from qernel_cli.stores.run_dir import CHECKPOINT_FILE, CONFIG_FILE
    from qernel_cli.vmc.assembly import build
    from qernel_cli.stores.train import create_train_store
    from qernel_cli.workflows import observe, phasediagram, sample

    tmp = tmp_path_factory.mktemp("stores")
    config = resolve("moire-tiny", ["sampler.walkers=8", "training.depths_per_step=2", "model.envelope=plane-wave", "model.envelope_momenta=fixed", "pretrain.target=bloch"])
    run = build(config)
    train_store = create_train_store(tmp / "train.zarr", run, pretrain_steps=1)

    run_dir = tmp / "run"
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(config.to_toml())
    checkpoint.save(run_dir / CHECKPOINT_FILE, {}, {"step": 0})  # sampling checks for one; load_trained is faked below
    rng = np.random.default_rng(0)
    cell = run.physics.supercell.cell

    def fake_sample(run_, params, trained, depths_moire, *, walkers, records, sweeps, burn_in, key, on_record, stop=None):
        d, n = len(depths_moire), config.n_electrons
        for r in range(records):
            energies = {k: rng.normal(size=(d, walkers)) for k in ("total", "kinetic", "potential", "interaction", "kinetic_imag")}
            positions = rng.uniform(size=(d, walkers, n, 2)) @ cell
            on_record(r, {"positions": positions, "acceptance": rng.uniform(size=d), **energies})
        return records

    patch = pytest.MonkeyPatch()
    try:
        patch.setattr(sample, "load_trained", lambda path: (run, types.SimpleNamespace(params=None, walkers=None), {"step": 0}))
        patch.setattr(sample, "sample", fake_sample)
        patch.setattr(observe, "plot_depths", lambda *args, **kwargs: [])
        patch.setattr(phasediagram, "_figure", lambda *args, **kwargs: None)
        sample.sample_to_store(run_dir, [5.0, 20.0], tmp / "s.zarr", walkers=4, records=3, sweeps=1, burn_in=0)
        observe.observe_store(tmp / "s.zarr", grid=12)
        phasediagram.phase_diagram(run_dir, np.array([0.0, 15.0, 30.0]), tmp / "pd", walkers=4, records=2, grid=12)
    finally:
        patch.undo()
    return {
        "train.zarr": train_store,
        "Sample store": zarr.open_group(str(tmp / "s.zarr"), mode="r"),
        "Observables store (observe)": zarr.open_group(str(tmp / "s.zarr" / "observables"), mode="r"),
        "Observables store (phasediagram)": zarr.open_group(str(tmp / "pd" / phasediagram.OBSERVABLES), mode="r"),
        "Sample store (phasediagram)": zarr.open_group(str(tmp / "pd" / phasediagram.SAMPLES), mode="r"),
    }


def test_every_array_and_attribute_of_real_stores_is_documented(written_stores):
    text = _read(STORE_DOC)
    undocumented = []
    for label, group in written_stores.items():
        section = _section(label.split(" (")[0])
        arrays = [name for name, _ in group.arrays()]
        assert arrays, f"{label}: no arrays written?"
        undocumented += [f"{label}: array {name}" for name in arrays if _table_row(section, name) is None]
        for key, value in group.attrs.items():
            if f"`{key}`" not in text:
                undocumented.append(f"{label}: attribute {key}")
            if isinstance(value, dict):  # e.g. the transition estimate
                undocumented += [f"{label}: attribute {key}.{k}" for k in value if f"`{k}`" not in text]
    assert written_stores["Observables store (phasediagram)"].attrs["transition"] is not None
    assert not undocumented, "not documented in docs/store-format.md: " + "; ".join(undocumented)


def test_attributes_set_after_creation_are_documented():
    """Attributes that the code adds to an existing store (``….attrs["name"] = …``, ``store.set_attrs(group, {"name": …})``) are documented too."""
    text = _read(STORE_DOC)
    assignment = re.compile(r"""\.attrs\[\s*["'](\w+)["']\s*\]\s*=""")
    call = re.compile(r"set_attrs\(\s*[^{]*\{(.*?)\}\s*\)", re.S)
    key = re.compile(r"""["'](\w+)["']\s*:""")
    found = set()
    for path in (ROOT / "qernel_cli").rglob("*.py"):
        source = _read(path)
        found.update(assignment.findall(source))
        found.update(name for body in call.findall(source) for name in key.findall(body))
    assert {"start_energy_meV", "transition"} <= found  # the scan itself works
    missing = sorted(name for name in found if f"`{name}`" not in text)
    assert not missing, f"store attributes not documented in docs/store-format.md: {missing}"


# ---------------------------------------------------------------------------
# Links and images


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMG = re.compile(r"<img[^>]*\ssrc=[\"']([^\"']+)[\"']", re.IGNORECASE)


def _without_code(text: str) -> str:
    text = re.sub(r"^(```|~~~).*?^\1\s*$", "", text, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"[`*_]|<[^>]+>", "", heading).strip().lower()
    heading = re.sub(r"[^\w\- ]", "", heading)
    return heading.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.sub(r"^```.*?^```\s*$", "", _read(path), flags=re.MULTILINE | re.DOTALL), flags=re.MULTILINE)
    anchors, seen = set(), {}
    for h in headings:
        slug = _slug(h)
        count = seen.get(slug, 0)
        anchors.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return anchors


DOC_FILES = sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_resolve(doc):
    text = _without_code(_read(doc))
    broken = []
    for target in LINK.findall(text) + IMG.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor.lower() not in _anchors(path):
            broken.append(f"{target} (no heading with anchor #{anchor})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"


def test_link_checker_finds_broken_links(tmp_path):
    doc = tmp_path / "a.md"
    (tmp_path / "b.md").write_text("# Title here\n", encoding="utf-8")
    doc.write_text("[ok](b.md#title-here) [bad](c.md) ![img](images/x.png) `[code](nowhere.md)`\n", encoding="utf-8")
    found = LINK.findall(_without_code(_read(doc)))
    assert found == ["b.md#title-here", "c.md", "images/x.png"]
    assert _anchors(tmp_path / "b.md") == {"title-here"}
