"""The processes and cgroups that hold a marked folder: every process with its command line and
working directory, the owner token it was started with, who sits in a cgroup, and removing cgroups.

psutil lists the processes; cgroups are read and removed here: psutil has no view of them, and
an empty cgroup goes by a plain rmdir (the kernel refuses a populated one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from harness.leftovers.markers import OWNER_ENV


@dataclass
class ProcInfo:
    pid: int
    create_time: float
    ppid: int
    name: str
    cmd: str
    cwd: str
    zombie: bool = False

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, "name": self.name,
                "cmd": self.cmd[:200]}


def list_processes() -> list[ProcInfo]:
    out = []
    for p in psutil.process_iter():
        try:
            with p.oneshot():
                info = ProcInfo(p.pid, p.create_time(), p.ppid(), p.name(), "", "",
                                p.status() == psutil.STATUS_ZOMBIE)
                try:
                    info.cmd = " ".join(p.cmdline())
                except psutil.Error:
                    pass
                try:
                    info.cwd = p.cwd()
                except psutil.Error:
                    pass
        except psutil.Error:
            continue
        out.append(info)
    return out


def environ_owner(pid: int, create_time: float) -> str | None:
    """The OWNER_ENV a process was started with (None: none, or not readable)."""
    try:
        p = psutil.Process(pid)
        if p.create_time() != create_time:
            return None
        return p.environ().get(OWNER_ENV)
    except psutil.Error:
        return None


def cgroup_pids(dirs: Iterable[str]) -> set[int]:
    """Every pid in the given cgroup folders and those below them."""
    pids: set[int] = set()
    for top in dirs:
        for dirpath, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in Path(dirpath, "cgroup.procs").read_text().split())
    return pids


def refers_to(info: ProcInfo, folder: Path) -> bool:
    base = str(folder)
    if info.cwd == base or info.cwd.startswith(base + "/"):
        return True
    at = info.cmd.find(base)
    while at != -1:
        end = at + len(base)
        if end == len(info.cmd) or info.cmd[end] in "/ \t=:,":
            return True
        at = info.cmd.find(base, end)
    return False


def rmdir_cgroups(dirs: Iterable[str | Path], under: str = "/sys/fs/cgroup/"
                  ) -> dict[str, list[str]]:
    """rmdir each of `dirs` that lies under `under`, deepest first: only empty cgroups go
    (the kernel refuses a populated one). Returns {removed, failed} paths."""
    removed, failed = [], []
    for top in map(str, dirs):
        if not top.startswith(under) or not os.path.isdir(top):
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
                removed.append(dirpath)
            except OSError as exc:
                failed.append(f"{dirpath}: {exc.strerror}")
    return {"removed": removed, "failed": failed}
