"""The disk-full fault (harness/faults/storage.py) on real filesystems: a tmpfs or a loop-mounted
ext4 image of a chosen size, filled to leave a chosen free space and healed; its teardown and
the sweep (for a dead run's) leave no mount and no loop device. Needs root (mount, losetup)."""

from __future__ import annotations

import os
import subprocess

import pytest

from harness.faults.base import FaultSet
from harness.faults.storage import KIB, MIB, SmallDisk, fill_disk, free_bytes, is_mountpoint
from harness.leftovers import loops, markers, sweep
from harness.leftovers.markers import OWNER_ENV, Owner
from harness.observe.store_apart import read_store_apart, store_integrity_apart

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mount and losetup need root")


@pytest.fixture(autouse=True)
def private_index(tmp_path, monkeypatch):
    monkeypatch.setenv("BOXLITE_CHAOS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(OWNER_ENV, "")


@pytest.fixture
def disks(tmp_path):
    made: list[SmallDisk] = []
    yield made
    for d in made:
        d.unmount()


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_fill_leaves_the_chosen_space_and_heal_gives_it_back(tmp_path, disks, kind):
    disk = SmallDisk(tmp_path / "home1", 48, kind).mount()
    disks.append(disk)
    assert is_mountpoint(disk.home)
    assert (disk.device is not None) == (kind == "ext4")
    before = free_bytes(disk.home)
    faults = FaultSet()
    fault = faults.inject(fill_disk(disk, leave_kib=4096, phase="disk_build"))
    left = free_bytes(disk.home)
    assert 3 * MIB < left <= 4 * MIB + 64 * KIB, left
    faults.heal(fault)
    assert fault.healed and fault.heal_error is None
    assert free_bytes(disk.home) >= before - 64 * KIB


@pytest.mark.parametrize("kind", ["tmpfs", "ext4"])
def test_fill_to_zero_refuses_the_next_write(tmp_path, disks, kind):
    disk = SmallDisk(tmp_path / "home1", 32, kind).mount()
    disks.append(disk)
    fault = FaultSet().inject(fill_disk(disk, 0))
    with pytest.raises(OSError) as err:
        (disk.home / "more").write_bytes(b"x" * 65536)
    assert err.value.errno == 28
    # ext4 keeps some clusters back for its own metadata (f_bfree still shows ~650 KiB of a
    # 32 MiB image, measured 2026-12-07): full is what a write sees, not what statvfs says.
    assert fault.target["free_after_kib"] < (64 if kind == "tmpfs" else 1024)


def test_unmount_detaches_the_loop_device_even_when_busy(tmp_path, disks):
    disk = SmallDisk(tmp_path / "home1", 32, "ext4").mount()
    disks.append(disk)
    holder = open(disk.home / "held", "w")         # keeps the mount busy: a lazy unmount
    try:
        done = disk.unmount()
    finally:
        holder.close()
    assert not is_mountpoint(disk.home)
    assert any(d.get("how") for d in done), done
    # The kernel lets the lazily unmounted file system go, and with it the loop device, once
    # its last user (the holder) closed: moments later, longer on a loaded machine (a
    # fresh-clone CI of 2026-12-06 saw it still attached at once).
    from harness.common.wait import poll_until
    assert poll_until(lambda: loops.loops_backed_under(tmp_path) == [], 10.0,
                      "the loop device to be detached after the lazy unmount", 0.05), \
        loops.loops_backed_under(tmp_path)


def test_the_sweep_unmounts_and_detaches_what_a_dead_run_left(tmp_path):
    proc = subprocess.Popen(["sleep", "30"])
    dead = Owner.of(proc.pid)
    proc.kill()
    proc.wait()
    root = tmp_path / "bxc-dead"
    root.mkdir()
    markers.mark(root, "homes", owner=dead, run=dead)
    tmpfs = SmallDisk(root / "home1", 16, "tmpfs").mount()
    ext4 = SmallDisk(root / "home2", 32, "ext4").mount()
    # A loop device a run attached but never mounted (it died in between).
    image = root / "home3.ext4"
    with open(image, "wb") as fh:
        fh.truncate(16 * MIB)
    subprocess.run(["losetup", "-f", str(image)], check=True, timeout=10)
    try:
        assert len(loops.loops_backed_under(root)) == 2
        rep = sweep.sweep(under=[tmp_path])
        assert [x.path for x in rep.swept] == [root.resolve()]
        assert not is_mountpoint(tmpfs.home) and not is_mountpoint(ext4.home)
        assert loops.loops_backed_under(root) == []
        assert not root.exists()
    finally:
        tmpfs.unmount()
        ext4.unmount()
        loops.detach_under(root)


def test_store_read_apart_says_why_when_there_is_no_store(tmp_path):
    read = read_store_apart(tmp_path, "box")
    assert read.error and "no store" in read.error
    result, error = store_integrity_apart(tmp_path)
    assert result is None and "no store" in error


def test_store_read_apart_reads_a_record(tmp_path):
    import json
    import sqlite3
    (tmp_path / "db").mkdir()
    con = sqlite3.connect(tmp_path / "db" / "boxlite.db")
    con.execute("CREATE TABLE box_config(id TEXT, name TEXT, created_at TEXT, json TEXT)")
    con.execute("CREATE TABLE box_state(id TEXT, status TEXT, pid INT, json TEXT)")
    con.execute("INSERT INTO box_config VALUES ('b', NULL, '', '{}')")
    con.execute("INSERT INTO box_state VALUES ('b', 'configured', NULL, ?)",
                (json.dumps({"error_reason": None}),))
    con.commit()
    con.close()
    read = read_store_apart(tmp_path, "b", "store.apart")
    assert (read.path, read.present, read.status, read.reason) == \
        ("store.apart", True, "configured", None)
    assert store_integrity_apart(tmp_path) == ("ok", None)


def test_store_read_apart_survives_a_reader_that_dies(tmp_path, monkeypatch):
    from harness.observe import store_apart
    monkeypatch.setattr(store_apart, "_SCRIPT",
                        "import os, signal; os.kill(os.getpid(), signal.SIGBUS)")
    read = store_apart.read_store_apart(tmp_path, "b")
    assert read.error == "the store reader died of SIGBUS"

