"""The FUSE layer (harness/faults/fuse.py, fuse_layer.py) on a real mount: it passes through
(a renamed folder, SQLite in WAL mode, O_DIRECT, a program run from it), a rule fails or delays
exactly the calls it names and counts them, heal() clears it; the teardown and the sweep (for a
dead run's, its layer alive or dead: 'Transport endpoint is not connected') leave no mount and
no process. Needs root and the layer's Debian packages (fuse3, python3-pyfuse3)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pytest

from harness.common.errors import ArrangementError
from harness.faults.base import FaultSet
from harness.faults.fuse import FuseLayer, available, io_fault, is_mountpoint
from harness.leftovers import markers, sweep
from harness.leftovers.markers import OWNER_ENV, Owner
from harness.leftovers.mounts import mounts_under

WHY = None if os.geteuid() != 0 else available()
pytestmark = pytest.mark.skipif(os.geteuid() != 0 or WHY is not None,
                                reason=WHY or "mounting needs root")


@pytest.fixture(autouse=True)
def private_index(tmp_path, monkeypatch):
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(OWNER_ENV, "")


@pytest.fixture
def layer(tmp_path):
    made = FuseLayer(tmp_path / "home1").mount()
    yield made
    made.unmount()
    assert not is_mountpoint(made.home) and not made.alive()


def test_it_passes_through(layer):
    h = layer.home
    (h / "a").mkdir()
    (h / "a" / "f").write_text("hello")
    os.rename(h / "a", h / "b")
    assert (h / "b" / "f").read_text() == "hello"
    assert (layer.backing / "b" / "f").read_text() == "hello"
    fd = os.open(h / "direct", os.O_CREAT | os.O_WRONLY | os.O_DIRECT, 0o644)
    try:
        assert os.write(fd, b"abc") == 3            # unaligned: O_DIRECT was stripped
    finally:
        os.close(fd)
    subprocess.run(["cp", "/bin/true", str(h / "true")], check=True, timeout=10)
    assert subprocess.run([str(h / "true")], timeout=10).returncode == 0


def test_a_rule_fails_the_nth_call_only_and_heal_clears_it(layer):
    db = sqlite3.connect(layer.home / "store.db")
    try:
        db.execute("pragma journal_mode=wal")
        db.execute("create table t(x)")
        db.commit()
        faults = FaultSet()
        fault = faults.inject(io_fault(layer, "fsync", "store.db-wal", "EIO", nth=2))
        db.execute("insert into t values (1)")
        db.commit()                                 # the 1st fsync: passes
        db.execute("insert into t values (2)")
        with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
            db.commit()                             # the 2nd: EIO
        assert fault.counts() == {"calls": 2, "fired": 1,
                                  "fired_on": [{"op": "fsync", "path": "store.db-wal"}]}
        faults.heal_all()
        assert fault.target["fired"] == 1 and fault.describe()["rule"]["nth"] == 2
        assert layer.report()["rules"] == []
    finally:
        db.close()


def test_every_call_from_the_nth_and_a_delay(layer):
    faults = FaultSet()
    faults.inject(io_fault(layer, ["create", "mkdir"], "x/*", "ENOSPC", nth=2, every=True))
    (layer.home / "x").mkdir()
    (layer.home / "x" / "1").write_text("")
    for name in ("2", "3"):
        with pytest.raises(OSError) as exc:
            (layer.home / "x" / name).write_text("")
        assert exc.value.errno == 28
    (layer.home / "y").write_text("")               # another path: untouched
    faults.heal_all()
    faults.inject(io_fault(layer, "write", "y", None, delay_ms=300))
    t0 = time.monotonic()
    (layer.home / "y").write_text("z")
    assert time.monotonic() - t0 >= 0.3
    faults.heal_all()


def test_an_unknown_op_or_errno_is_refused(layer):
    with pytest.raises(ArrangementError):
        io_fault(layer, "chmod", "*")
    with pytest.raises(ArrangementError):
        io_fault(layer, "write", "*", "EAGAIN")


def test_unmount_ends_a_layer_whose_process_died(tmp_path):
    layer = FuseLayer(tmp_path / "home1").mount()
    os.kill(layer.pid, signal.SIGKILL)
    layer.proc.wait(5)
    with pytest.raises(OSError) as exc:
        os.listdir(layer.home)
    assert exc.value.errno == 107                   # ENOTCONN
    layer.unmount()
    assert not is_mountpoint(layer.home)


@pytest.mark.parametrize("daemon", ["alive", "dead"])
def test_the_sweep_ends_a_dead_runs_layer(tmp_path, monkeypatch, daemon):
    proc = subprocess.Popen(["sleep", "30"])
    dead = Owner.of(proc.pid)
    proc.kill()
    proc.wait()
    root = tmp_path / "bxc-dead"
    root.mkdir()
    markers.mark(root, "homes", owner=dead, run=dead)
    monkeypatch.setenv(OWNER_ENV, dead.token)       # the layer inherits its run's owner
    layer = FuseLayer(root / "home1").mount()
    try:
        if daemon == "dead":
            os.kill(layer.pid, signal.SIGKILL)
            layer.proc.wait(5)
        rep = sweep.sweep(under=[tmp_path])
        assert [x.path for x in rep.swept] == [root.resolve()], [x.to_json() for x in rep.kept]
        assert mounts_under(root) == [] and not layer.alive()
        assert not root.exists()
    finally:
        layer.unmount()


def test_a_power_cut_keeps_only_what_was_fsynced(layer):
    h = layer.home
    (h / "kept").write_bytes(b"A" * 100)
    (h / "old").write_text("old")
    (h / "gone").write_text("x")
    layer.checkpoint()
    with open(h / "kept", "r+b") as fh:                 # overwritten, then extended: unsynced
        fh.write(b"B" * 150)
    fd = os.open(h / "synced", os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b"data")
    os.fsync(fd)                                        # its data durable, its name not
    os.close(fd)
    os.rename(h / "old", h / "renamed")
    (h / "gone").unlink()
    (h / "dir").mkdir()
    (h / "dir" / "f").write_text("f")
    dfd = os.open(h / "dir", os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)                                       # dir's names durable, dir's own not
    os.close(dfd)
    lost = layer.cut()
    assert lost["bytes_files"] >= 1 and lost["names"] >= 4
    with pytest.raises(OSError):
        (h / "kept").read_bytes()                       # off until the remount
    layer.remount()
    assert (h / "kept").read_bytes() == b"A" * 100
    assert sorted(os.listdir(h)) == ["gone", "kept", "old"]
    assert (h / "old").read_text() == "old" and (h / "gone").read_text() == "x"


def test_a_durable_store_survives_a_power_cut(layer):
    db = sqlite3.connect(layer.home / "store.db")
    db.execute("pragma journal_mode=wal")
    db.execute("create table t(x)")
    db.commit()
    layer.checkpoint()
    db.execute("insert into t values (1)")
    db.commit()                                         # fsynced: durable
    db.execute("pragma synchronous=off")
    db.execute("insert into t values (2)")
    db.commit()                                         # not fsynced: lost
    layer.cut()
    db.close()
    layer.remount()
    db = sqlite3.connect(layer.home / "store.db")
    try:
        assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
        assert [r[0] for r in db.execute("select x from t")] == [1]
    finally:
        db.close()
