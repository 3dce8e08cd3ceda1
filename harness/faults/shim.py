"""Faults on a box's shim: freeze it (the guest hangs), thaw it, SIGKILL it (the shim crashes).

A box's processes are the tree under the pid in `<home>/boxes/<id>/shim.pid` (with the jailer
on, that pid is `bwrap`; below it sit another bwrap and the `boxlite-shim`, which renames itself
`libkrun VM` once it enters the VM). Each process is kept as (pid, start time) so heal() never
signals a recycled pid.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.common.procs import Proc
from harness.common.wait import wait_for
from harness.faults.base import Fault


def _is_shim(p: psutil.Process, box_id: str) -> bool:
    try:
        if p.name().startswith("libkrun"):
            return True
        argv0 = (p.cmdline() or [""])[0]
        # 0.10.x runs a per-box copy under <home>/boxes/<id>/bin; 0.9.x the shared binary.
        return argv0.rsplit("/", 1)[-1] == "boxlite-shim"
    except psutil.Error:
        return False


def shim_pid_file(home: Path, box_id: str) -> Path:
    return home / "boxes" / box_id / "shim.pid"


def proc_children(top: psutil.Process) -> list[psutil.Process]:
    """`top`'s descendants from /proc/<pid>/task/<tid>/children: a few reads, where psutil's
    recursive children() reads every process on the machine. The kernel warns that a child
    forked or exiting during the read may be missed: for polling only (the next poll sees
    it), never for a fault that must reach every process."""
    out: list[psutil.Process] = []
    todo = [top.pid]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    kids = [int(c) for c in fh.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                try:
                    out.append(psutil.Process(kid))
                except psutil.Error:
                    continue
                todo.append(kid)
    return out


def box_tree(home: Path, box_id: str,
             children: Callable[[psutil.Process], list[psutil.Process]] | None = None
             ) -> list[Proc] | None:
    """The box's process tree, or None until the shim itself is running. `children`: how
    to list the top's descendants (default psutil's recursive children(), complete)."""
    try:
        first = shim_pid_file(home, box_id).read_text().split()[0]
        top = psutil.Process(int(first))
        below = children(top) if children else top.children(recursive=True)
        procs = [top, *below]
    except (OSError, IndexError, ValueError, psutil.Error):
        return None
    if not any(_is_shim(p, box_id) for p in procs):
        return None
    out = []
    for p in procs:
        try:
            out.append(Proc(p.pid, p.create_time(), p.name()))
        except psutil.Error:
            continue
    return out


def vcpus_running(pid: int) -> bool:
    """Whether libkrun runs the VM's vCPUs in `pid` (threads named 'fc_vcpu N'): the point
    past which the box's processes are the VM itself, not a shim still loading."""
    try:
        return any(t.joinpath("comm").read_text().startswith("fc_vcpu")
                   for t in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False


def wait_for_vcpus(home: Path, box_id: str, timeout_s: float = 30.0) -> list[Proc]:
    def probe() -> list[Proc] | None:
        tree = box_tree(home, box_id)
        return tree if tree and any(vcpus_running(p.pid) for p in tree) else None
    return wait_for(probe, timeout_s, f"the VM of box {box_id} to run its vCPUs",
                    interval_s=0.01)


def wait_for_shim(home: Path, box_id: str, timeout_s: float = 30.0) -> list[Proc]:
    return wait_for(lambda: box_tree(home, box_id), timeout_s,
                    f"the shim of box {box_id} to be spawned", interval_s=0.01)


def shim_of(tree: list[Proc], box_id: str) -> Proc:
    for proc in tree:
        p = proc.same()
        if p is not None and _is_shim(p, box_id):
            return proc
    return tree[-1]


@dataclass
class FreezeBox(Fault):
    """SIGSTOP every process of the box: the guest stops making progress."""

    tree: list[Proc] = field(default_factory=list)

    def _inject(self) -> None:
        for proc in self.tree:
            p = proc.same()
            if p is not None:
                p.send_signal(signal.SIGSTOP)

    def _heal(self) -> None:
        """SIGCONT each process still there. One that ends between the check and the signal
        (its host was killed meanwhile, say) has nothing left to thaw, and the rest are still
        thawed: that race once made a heal fail and left two processes stopped."""
        for proc in reversed(self.tree):
            p = proc.same()
            if p is None:
                continue
            try:
                p.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                continue


@dataclass
class KillShim(Fault):
    """SIGKILL the boxlite-shim process itself (the VMM dies with it)."""

    proc: Proc | None = None

    def _inject(self) -> None:
        assert self.proc is not None
        p = self.proc.same()
        if p is None:
            raise ProcessLookupError(f"shim pid {self.proc.pid} is already gone")
        p.send_signal(signal.SIGKILL)


def freeze_box(home: Path, box_id: str, tree: list[Proc]) -> FreezeBox:
    return FreezeBox("freeze_box", {"box": box_id, "pids": [p.pid for p in tree]}, tree=tree)


def kill_shim(home: Path, box_id: str, tree: list[Proc]) -> KillShim:
    proc = shim_of(tree, box_id)
    return KillShim("kill_shim", {"box": box_id, "pid": proc.pid}, proc=proc)
