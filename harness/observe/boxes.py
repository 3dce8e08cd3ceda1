"""A box's folder on the host: what the runtime leaves under <home>/boxes/<id>/."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil


def box_disks(home: Path, box_id: str) -> list[str] | None:
    """The disk images in `<home>/boxes/<id>/disks/` by name; [] when the box's folder or its
    disks folder is gone, None when it exists but cannot be listed."""
    try:
        return sorted(p.name for p in (home / "boxes" / box_id / "disks").iterdir()
                      if p.is_file())
    except FileNotFoundError:
        return []
    except OSError:
        return None


def socket_dir(box_id: str) -> Path:
    """The runtime's short socket folder for a box (outside the home: unix socket paths must
    fit in 108 bytes)."""
    return Path(f"/tmp/bl-{os.getuid()}/{box_id}")


def box_processes(home: Path, box_id: str, root_pid: int | None = None,
                  known: Iterable[tuple[int, float]] = ()) -> list[dict[str, Any]]:
    """Every live process of the box among the descendants of `root_pid` (the harness: a
    child subreaper, so orphans of a dead host are there too), found by what ties it to the
    box — its folder or socket folder in its command line, its working directory, or a file
    it holds open (a deleted folder too) — not only by the pid in shim.pid; and any of
    `known` ((pid, start time) seen tied to it before: once its folder is removed, a process
    may hold nothing that names it any more). Zombies are not alive and are left out.
    Returns [{pid, create_time, name, tie}]; a process that cannot be read is skipped."""
    earlier = set(known)
    folder = str(home / "boxes" / box_id)
    sockets = str(socket_dir(box_id))

    def under(path: str) -> bool:
        # An open file of a deleted folder reads back as "<path> (deleted)".
        path = path.removesuffix(" (deleted)")
        return path == folder or path.startswith(folder + "/") or path == sockets \
            or path.startswith(sockets + "/")
    out = []
    for p in psutil.Process(root_pid or os.getpid()).children(recursive=True):
        try:
            with p.oneshot():
                if p.status() == psutil.STATUS_ZOMBIE:
                    continue
                name, create = p.name(), p.create_time()
                argv = p.cmdline()
            tie = ("seen before" if (p.pid, create) in earlier
                   else "command line" if any(under(a) or under(a.partition("=")[2])
                                              for a in argv)
                   else "cwd" if under(p.cwd())
                   else "open file" if any(under(f.path) for f in p.open_files())
                   else None)
        except psutil.Error:
            continue
        if tie:
            out.append({"pid": p.pid, "create_time": create, "name": name, "tie": tie})
    return out


def home_marks(home: Path, boxes: Mapping[str, str]) -> dict[str, Any]:
    """What a runtime shutdown changes in a home, read before the signal and after the exit:
    each box's `shim.pid` (the shutdown deletes it for a box still starting: measured on
    0.10.8, see shutdown-skips-boxes-still-starting) and the store's files' sizes and
    modification times (the shutdown writes the state of the boxes it stops). `boxes` maps
    a label to a box id."""
    marks: dict[str, Any] = {"pidfiles": {}, "store": {}}
    for label, box_id in boxes.items():
        marks["pidfiles"][label] = (home / "boxes" / box_id / "shim.pid").exists()
    for name in ("boxlite.db", "boxlite.db-wal"):
        try:
            st = (home / "db" / name).stat()
            marks["store"][name] = (st.st_size, st.st_mtime_ns)
        except OSError:
            marks["store"][name] = None
    return marks


def shutdown_signs(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The signs, read off the home and not the runtime's log, that a shutdown ran between two
    home_marks: a box's shim.pid deleted, the store written. Empty when the home is as it
    was (a runtime that exited without shutting down leaves it so)."""
    signs = [f"shim.pid of {label} deleted" for label, had in before["pidfiles"].items()
             if had and not after["pidfiles"].get(label, False)]
    signs += [f"store {name} written" for name, mark in before["store"].items()
              if after["store"].get(name) != mark]
    return signs


# qemu-img check reads a disk's metadata only: milliseconds for the small disks here.
QEMU_IMG_TIMEOUT_S = 30.0


def check_disk_images(home: Path, qemu_img: str | None = None) -> list[dict[str, Any]]:
    """`qemu-img check` of every qcow2 disk under `<home>/boxes/*/disks/` (Debian's
    qemu-utils): [{path, exit_code, output}], exit_code None when qemu-img is missing or did
    not answer within QEMU_IMG_TIMEOUT_S. Never raises for a disk; an unreadable home gives
    no disks."""
    tool = qemu_img or shutil.which("qemu-img")
    out = []
    for disk in sorted((home / "boxes").glob("*/disks/*.qcow2")):
        if tool is None:
            out.append({"path": str(disk), "exit_code": None,
                        "output": "qemu-img not found (Debian's qemu-utils)"})
            continue
        try:
            done = subprocess.run([tool, "check", "-f", "qcow2", str(disk)],
                                  capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S)
            out.append({"path": str(disk), "exit_code": done.returncode,
                        "output": (done.stdout + done.stderr)[-800:]})
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.append({"path": str(disk), "exit_code": None, "output": repr(exc)})
    return out
