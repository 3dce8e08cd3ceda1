"""Storage faults: a runtime home on a filesystem of a chosen size, filled to a chosen level.

`SmallDisk` is the arrangement: a size-limited tmpfs, or an ext4 image on a loop device, mounted
at a home folder under the scenario's marked homes folder (so the sweep unmounts and detaches
what a dead run left: harness.leftovers.sweep, harness.leftovers.loops). `FillDisk` is the
fault: a filler file leaves exactly `leave_kib` KiB free; heal() removes it and the space comes
back. Where the failure lands is chosen by the free space (LEVELS, measured), or by filling at
a moment the scenario observes (after the shim spawned, before a stop or a remove).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from harness.common.errors import ArrangementError
from harness.faults.base import Fault
from harness.leftovers.loops import detach_under, loops_backed_under

KIB, MIB = 1024, 1024 * 1024
MOUNT_TIMEOUT_S = 30.0
FILLER_NAME = ".bxc-filler"
KINDS = ("tmpfs", "ext4")

# Where a home's first box fails, by the free space (KiB) left just before the step: a fresh
# home on a tmpfs of SIZE_MIB, filled by FillDisk. Measured with boxlite 0.10.8 on this machine
# (2 cores, nested PVM), 2026-12-07, one start per level (a script driving RuntimeHost over
# these levels; the scenarios of scenarios/storage/test_disk_full.py repeat the chosen ones).
# The first probe's rougher figures are in ../shared/BOXLITE_NOTES.md "Storage".
#   step    free KiB  what 0.10.8 did
#   open    0         Boxlite() raises StorageError "... database or disk is full"
#   open    16        Boxlite() raises StorageError "... disk I/O error" (the WAL index)
#   open    64        "database or disk is full" again; 256: opens
#   create  0         create raises "database or disk is full"; 256 refused once, accepted once
#   start   0         container rootfs copy fails (ENOSPC), and the Failed state cannot be
#                     written: record `configured`, no reason ("Failed to persist Failed state")
#   start   8192      guest rootfs copy (boxlite-guest, 20 MiB, staged in HOME/tmp): failed, ENOSPC
#   start   32768     busybox copy / mke2fs: failed with the ENOSPC reason
#   start   49152     mke2fs ("populating file system"): failed with the ENOSPC reason
#   start   65536     shim copy cut short (libkrunfw.so.5 10.8 of 21.4 MiB), spawn fails ENOSPC,
#                     Failed state not written: `configured`, no reason
#   start   73728-75904  the same, libkrunfw 19.2-21.4 MiB copied
#   start   75968+    the shim spawns; the VM then fails on its own (KVM_EXIT_INTERNAL_ERROR here)
# The window where the copies fit and the shim's first stderr write does not (the probe's exit
# 101) is under 64 KiB wide (75904 fails at the copy, 75968 spawns): not reproducible by a level.
SIZE_MIB = 160
LEVELS: dict[str, tuple[str, int]] = {      # phase: (step the fill precedes, free KiB left)
    "open": ("open", 0),
    "open_io": ("open", 16),
    "create": ("create", 0),
    "start_full": ("start", 0),
    "disk_build": ("start", 32 * 1024),
    "shim_copy": ("start", 64 * 1024),
    "shim_spawn": ("start", 96 * 1024),
}

# What a home holds once a box start reached its shim spawn, in KiB (allocated: statvfs of a
# 1 GiB tmpfs home, sampled every 5 ms, peak = the figure at the spawn), for the home's first
# box and then a second one. 2026-12-07, this machine, one run per release (a throwaway
# scenario driving create + start to the shim spawn, twice). The difference is the guest
# rootfs base every box of a home shares (bases/<id>.ext4, 256 MiB long, staged in HOME/tmp as
# guest-rootfs.ext4 and copied from images/disk-images/, itself 2 MiB allocated): 0.9.x copies
# it densely (256 MiB allocated), 0.10.x keeps it sparse (21-22 MiB allocated). So no box of a
# 0.9.x home can start on SIZE_MIB at all, space back or not: their "Failed to copy image disk
# ... to staged path .../guest-rootfs.ext4: No space left on device" after a heal was our
# arrangement, not the runtime.
HOME_OPENED_KIB = 224      # an opened home with no box (its store and log), every release
#   release  first box  next box  (KiB, over HOME_OPENED_KIB)
HOME_NEEDS_KIB: dict[str, tuple[int, int]] = {
    "0.9.0": (269_880, 612),
    "0.9.4": (267_928, 612),
    "0.9.7": (317_228, 47_964),
    "0.10.0": (76_820, 50_308),
    "0.10.8": (75_972, 48_920),
}
DENSE_BASE_MIB = 256        # 0.9.x's fully allocated copy of the guest rootfs base


def size_mib_for(version: str) -> int:
    """The small disk for a home under boxlite `version`: SIZE_MIB (what LEVELS were measured
    on, 0.10.8), plus the dense guest rootfs base on the releases that write one (before
    0.10.0; HOME_NEEDS_KIB). The levels are free space left, so they fill the larger disk to
    the same point. With all space back it holds an opened home's first box and a second with
    over 32 MiB to spare on every measured release (0.10.0 35.6 MiB, 0.10.8 37.8, 0.9.7 59.1);
    releases not measured are assumed to be like their neighbours."""
    dense = Version(version) < Version("0.10.0")
    return SIZE_MIB + (DENSE_BASE_MIB if dense else 0)


def free_bytes(path: Path) -> int:
    """Bytes root may still write on `path`'s filesystem (f_bfree: root uses the blocks ext4
    reserves; our ext4 images reserve none)."""
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def refuses_writes(home: Path, size: int = 64 * KIB) -> str | None:
    """Whether `home` refuses a write of `size` bytes now (written, fsynced, removed): the
    error's name (ENOSPC, ...) or None when it took it. A fact, where statvfs is not one: ext4
    keeps blocks back that f_bfree counts (~0.6-3 MiB on a 160 MiB image, 2026-12-07)."""
    probe = home / ".bxc-write-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, b"\0" * size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return None
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc))
    finally:
        probe.unlink(missing_ok=True)


def _run(argv: list[str], what: str) -> None:
    """Run a mount tool; ArrangementError naming `what` when it fails or hangs."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ArrangementError(f"{what}: {' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise ArrangementError(f"{what}: {' '.join(argv)} exited {proc.returncode}: "
                               f"{proc.stderr.strip()[:300]}")


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    return any(len(p := line.split()) > 4 and p[4] == target for line in lines)


@dataclass
class SmallDisk:
    """A home on a filesystem of `size_mib` MiB: tmpfs (`kind="tmpfs"`) or ext4 on a loop
    device (`kind="ext4"`, its image beside the home, in the same marked folder). Mount it
    before a runtime opens the home; unmount() after every process of the home ended (or
    lazily, while one still holds it). Raises ArrangementError when it cannot be mounted."""

    home: Path
    size_mib: int
    kind: str = "tmpfs"
    image: Path | None = None
    device: str | None = None
    mounted: bool = False
    teardown: list[dict[str, Any]] = field(default_factory=list)

    def mount(self) -> SmallDisk:
        if self.kind not in KINDS:
            raise ArrangementError(f"small disk kind {self.kind!r}: expected one of {KINDS}")
        self.home.mkdir(parents=True, exist_ok=True)
        if any(self.home.iterdir()):
            raise ArrangementError(f"{self.home} is not empty: a small disk goes on a new home")
        if self.kind == "tmpfs":
            _run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mib}m,mode=0755",
                  "bxc-storage", str(self.home)], f"tmpfs of {self.size_mib} MiB")
        else:
            self.image = self.home.with_name(self.home.name + ".ext4")
            with open(self.image, "wb") as fh:
                fh.truncate(self.size_mib * MIB)
            # No reserved blocks, so free space means the same to root and to the runtime.
            _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], "mkfs.ext4")
            _run(["mount", "-o", "loop", str(self.image), str(self.home)],
                 f"ext4 image of {self.size_mib} MiB on a loop device")
            loops = loops_backed_under(self.image)
            self.device = loops[0]["device"] if loops else None
        self.mounted = True
        return self

    def unmount(self) -> list[dict[str, Any]]:
        """Unmount (lazily where busy) and detach the loop device; safe to call twice.
        Returns what was done; an error is said there, never raised."""
        done: list[dict[str, Any]] = []
        if self.mounted or is_mountpoint(self.home):
            for args, how in ((["umount", str(self.home)], "umount"),
                              (["umount", "-l", str(self.home)], "lazy")):
                try:
                    _run(args, "unmount the small disk")
                    done.append({"point": str(self.home), "how": how})
                    break
                except ArrangementError as exc:
                    done.append({"point": str(self.home), "how": how, "error": str(exc)})
            self.mounted = is_mountpoint(self.home)
        if self.image is not None:
            done += detach_under(self.image)
        self.teardown += done
        return done

    def describe(self) -> dict[str, Any]:
        return {"home": str(self.home), "fs": self.kind, "size_mib": self.size_mib,
                "image": str(self.image) if self.image else None, "device": self.device}


def write_filler(path: Path, size: int) -> int:
    """Make `path` hold `size` bytes of allocated space (fallocate, else zeros written in
    1 MiB pieces until ENOSPC); returns the bytes it holds. Raises OSError other than
    ENOSPC/EFBIG."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            if size > 0:
                os.posix_fallocate(fd, 0, size)
            return size
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EOPNOTSUPP):
                raise
        os.ftruncate(fd, 0)
        written = 0
        chunk = b"\0" * MIB
        while written < size:
            try:
                n = os.write(fd, chunk[:min(MIB, size - written)])
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EFBIG):
                    break
                raise
            written += n
        return written
    finally:
        os.close(fd)


@dataclass
class FillDisk(Fault):
    """Fill the home's filesystem to leave `leave_kib` KiB free (0: full to the last block,
    down to a few KiB the filesystem keeps for itself). heal() removes the filler."""

    disk: SmallDisk | None = None
    leave_kib: int = 0
    filler: Path | None = None

    def _inject(self) -> None:
        assert self.disk is not None
        self.filler = self.disk.home / FILLER_NAME
        before = free_bytes(self.disk.home)
        want = max(0, before - self.leave_kib * KIB)
        got = write_filler(self.filler, want)
        if self.leave_kib == 0:
            # Both ways stop short of full (fallocate leaves the blocks its extents' metadata
            # would need; the writes go in 1 MiB pieces): top it up a page at a time.
            fd = os.open(self.filler, os.O_WRONLY | os.O_APPEND)
            try:
                while os.write(fd, b"\0" * 4096):
                    got += 4096
            except OSError as exc:
                if exc.errno not in (errno.ENOSPC, errno.EFBIG):
                    raise
            finally:
                os.close(fd)
        self.target.update(free_before_kib=before // KIB, filler_kib=got // KIB,
                           free_after_kib=free_bytes(self.disk.home) // KIB,
                           t=round(time.monotonic(), 3))

    def _heal(self) -> None:
        if self.filler is not None:
            self.filler.unlink(missing_ok=True)
            if self.disk is not None and self.disk.mounted:
                self.target["free_healed_kib"] = free_bytes(self.disk.home) // KIB


def fill_disk(disk: SmallDisk, leave_kib: int = 0, phase: str | None = None) -> FillDisk:
    """The fault that leaves `leave_kib` KiB free on `disk` (`phase`: which failure it aims
    at, for the history)."""
    return FillDisk("fill_disk", {"home": str(disk.home), "fs": disk.kind,
                                  "size_mib": disk.size_mib, "leave_kib": leave_kib,
                                  "phase": phase}, disk=disk, leave_kib=leave_kib)
