"""Faults: SIGKILL mid-run, a full disk, a read-only output directory, two concurrent writers of one store.

Every fault must end in one `qernel: error:` line and a non-zero exit (or,
for SIGKILL, a resumable run), and must leave the data written before intact.
The processes share the session's JAX compilation cache (``cli_env``), so
only the first one compiles.
"""

from __future__ import annotations

import errno
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from clitools import error_line, tree_hashes

from qernel_cli.stores import atomic, checkpoint, samples, store


def _popen(args, env):
    return subprocess.Popen([sys.executable, "-m", "qernel_cli", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(condition, proc, timeout=300.0) -> bool:
    """Poll ``condition()`` until true (True) or ``proc`` exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError("timed out")


def _stored_steps(out: Path) -> int:
    try:
        return store.dimension_length(zarr.open_group(str(out / "train.zarr"), mode="r", use_consolidated=False), "step")
    except Exception:  # not created yet, or being created
        return -1


def _checkpoint_step(out: Path) -> int:
    try:
        return int(checkpoint.read_header(out / "checkpoint.npz")["step"])
    except checkpoint.CheckpointError:
        return -1


# ---------------------------------------------------------------------------
# SIGKILL at random moments.


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_completes(tmp_path, cli_env, tiny_run_args):
    """kill -9 three times (seeded random moments), then --resume: every step stored exactly once, checkpoint = store.

    The first kill lands anywhere after the run directory appears (compiling,
    burning in, writing the first checkpoint); the next two while steps are
    appended and checkpointed (every ~0.1 s), so they hit store appends and
    checkpoint writes. Before the last resume the leftovers of a kill inside
    those writes are added on purpose: a torn append (some arrays one row
    longer), zarr's ``.partial`` files and a half-written checkpoint temporary.
    """
    rng = random.Random(int(os.environ.get("QERNEL_FAULT_SEED", "7")))  # other seeds: stress runs
    n = 40
    out = tmp_path / "run"
    first = ["train", "--out", out, "--steps", n, "--quiet", "--json", *tiny_run_args, "--set", "training.checkpoint_minutes=0.002"]
    resume = ["train", "--out", out, "--resume", "--quiet", "--json"]
    kills = []
    for attempt in range(3):
        proc = _popen(first if attempt == 0 else resume, cli_env)
        try:
            if attempt == 0:
                started = _wait_for(lambda: (out / "config.toml").exists(), proc)
                time.sleep(rng.uniform(0.0, 3.0))
            else:
                before = _checkpoint_step(out)
                started = _wait_for(lambda before=before: _checkpoint_step(out) > before, proc)
                time.sleep(rng.uniform(0.0, 0.4))
            assert started and proc.poll() is None, proc.communicate()
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        kills.append((_checkpoint_step(out), _stored_steps(out)))
    assert kills[-1][0] < n, kills  # the run was really cut short

    # What a kill inside a store append or a checkpoint write leaves behind.
    done = _checkpoint_step(out)
    group = zarr.open_group(str(out / "train.zarr"), mode="a", use_consolidated=False)
    if done >= 0:
        length = store.dimension_length(group, "step")
        for name in ("energy", "step", "wall_time"):  # a torn append: some arrays one row longer
            group[name].resize((length + 1, *group[name].shape[1:]))
    (out / "train.zarr" / "energy" / f"zarr.{'0' * 32}.partial").write_text('{"zarr_for')
    (out / "checkpoint.npz.abc123.tmp").write_bytes(b"PK\x03\x04 half a checkpoint")

    final = subprocess.run([sys.executable, "-m", "qernel_cli", *map(str, resume)], capture_output=True, text=True, env=cli_env, timeout=600)
    assert final.returncode == 0, (kills, final.stderr[-4000:])
    assert "Traceback" not in final.stderr and "Warning" not in final.stderr, final.stderr
    summary = json.loads(final.stdout)
    assert summary["steps"] == n and json.loads((out / "summary.json").read_text())["steps"] == n
    assert checkpoint.read_header(out / "checkpoint.npz")["step"] == n
    group = zarr.open_group(str(out / "train.zarr"), mode="r")
    lengths = {name: array.shape[0] for name, array in group.arrays() if array.metadata.dimension_names[0] == "step"}
    assert set(lengths.values()) == {n}, lengths
    assert list(group["step"][:]) == list(range(n))  # no step lost or duplicated
    assert np.all(np.diff(group["wall_time"][:]) > 0)  # rows in the order they were computed
    accepted = group["accepted"][:] == 1
    for name in ("energy", "variance", "acceptance", "move_width", "depth"):
        values = group[name][:]
        assert np.all(np.isfinite(values[accepted])), name
    leftovers = [p.name for p in out.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not leftovers, leftovers


# ---------------------------------------------------------------------------
# Full disk and read-only output: on a real small file system where the host
# lets us mount one (a private mount namespace), else skipped; the same
# failures injected in-process run everywhere.

INNER = r'''
import json, os, shutil, subprocess, sys
spec = json.loads(sys.argv[1])
mnt = spec["mount"]
try:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={spec['size_kb']}k", "tmpfs", mnt], check=True, capture_output=True)
except Exception as error:
    print("cannot mount:", error, file=sys.stderr); sys.exit(77)
for name, src in spec["copies"].items():
    shutil.copytree(src, os.path.join(mnt, name))
ro = os.path.join(mnt, "ro")
os.makedirs(ro)
for name, src in spec["ro_copies"].items():
    shutil.copytree(src, os.path.join(ro, name))
try:
    subprocess.run(["mount", "--bind", ro, ro], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", ro], check=True, capture_output=True)
except Exception as error:
    print("cannot make a read-only mount:", error, file=sys.stderr); sys.exit(77)
st = os.statvfs(mnt)
free = st.f_bavail * st.f_frsize
with open(os.path.join(mnt, "filler"), "wb") as f:  # leave free_kb free
    f.write(b"\0" * max(0, free - spec["free_kb"] * 1024))
import concurrent.futures
def lane(commands):  # one after the other
    out = []
    for args in commands:
        done = subprocess.run([sys.executable, "-m", "qernel_cli", *args], capture_output=True, text=True, cwd=mnt)
        out.append({"args": args, "returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr})
    return out
with concurrent.futures.ThreadPoolExecutor(len(spec["lanes"])) as pool:  # lanes side by side
    results = [r for rs in pool.map(lane, spec["lanes"]) for r in rs]
os.remove(os.path.join(mnt, "filler"))
shutil.copytree(mnt, spec["copy_out"], symlinks=True)
print(json.dumps(results))
'''


def _namespace_command() -> list[str] | None:
    if not shutil.which("unshare") or not sys.platform.startswith("linux"):
        return None
    return ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]


@pytest.mark.slow
def test_full_disk_and_read_only_directory_on_real_file_systems(tmp_path, tiny_run, tiny_samples, cli_env, tiny_run_args):
    """A nearly full tmpfs and a read-only bind mount: one-line errors, earlier runs and stores unchanged."""
    command = _namespace_command()
    if command is None:
        pytest.skip("needs util-linux unshare (Linux)")
    sample_store = tiny_samples[0]
    spec = {
        "mount": str(tmp_path / "fs"),
        "size_kb": 8192,
        "free_kb": 96,
        "copies": {"old": str(tiny_run), "s.zarr": str(sample_store)},
        "ro_copies": {"run": str(tiny_run), "s.zarr": str(sample_store)},
        "copy_out": str(tmp_path / "after"),
        "lanes": [
            [  # full disk: appending many records to an existing store, and a new run
                ["sample", "old", "--depth", "10", "--out", "s.zarr", "--walkers", "4", "--records", "3000", "--sweeps", "1", "--burn-in", "0", "--quiet"],
                ["train", "--out", "new", "--steps", "3", "--quiet", *tiny_run_args],
            ],
            [  # read-only: a new run, resuming a run, appending to a store, observing a store
                ["train", "--out", "ro/new", "--steps", "3", "--quiet", *tiny_run_args],
                ["train", "--out", "ro/run", "--resume", "--steps", "6", "--quiet"],
                ["sample", "ro/run", "--depth", "10", "--out", "ro/s.zarr", "--walkers", "4", "--records", "2", "--quiet"],
                ["observe", "ro/s.zarr", "--grid", "12"],
            ],
        ],
    }
    (tmp_path / "fs").mkdir()
    inner = tmp_path / "inner.py"
    inner.write_text(INNER)
    done = subprocess.run([*command, sys.executable, str(inner), json.dumps(spec)], capture_output=True, text=True, env=cli_env, timeout=600)
    if done.returncode == 77 or (done.returncode != 0 and "unshare" in done.stderr):
        pytest.skip(f"cannot mount a small file system here: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(done.stdout)
    messages = [error_line(subprocess.CompletedProcess(r["args"], r["returncode"], r["stdout"], r["stderr"])) for r in results]
    full_sample, full_train, ro_new, ro_resume, ro_sample, ro_observe = messages
    assert "no space left on device" in full_sample and "s.zarr" in full_sample
    assert "no space left on device" in full_train
    for message in (ro_new, ro_resume, ro_sample, ro_observe):
        assert "read-only file system" in message
    after = tmp_path / "after"
    # Earlier data intact: the old run byte for byte, the read-only copies untouched.
    assert tree_hashes(after / "old") == tree_hashes(tiny_run)
    assert tree_hashes(after / "ro" / "run") == tree_hashes(tiny_run)
    assert tree_hashes(after / "ro" / "s.zarr") == tree_hashes(sample_store)
    # The store that filled the disk still holds its old records unchanged, and only whole new ones.
    old = zarr.open_group(str(sample_store), mode="r")
    new = samples.open_samples(after / "s.zarr")
    n = store.dimension_length(new, "record")
    assert all(array.shape[0] == n for _, array in new.arrays())
    np.testing.assert_array_equal(new["positions"][: old["positions"].shape[0]], old["positions"][:])
    assert np.all(np.isfinite(new["positions"][:])) and np.all(np.isfinite(new["energy"][:]))
    assert not (after / "s.zarr.lock").exists()
    assert not [p.name for p in after.rglob("*") if p.name.endswith((".tmp", ".partial"))]


def test_file_size_limit_stops_a_resumed_run_cleanly(tmp_path, tiny_run, cli_env):
    """RLIMIT_FSIZE (a kernel-enforced write failure, any user): the checkpoint write fails, the old one is kept."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = tree_hashes(run / "checkpoint.npz")
    size = (run / "checkpoint.npz").stat().st_size

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))

    args = [sys.executable, "-m", "qernel_cli", "train", "--out", run, "--resume", "--steps", "6", "--quiet"]
    done = subprocess.run(list(map(str, args)), capture_output=True, text=True, env=cli_env, timeout=600, preexec_fn=limit)
    message = error_line(done)
    assert "cannot write checkpoint" in message and "file too large" in message and "previous checkpoint is intact" in message
    assert tree_hashes(run / "checkpoint.npz") == before
    assert not list(run.glob("*.tmp"))
    assert checkpoint.read_header(run / "checkpoint.npz")["step"] == 4


def test_output_path_through_a_file_is_refused(tmp_path, tiny_run, qernel, tiny_run_args):
    """A file where a directory is needed (works as root, unlike chmod): one line, the file unchanged."""
    blocker = tmp_path / "blocker"
    blocker.write_text("precious")
    done = qernel("train", "--out", blocker / "run", "--steps", 2, "--quiet", *tiny_run_args)
    assert error_line(done) == f"cannot write run directory {blocker / 'run'}: not a directory"
    done = qernel("phasediagram", tiny_run, "--out", blocker, "--depths", "5,10", "--quiet")
    assert error_line(done) == f"--out {blocker} is a file, not a directory"
    done = qernel("phasediagram", tiny_run, "--out", blocker / "pd", "--depths", "5,10", "--quiet")
    assert error_line(done) == f"cannot create output directory {blocker / 'pd'}: not a directory"
    assert blocker.read_text() == "precious"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions (the namespace test covers read-only mounts)")
def test_read_only_directory_by_permissions(tmp_path, tiny_run, tiny_samples, qernel, tiny_run_args):
    ro = tmp_path / "ro"
    ro.mkdir()
    shutil.copytree(tiny_samples[0], ro / "s.zarr")
    before = tree_hashes(ro)
    for path in [ro, *ro.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        assert "permission denied" in error_line(qernel("train", "--out", ro / "new", "--steps", 2, "--quiet", *tiny_run_args))
        assert "permission denied" in error_line(qernel("observe", ro / "s.zarr", "--grid", 12))
        assert tree_hashes(ro) == before
    finally:
        for path in [ro, *ro.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


# ---------------------------------------------------------------------------
# Injected write failures (in-process, fast): the write layers clean up and say one line.


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_checkpoint_write_on_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    tree = {"a": np.arange(5.0), "step": np.int64(1)}
    checkpoint.save(path, tree, {"step": 1})
    before = path.read_bytes()
    monkeypatch.setattr(atomic.os, "fsync", _enospc)
    with pytest.raises(checkpoint.CheckpointError) as info:
        checkpoint.save(path, {"a": np.arange(5.0) + 1, "step": np.int64(2)}, {"step": 2})
    assert str(info.value) == f"cannot write checkpoint {path}: no space left on device; the previous checkpoint is intact"
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]


def test_store_append_on_a_full_disk_is_rolled_back(tmp_path, monkeypatch):
    group = store.create(tmp_path / "x.zarr", {"a": store.Variable(("row",), "float64", "1", ""), "b": store.Variable(("row", "k"), "float64", "1", "")}, {"k": 3}, {})
    store.append_rows(group, [{"a": 1.0, "b": np.ones(3)}])
    real_append = zarr.Array.append

    def append(self, data, axis=0):  # the first array grows, then the disk is full
        if self.basename == "b":
            real_append(self, data, axis=axis)  # grows the metadata
            _enospc()
        return real_append(self, data, axis=axis)

    monkeypatch.setattr(zarr.Array, "append", append)
    with pytest.raises(store.StoreError, match="cannot write to store .*x.zarr: no space left on device"):
        store.append_rows(group, [{"a": 2.0, "b": np.zeros(3)}])
    monkeypatch.undo()
    reopened = zarr.open_group(str(tmp_path / "x.zarr"), mode="r")
    assert reopened["a"].shape == (1,) and reopened["b"].shape == (1, 3)
    assert reopened["a"][0] == 1.0 and np.all(reopened["b"][0] == 1.0)


def test_observe_on_a_full_disk_leaves_the_sample_store_intact(tmp_path, tiny_samples, monkeypatch):
    from typer.testing import CliRunner

    from qernel_cli.cli import app

    path = tmp_path / "s.zarr"
    shutil.copytree(tiny_samples[0], path)
    before = tree_hashes(path)
    monkeypatch.setattr(zarr.Array, "append", _enospc)  # every store append fails at the file system
    result = CliRunner().invoke(app, ["observe", str(path), "--grid", "12", "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 2 and isinstance(result.exception, (SystemExit, type(None)))
    assert result.stderr.strip() == f"qernel: error: cannot write observables to {path / 'observables'}: no space left on device"
    assert tree_hashes(path) == before  # no half-written observables group, no leftovers


# ---------------------------------------------------------------------------
# Two writers.


@pytest.mark.slow
def test_a_second_concurrent_sample_writer_is_refused(tmp_path, tiny_run, cli_env):
    """Two real `qernel sample` processes on one store: the second is refused in one line; the store stays valid."""
    path = tmp_path / "s.zarr"
    lock = path.with_name(path.name + store.LOCK_SUFFIX)
    common = ["--depth", "10", "--out", path, "--walkers", "4", "--sweeps", "1", "--burn-in", "0", "--quiet"]
    first = _popen(["sample", tiny_run, *common, "--records", "1000000"], cli_env)
    try:
        assert _wait_for(lambda: lock.exists() and _records(path) > 0, first), first.communicate()
        second = subprocess.run([sys.executable, "-m", "qernel_cli", "sample", str(tiny_run), *map(str, common), "--records", "5"], capture_output=True, text=True, env=cli_env, timeout=300)
        assert first.poll() is None, "the first writer finished too early for this test"
        message = error_line(second)
        assert f"is being written by another process (pid {first.pid})" in message
        first.send_signal(signal.SIGINT)  # the first writer stops cleanly, keeping its records
        _, stderr = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 130 and "interrupted after" in stderr and "Traceback" not in stderr, stderr
    group = samples.open_samples(path)
    n = store.dimension_length(group, "record")
    assert n > 0 and all(array.shape[0] == n for _, array in group.arrays())
    assert set(group["session"][:]) == {0} and np.all(np.isfinite(group["positions"][:]))
    assert not lock.exists()


def _records(path: Path) -> int:
    try:
        return store.dimension_length(zarr.open_group(str(path), mode="r", use_consolidated=False), "record")
    except Exception:  # being created
        return 0
