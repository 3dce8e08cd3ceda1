"""I/O errors and latency on chosen files and calls of a runtime home: a passthrough FUSE layer
under the home (harness/faults/fuse_layer.py) and the fault that sets one of its rules.

`FuseLayer` mounts the layer at a home under the scenario's marked homes folder, its backing
folder (`homeN.backing`) and control folder (`homeN.fuse`: the control socket, the layer's
log) beside it, and records its process by pid and start time. `IoFault` sets a rule (an errno
for an op on a path pattern at its Nth call, or every call from the Nth, or a delay in ms):
inject() sets it, heal() clears it and keeps the layer's count of the calls it saw and failed;
describe() holds the rule, so the history replays it. unmount() (fusermount3 -u, else a lazy
umount) ends the layer even when its process died ("Transport endpoint is not connected"); a
crash of ours leaves the mount to the sweep (harness.leftovers.sweep kills the layer, which
carries our owner variable and names the folder, then unmounts what is under the folder).

Binding: Debian's python3-pyfuse3 (libfuse3), run by the system Python as its own process.
pip's pyfuse3 would need libfuse3's development files and a compiler; mfusepy and fusepy need
libfuse 2; Debian's package needs neither, and a separate process keeps the harness's venv free
of it and lets a layer that hangs be killed without killing the harness.

Cost: create+start to the shim spawn, a fresh home on plain /tmp (ext4) against one on the
layer, alternating in one run, 5 each (boxlite 0.10.8, this 2-core nested machine under a load
of ~12 from other runs, 2026-12-06): plain 0.65, 0.19, 0.22, 0.70, 0.49 s (median 0.49);
layer 3.39, 0.76, 1.64, 1.12, 1.03 s (median 1.12): 2.3x by the medians, 5.2x for a home's
first box (the disk images built through the layer). An earlier run of 3 each: plain
0.38-0.46 s, layer 1.02-2.68 s. A storage scenario on the layer takes ~15-20 s in all.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.common.errors import ArrangementError
from harness.common.procs import Proc, kill_all
from harness.common.procs import alive as procs_alive
from harness.common.wait import poll_until
from harness.faults.base import Fault

# Read off /proc/self/mountinfo: a dead FUSE mount is still listed there, where
# os.path.ismount fails on it (ENOTCONN).
from harness.faults.storage import is_mountpoint

SYSTEM_PYTHON = "/usr/bin/python3"
LAYER_PROGRAM = Path(__file__).with_name("fuse_layer.py")
MOUNT_TIMEOUT_S = 20.0
CONTROL_TIMEOUT_S = 10.0
EXIT_TIMEOUT_S = 5.0
OPS = ("open", "create", "read", "write", "flush", "fsync", "fsyncdir", "mkdir", "rmdir",
       "unlink", "rename", "link", "symlink", "mknod", "setattr")
ERRNOS = ("ENOSPC", "EIO", "EDQUOT", "EROFS", "EFBIG", "EACCES", "EPERM")


@functools.cache
def available() -> str | None:
    """None when the layer can run here, else why not (a scenario skips saying so). Asked
    once per process."""
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse"
    if not Path("/usr/bin/fusermount3").exists():
        return "fusermount3 missing (Debian package fuse3)"
    try:
        probe = subprocess.run([SYSTEM_PYTHON, "-c", "import pyfuse3, trio"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{SYSTEM_PYTHON} cannot run: {exc}"
    if probe.returncode != 0:
        return f"{SYSTEM_PYTHON} cannot import pyfuse3 (Debian package python3-pyfuse3)"
    return None


@dataclass
class FuseLayer:
    """The layer under `home`. mount() before a runtime opens the home; unmount() after every
    process of the home ended (lazily while one still holds it). Raises ArrangementError when
    the layer cannot be mounted or does not answer."""

    home: Path
    backing: Path | None = None
    folder: Path | None = None
    pid: int | None = None
    create_time: float | None = None
    proc: subprocess.Popen | None = None
    teardown: list[dict[str, Any]] = field(default_factory=list)

    @property
    def control(self) -> Path:
        assert self.folder is not None
        return self.folder / "ctl.sock"

    def mount(self) -> FuseLayer:
        why = available()
        if why:
            raise ArrangementError(f"the FUSE layer cannot run: {why}")
        self.home.mkdir(parents=True, exist_ok=True)
        if any(self.home.iterdir()):
            raise ArrangementError(f"{self.home} is not empty: the layer goes on a new home")
        self.backing = self.home.with_name(self.home.name + ".backing")
        self.folder = self.home.with_name(self.home.name + ".fuse")
        self.backing.mkdir(mode=0o755)
        self.folder.mkdir()
        return self._start()

    def remount(self) -> FuseLayer:
        """Unmount, then a new layer process on the same backing folder: the kernel's caches
        of the old mount go with it (a reboot, after a power cut)."""
        self.unmount()
        if is_mountpoint(self.home):
            raise ArrangementError(f"{self.home} is still mounted: the layer cannot come back")
        return self._start()

    def _start(self) -> FuseLayer:
        assert self.folder is not None and self.backing is not None
        log = open(self.folder / "layer.log", "ab")     # noqa: SIM115 - the child holds it
        try:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(LAYER_PROGRAM), str(self.backing), str(self.home),
                 str(self.control)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        finally:
            log.close()
        self.pid = self.proc.pid
        try:
            self.create_time = psutil.Process(self.pid).create_time()
        except psutil.Error:
            pass

        def answering_or_exited() -> bool:
            if self.proc.poll() is not None:
                return True
            if is_mountpoint(self.home) and self.control.exists():
                try:
                    self.command({"cmd": "ping"})
                    return True
                except ArrangementError:
                    pass
            return False
        if poll_until(answering_or_exited, MOUNT_TIMEOUT_S,
                      f"the FUSE layer to mount {self.home} and answer", interval_s=0.05):
            if self.proc.poll() is not None:
                self.unmount()
                raise ArrangementError(f"the FUSE layer exited {self.proc.returncode} before "
                                       f"mounting: {self.log_tail()}")
            return self
        self.unmount()
        raise ArrangementError(f"the FUSE layer at {self.home} was not mounted and answering "
                               f"within {MOUNT_TIMEOUT_S:.0f}s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.folder / "layer.log").read_text(errors="replace")[-400:]  # type: ignore[operator]
        except OSError:
            return ""

    def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """One command to the layer; its answer. Raises ArrangementError when it cannot be
        reached or refuses."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(CONTROL_TIMEOUT_S)
                s.connect(str(self.control))
                s.sendall(json.dumps(req).encode() + b"\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            out = json.loads(data)
        except (OSError, ValueError) as exc:
            raise ArrangementError(f"the FUSE layer at {self.home} did not answer "
                                   f"{req.get('cmd')!r}: {exc}") from exc
        if not out.get("ok"):
            raise ArrangementError(f"the FUSE layer refused {req}: {out.get('error')}")
        return out

    def add_rule(self, rule: dict[str, Any]) -> int:
        return int(self.command({"cmd": "rule", "rule": rule})["id"])

    def clear(self, rule_id: int | None = None) -> None:
        self.command({"cmd": "clear", "id": rule_id})

    def report(self) -> dict[str, Any]:
        """{"rules": [rule + calls, fired, fired_on], "ops": {op: calls}}."""
        return self.command({"cmd": "report"})

    def checkpoint(self) -> None:
        """Everything written so far counts as on the disk; from now on the layer keeps
        what was not fsynced apart, for cut()."""
        self.command({"cmd": "checkpoint"})

    def cut(self) -> dict[str, int]:
        """The power goes: what no fsync made durable since the checkpoint is undone in the
        backing folder, and every later call fails with EIO until remount(). Returns what
        was undone: {bytes_files, names}."""
        return self.command({"cmd": "cut"})["lost"]

    def rule_counts(self, rule_id: int) -> dict[str, Any] | None:
        for r in self.report()["rules"]:
            if r["id"] == rule_id:
                return {k: r[k] for k in ("calls", "fired", "fired_on")}
        return None

    def alive(self) -> bool:
        """Still our layer process (pid and start time), not a zombie."""
        if self.pid is None or self.create_time is None:
            return False
        try:
            p = psutil.Process(self.pid)
            return p.create_time() == self.create_time and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def unmount(self) -> list[dict[str, Any]]:
        """fusermount3 -u, else umount -l; then the layer's process ends (killed by pid and
        start time if it does not within EXIT_TIMEOUT_S). Safe to call twice; what was done
        is returned, an error said there, never raised."""
        done: list[dict[str, Any]] = []
        if is_mountpoint(self.home):
            for argv, how in ((["fusermount3", "-u", str(self.home)], "fusermount3"),
                              (["umount", "-l", str(self.home)], "lazy")):
                try:
                    r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                    err = None if r.returncode == 0 else (r.stderr.strip() or
                                                          f"exit {r.returncode}")
                except (OSError, subprocess.TimeoutExpired) as exc:
                    err = str(exc)
                done.append({"point": str(self.home), "how": how, "error": err})
                if err is None and not is_mountpoint(self.home):
                    break
        poll_until(lambda: not self.alive() or (self.proc is not None
                                                and self.proc.poll() is not None),
                   EXIT_TIMEOUT_S, f"the FUSE layer (pid {self.pid}) to exit", interval_s=0.05)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)                   # type: ignore[arg-type]
            done.append({"killed": self.pid})
        if self.proc is not None:
            try:
                self.proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                done.append({"error": f"layer pid {self.pid} did not end"})
        self.teardown += done
        return done

    def describe(self) -> dict[str, Any]:
        return {"home": str(self.home), "fs": "fuse", "backing": str(self.backing),
                "pid": self.pid, "create_time": self.create_time}


@dataclass
class IoFault(Fault):
    """One rule of the layer: `rule` = {op, path, errno, nth, every, delay_ms} (see
    fuse_layer.py). heal() clears it and keeps its counts in the target (`calls`, `fired`)."""

    layer: FuseLayer | None = None
    rule: dict[str, Any] = field(default_factory=dict)
    rule_id: int | None = None

    def _inject(self) -> None:
        assert self.layer is not None
        self.rule_id = self.layer.add_rule(self.rule)
        self.target["t"] = round(time.monotonic(), 3)

    def counts(self) -> dict[str, Any] | None:
        """The layer's count of the calls the rule matched and failed or delayed (None: the
        layer cannot say: cleared, or gone)."""
        if self.layer is None or self.rule_id is None:
            return None
        try:
            return self.layer.rule_counts(self.rule_id)
        except ArrangementError:
            return None

    def _heal(self) -> None:
        counts = self.counts()
        if counts is not None:
            self.target.update(calls=counts["calls"], fired=counts["fired"])
        if self.layer is not None and self.rule_id is not None and self.layer.alive():
            self.layer.clear(self.rule_id)


def io_fault(layer: FuseLayer, op: str | list[str], path: str, errno: str | None = "EIO",
             nth: int = 1, every: bool = False, delay_ms: float | None = None,
             phase: str | None = None) -> IoFault:
    """The fault that fails (errno) or delays (delay_ms) `op` on files matching `path` (a
    glob under the home, e.g. "db/boxlite.db-wal") at its `nth` call from now, or every call
    from the nth. Raises ArrangementError on an op or errno the layer does not know."""
    ops = [op] if isinstance(op, str) else list(op)
    if bad := [o for o in ops if o not in OPS]:
        raise ArrangementError(f"io fault on {bad}: the layer knows {OPS}")
    if errno is not None and errno not in ERRNOS:
        raise ArrangementError(f"io fault errno {errno!r}: expected one of {ERRNOS}")
    rule = {"op": ops, "path": path, "errno": errno, "nth": nth, "every": every,
            "delay_ms": delay_ms}
    return IoFault("io_fault", {"home": str(layer.home), "rule": rule, "phase": phase},
                   layer=layer, rule=rule)


@dataclass
class PowerCut(Fault):
    """A power cut under a home on the layer (LazyFS's model, "When Amnesia Strikes", VLDB
    2024): every process of the home stopped at once (SIGSTOP, by pid and start time), the
    layer drops what was not fsynced since its checkpoint (unsynced writes, names no fsync of
    their folder made durable), every process killed, the layer mounted again on what a real
    disk would hold. Nothing to heal: the power comes back with the remount."""

    layer: FuseLayer | None = None
    procs: list[Proc] = field(default_factory=list)

    def _inject(self) -> None:
        assert self.layer is not None
        stopped = []
        for proc in self.procs:
            p = proc.same()
            if p is not None:
                try:
                    p.send_signal(signal.SIGSTOP)
                    stopped.append(proc.pid)
                except psutil.Error:
                    continue
        lost = self.layer.cut()
        killed = kill_all(self.procs, wait_s=EXIT_TIMEOUT_S)
        left = [p.pid for p in self.procs if procs_alive(p)]
        self.layer.remount()
        self.target.update(stopped=stopped, killed=[k["pid"] for k in killed], left=left,
                           lost=lost, t=round(time.monotonic(), 3))


def power_cut(layer: FuseLayer, procs: list[Proc], phase: str) -> PowerCut:
    """The power cut of `layer`'s home at `phase`, killing `procs` (the home's host and its
    boxes' processes)."""
    return PowerCut("power_cut", {"home": str(layer.home), "phase": phase,
                                  "procs": [{"pid": p.pid, "name": p.name} for p in procs]},
                    layer=layer, procs=procs)
