"""A disk that fails under a running process: strace attaches to it (`-f -p`, every thread;
a child only until it runs a program) and makes its write-class calls on chosen files fail
with an errno (EIO; ENOSPC for a full disk) from that moment on. heal() ends strace.

Only the named files are hit: strace's path filter (`-P`) also restricts injection (measured on
strace 6.1: a process writing to a named file, an unnamed one and its stdout saw EIO on the
first only; tests/test_points_io_error.py keeps that true). The files behind the process's fds
0, 1 and 2 are never named, so a host's JSON-lines protocol on its pipes is never touched. A
path names a file, not a folder (strace matches whole paths), so files the process creates
later must be named ahead (the store's -wal, -shm and -journal).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.common.errors import ArrangementError
from harness.common.procs import Proc
from harness.common.wait import poll_until
from harness.faults.base import Fault

# The calls that put bytes on the disk or make them durable; reads, opens and renames go on.
WRITE_CALLS = ("write", "pwrite64", "writev", "pwritev", "pwritev2", "fsync", "fdatasync",
               "ftruncate", "fallocate", "sync_file_range")
# How long strace may take to attach to every thread (it took 10-60 ms here) and to detach
# and exit on SIGTERM before it is SIGKILLed (the kernel then detaches its tracees).
ATTACH_TIMEOUT_S = 5.0
DETACH_TIMEOUT_S = 5.0
# How long a heal lets each tracee settle once strace has gone. A tracee that strace held in a
# group stop (someone's SIGSTOP) is woken by the detach and must run once to stop again (the
# kernel's __ptrace_unlink re-arms the stop and kicks it): until it has, it reads 'R'. On a
# loaded machine that took long enough for a heal's look to miss the stop (a CI run,
# 2026-12-07). A tracee still running after this long is judged as running.
DETACH_SETTLE_S = 1.0
STORE_FILES = ("db/boxlite.db", "db/boxlite.db-wal", "db/boxlite.db-shm",
               "db/boxlite.db-journal")
# Folders of a home whose files are left out of a failing home: the extracted image layers
# (hundreds of files the runtime only reads).
SKIP_PARTS = ("extracted",)
MAX_PATHS = 400


def available() -> str | None:
    """Why strace cannot inject here, or None."""
    if shutil.which("strace") is None:
        return "strace is not installed (Debian package strace)"
    return None


def home_files(home: Path, box: str | None = None) -> list[Path]:
    """The files of a runtime's home a failing disk fails: the store's (also those not
    created yet), every regular file present now (bar the extracted image layers), and the
    box's own files the runtime writes later, when the box is known."""
    out = [home / f for f in STORE_FILES]
    if box:
        out += [home / "boxes" / box / f for f in ("shim.pid", "exit", "shim.stderr",
                                                    "disks/disk.qcow2", "logs/console.log")]
    for dirpath, dirnames, filenames in os.walk(home):
        dirnames[:] = [d for d in dirnames if d not in SKIP_PARTS]
        out += [Path(dirpath) / f for f in filenames]
        if len(out) > MAX_PATHS:
            break
    seen: set[Path] = set()
    return [p for p in out if not (p in seen or seen.add(p))][:MAX_PATHS]  # type: ignore[func-returns-value]


def threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def task_status(pid: int, tid: int) -> dict[str, str]:
    """State and TracerPid of one thread ({} once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/task/{tid}/status").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
    return {"State": fields.get("State", "").strip(),
            "TracerPid": fields.get("TracerPid", "").strip()}


def traced_by(pid: int, tracer: int) -> bool:
    """Every thread of `pid` is traced by `tracer` (strace attached to all of them)."""
    tids = threads(pid)
    return bool(tids) and all(task_status(pid, t).get("TracerPid") == str(tracer) for t in tids)


def left_traced(pids: Iterable[int], tracer: int | None = None) -> list[dict[str, Any]]:
    """Threads of `pids` still traced (by `tracer`, or by anyone when None) or stopped: what a
    heal must not leave."""
    bad = []
    for pid in pids:
        for tid in threads(pid):
            st = task_status(pid, tid)
            if not st:
                continue
            traced = st["TracerPid"] not in ("0", "") and (
                tracer is None or st["TracerPid"] == str(tracer))
            if traced or st["State"][:1] in ("t", "T"):
                bad.append({"pid": pid, "tid": tid, **st})
    return bad


def settled(pids: Iterable[int]) -> bool:
    """No thread of `pids` reads 'R' (running or runnable): each is asleep, stopped or gone."""
    return all(task_status(pid, tid).get("State", "")[:1] != "R"
               for pid in pids for tid in threads(pid))


def left_after_detach(pids: Iterable[int], tracer: int,
                      settle_s: float = DETACH_SETTLE_S) -> list[dict[str, Any]]:
    """Threads of `pids` that `tracer` (gone now) left traced, or anyone left stopped, judged
    once each thread has left the running state (at most `settle_s` seconds): a group stop
    that the detach re-arms reads 'R' until the thread has run (see DETACH_SETTLE_S)."""
    pids = list(pids)
    poll_until(lambda: settled(pids), settle_s,
               f"the threads of {pids} to sleep or stop after strace {tracer} detached",
               interval_s=0.01)
    return left_traced(pids, tracer)       # a stopped thread counts whoever traces it


def _protected(pid: int) -> set[str]:
    """What the process's fds 0, 1 and 2 point at: never a path to fail."""
    out = set()
    for fd in (0, 1, 2):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
    return out


@dataclass
class SyscallError(Fault):
    """strace on `pid`: the write-class calls on `paths` fail with `errno` until heal()."""

    pid: int = 0
    paths: list[Path] = field(default_factory=list)
    errno: str = "EIO"
    out: Path | None = None                 # strace's record of the calls it failed
    proc: subprocess.Popen | None = None
    strace: Proc | None = None
    attach_s: float | None = None
    tracees: list[int] = field(default_factory=list)

    def argv(self) -> list[str]:
        calls = ",".join(WRITE_CALLS)
        # -f for every thread (and threads to come); --detach-on=execve lets go of a child
        # once it runs a program: the box's processes (bwrap, the shim, the VM) are not the
        # host, and tracing them changed what the runtime did (a detached box's VM outlived
        # the start's cleanup with strace following it, EIO or not). -s: the record keeps
        # what each failed write carried (a log line the runtime lost).
        argv = ["strace", "-f", "--detach-on=execve", "-qq", "-s", "512", "-p", str(self.pid),
                "-e", f"trace={calls}",
                "-e", f"inject={calls}:error={self.errno}"]
        if self.out is not None:
            argv += ["-o", str(self.out)]
        for p in self.paths:
            argv += ["-P", str(p)]
        return argv

    def _inject(self) -> None:
        why = available()
        if why:
            raise ArrangementError(why)
        keep = _protected(self.pid)
        self.paths = [p for p in self.paths if str(p) not in keep]
        if not self.paths:
            raise ArrangementError("no file to fail")
        t0 = time.monotonic()
        err = open(self.err_path(), "wb") if self.out else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err)
        finally:
            if self.out:
                err.close()  # type: ignore[union-attr]
        try:
            self.strace = Proc(self.proc.pid, psutil.Process(self.proc.pid).create_time(),
                               "strace")
        except psutil.Error:
            self.strace = None          # gone at once: seen below
        proc = self.proc
        if not poll_until(lambda: traced_by(self.pid, proc.pid) or proc.poll() is not None,
                          ATTACH_TIMEOUT_S, f"strace to attach to every thread of {self.pid}",
                          interval_s=0.001) or not traced_by(self.pid, proc.pid):
            err = self._stop()
            raise ProcessLookupError(
                f"strace did not attach to pid {self.pid} within {ATTACH_TIMEOUT_S:.0f}s "
                f"(exit {proc.returncode}): {err[-300:]}")
        self.attach_s = time.monotonic() - t0
        self.target.update(attach_ms=round(1000 * self.attach_s, 3), strace=self.proc.pid,
                           files=len(self.paths))

    def err_path(self) -> Path:
        assert self.out is not None
        return self.out.with_name(self.out.name + ".stderr")

    def _stop(self) -> str:
        """SIGTERM strace (it detaches from every tracee and exits), SIGKILL it past
        DETACH_TIMEOUT_S (the kernel detaches its tracees), and reap it; its stderr."""
        assert self.proc is not None
        # Every process strace holds: the host's threads, and the children it spawned since,
        # wherever they are now (a detached shim is the subreaper's once its host is gone).
        tracer = str(self.proc.pid)
        self.tracees = sorted({self.pid, *(pid for pid in psutil.pids()
                                           if task_status(pid, pid).get("TracerPid") == tracer)})
        same = self.strace.same() if self.strace else None
        if same is not None and self.proc.poll() is None:
            same.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(DETACH_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                same = self.strace.same() if self.strace else None
                if same is not None:
                    same.send_signal(signal.SIGKILL)
                self.proc.wait(DETACH_TIMEOUT_S)
        self.proc.wait(DETACH_TIMEOUT_S)
        try:
            return self.err_path().read_text(errors="replace") if self.out else ""
        except OSError:
            return ""

    def _heal(self) -> None:
        """End strace; then no tracee of it may be left traced or stopped (a stopped one is
        sent SIGCONT, and the heal fails naming it). Raises RuntimeError when one is."""
        if self.proc is None:
            return
        tracer = self.proc.pid
        self._stop()
        self.target["injected"] = self.injected_calls()
        bad = left_after_detach(self.tracees, tracer)
        for b in bad:
            try:
                os.kill(b["pid"], signal.SIGCONT)
            except OSError:
                pass
        if bad:
            raise RuntimeError(f"after strace {tracer} ended, still traced or stopped: {bad}")

    def injected_calls(self) -> int | None:
        """How many calls strace failed (None without its record)."""
        if self.out is None or not self.out.is_file():
            return None
        with open(self.out, errors="replace") as fh:
            return sum(1 for line in fh if "(INJECTED)" in line)


def fail_writes(pid: int, paths: Iterable[Path], errno: str = "EIO",
                out: Path | None = None) -> SyscallError:
    """The fault: `pid`'s writes and syncs to `paths` fail with `errno` once injected."""
    paths = list(paths)
    return SyscallError(f"syscall_{errno.lower()}", {"pid": pid, "errno": errno,
                                                     "files": len(paths)},
                        pid=pid, paths=paths, errno=errno, out=out)
