"""One private dockerd: its folder, argv, start until it answers, signals, and stop; where its
containers' cgroups and shim sockets land, and their removal.

The daemon is the fixture's own: data root, exec root, unix socket, pid file, config and key
file under its folder, its containers' cgroups under a parent of its own; no TCP listener, no
bridge, no iptables, no IP forwarding. It runs in a mount namespace of its own with private
propagation, so its overlays and bind mounts are invisible to the machine (a box started
beside it copies the host's mount table into its sandbox; 0.9.7's preflight fails on a
dockerd overlay there); the namespace, and every mount in it, ends with its last process.
Its temporary files (containerd's stack dumps among them) go to its folder, not /tmp. It is
stopped with SIGTERM, then SIGKILL by pid and start time.

Started here rather than through the system's docker service or a test-container library: the
daemon must be private to the run, and dockerd itself is signalled mid-start as a fault.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import psutil

from harness.common.wait import WaitTimeout, wait_for
from harness.faults.shim import Proc
from harness.leftovers.mounts import mounts_under
from harness.targets.base import STOP_BOUND_S, TargetUnavailable, short_root
from harness.targets.dockerapi import API_ERRORS, LoggedAPIClient, OpLog

DOCKERD = "dockerd"
# dockerd runs under unshare(1) (util-linux), which execs it in a fresh mount namespace whose
# mounts propagate nowhere: its pid is dockerd's own.
UNSHARE = "unshare"
PRIVATE_MOUNTS = (UNSHARE, "--mount", "--propagation", "private", "--")
# containerd writes its goroutine dump on SIGUSR1 (dockerd sends one before killing a
# containerd that stopped answering) to $TMPDIR/containerd.<pid>.stacks.log.
STACK_DUMP = "containerd.{pid}.stacks.log"
READY_TIMEOUT_S = 60.0
API_TIMEOUT_S = 60
NAMESPACE = "moby"                                  # dockerd's containerd namespace
SHIM_SOCKETS = Path("/run/containerd/s")
# containerd refuses socket paths over 104 bytes; the longest a daemon root carries is its
# debug socket (as long as containerd.sock.ttrpc).
SOCKET_MAX = 104
LONGEST_SOCKET = "exec/containerd/containerd-debug.sock"

_daemons = itertools.count(1)


def daemon_root(preferred_parent: Path) -> Path:
    """A fresh folder for one daemon under `preferred_parent`, or under /tmp when that path
    is too long for the daemon's unix sockets."""
    return short_root(preferred_parent / f"{os.getpid()}-{next(_daemons)}", LONGEST_SOCKET,
                      SOCKET_MAX, "chaos-dockerd")


def cgroup_dirs(parent: str, proc_cgroup: str | None = None,
                hierarchies: Path = Path("/sys/fs/cgroup")) -> list[Path]:
    """Where containers of a daemon with a relative `--cgroup-parent` land: under the
    harness's own cgroup in each hierarchy (the daemon is the harness's child)."""
    if proc_cgroup is None:
        proc_cgroup = Path("/proc/self/cgroup").read_text()
    own = {}
    for line in proc_cgroup.splitlines():
        _id, ctrls, path = line.split(":", 2)
        for ctrl in (ctrls.split(",") if ctrls else ["unified"]):
            own[ctrl.removeprefix("name=")] = path
    out = []
    for h in sorted(hierarchies.iterdir()) if hierarchies.is_dir() else []:
        path = own.get(h.name, own.get("unified") if h.name == "unified" else None)
        if path is None and len(own) == 1 and "unified" in own:
            path = own["unified"]           # a pure cgroup v2 machine
        if path is not None:
            out.append(h / path.lstrip("/") / parent)
    return out


def remove_cgroups(parent: str) -> dict[str, list[str]]:
    """rmdir the daemon's (empty) container cgroups, deepest first; never anything else."""
    from harness.leftovers.processes import rmdir_cgroups
    return rmdir_cgroups(cgroup_dirs(parent))


def shim_socket(exec_root: Path, iid: str) -> Path:
    """Where containerd 1.6 puts a container's shim socket: outside any root it is given,
    named by sha256 of <containerd address>/<namespace>/<id> (runtime/v2/shim/util.go)."""
    key = f"{exec_root}/containerd/containerd.sock/{NAMESPACE}/{iid}"
    return SHIM_SOCKETS / hashlib.sha256(key.encode()).hexdigest()


def namespace_mounts(root: Path, pids: Iterable[int]) -> list[str]:
    """Mount points at or under `root` that the processes `pids` see (each one's own mount
    namespace: a private dockerd's mounts are not in /proc/self/mountinfo), with the ones this
    process sees; a process that is gone or cannot be read adds nothing."""
    out = mounts_under(root)
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/mountinfo").read_text()
        except OSError:
            continue
        out += [m for m in mounts_under(root, text) if m not in out]
    return out


def remove_stack_dumps(procs: Iterable[Proc], tmp: Path = Path("/tmp")) -> list[str]:
    """Remove the stack dumps a containerd of ours wrote to `tmp` (one started before its
    TMPDIR was the daemon's folder, or by a dockerd that set none): only a file named for a
    containerd's pid that was written after that process started (pid + start time)."""
    removed = []
    for proc in procs:
        if proc.name != "containerd":
            continue
        path = tmp / STACK_DUMP.format(pid=proc.pid)
        try:
            if path.is_file() and not path.is_symlink() \
                    and path.stat().st_mtime >= proc.create_time:
                path.unlink()
                removed.append(str(path))
        except OSError:
            continue
    return removed


def remove_shim_sockets(daemon: DockerDaemon, iids: list[str]) -> list[str]:
    """A shim that was SIGKILLed leaves its socket behind: remove those of our containers
    (once no shim runs, so none is in use); nothing else in that shared folder."""
    removed = []
    for iid in iids:
        path = shim_socket(daemon.exec_root, iid)
        if path.is_socket():
            path.unlink()
            removed.append(path.name)
    return removed


# -- the daemon ------------------------------------------------------------------------------

@dataclass
class DockerDaemon:
    """One private dockerd on `root`; `start()` again runs a new one on the same state."""

    root: Path
    storage_driver: str | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)
    key: Proc | None = None
    _signal_t: float | None = None
    log_ops: OpLog = field(default_factory=lambda: OpLog(None))

    def __post_init__(self) -> None:
        """Raises ValueError for a root too long for containerd's sockets: containerd would
        exit at start ("unix socket path too long"), read as a dockerd that cannot run here."""
        longest = Path(self.root).resolve() / LONGEST_SOCKET
        if len(str(longest)) > SOCKET_MAX:
            raise ValueError(f"dockerd root {self.root} is too long for containerd's sockets "
                             f"({len(str(longest))} > {SOCKET_MAX} bytes with {LONGEST_SOCKET}"
                             f"): make it with daemon_root()")

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def exec_root(self) -> Path:
        return self.root / "exec"

    @property
    def sock(self) -> Path:
        return self.root / "docker.sock"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    @property
    def tmp(self) -> Path:
        """Its TMPDIR (and containerd's, which it starts): stack dumps land here."""
        return self.root / "tmp"

    @property
    def cgroup_parent(self) -> str:
        return f"boxlite-chaos-{self.root.name}"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.procs[-1] if self.procs else None

    def namespace(self) -> list[str]:
        """How dockerd enters its mount namespace: a fresh private one; or, when the
        containerd a dead dockerd left still runs (the new one adopts it), that containerd's,
        so the layers dockerd mounts are where its containers' runc looks for them."""
        try:
            pid = int((self.exec_root / "containerd" / "containerd.pid").read_text())
            theirs = os.readlink(f"/proc/{pid}/ns/mnt")
            if psutil.Process(pid).name() == "containerd" \
                    and theirs != os.readlink("/proc/self/ns/mnt"):
                return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--"]
        except (OSError, ValueError, psutil.Error):
            pass
        return list(PRIVATE_MOUNTS)

    def argv(self) -> list[str]:
        argv = [*self.namespace(), DOCKERD, "--config-file", str(self.root / "daemon.json"),
                "--data-root", str(self.data), "--exec-root", str(self.exec_root),
                "-H", f"unix://{self.sock}", "--pidfile", str(self.root / "dockerd.pid"),
                "--bridge=none", "--iptables=false", "--ip6tables=false",
                "--ip-forward=false", "--ip-masq=false", "--userland-proxy=false",
                "--cgroup-parent", self.cgroup_parent]
        if self.storage_driver:
            argv += ["--storage-driver", self.storage_driver]
        return argv

    def start(self) -> DockerDaemon:
        with self.log_ops.op("dockerd_start", storage_driver=self.storage_driver):
            return self._start()

    def _start(self) -> DockerDaemon:
        # The trust key would otherwise go to /etc/docker/key.json.
        (self.root / "daemon.json").write_text(json.dumps(
            {"deprecated-key-path": str(self.root / "key.json")}))
        self.tmp.mkdir(exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True,
                                    env={**os.environ, "TMPDIR": str(self.tmp)})
        self.procs.append(proc)
        self._signal_t = None
        try:
            self.key = Proc(proc.pid, psutil.Process(proc.pid).create_time(), DOCKERD)
        except psutil.Error:
            self.key = None
        try:
            wait_for(lambda: self._answers(proc), READY_TIMEOUT_S,
                     "dockerd to answer on its socket", interval_s=0.05)
        except WaitTimeout:
            self.stop()
            raise TargetUnavailable(f"dockerd did not answer within {READY_TIMEOUT_S:.0f}"
                                    f"s: {self.log_tail()}") from None
        return self

    def _answers(self, proc: subprocess.Popen) -> bool:
        if proc.poll() is not None:
            raise TargetUnavailable(f"dockerd exited with {proc.returncode} at start: "
                                    f"{self.log_tail()}")
        if not self.sock.exists():
            return False
        try:
            docker.APIClient(base_url=f"unix://{self.sock}", version="auto", timeout=5).close()
            return True
        except API_ERRORS:
            return False

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        keep = [x for x in text if "level=error" in x or "level=fatal" in x] or text
        return " | ".join(keep[-lines:])[-600:]

    def client(self, timeout: int = API_TIMEOUT_S) -> docker.APIClient:
        return LoggedAPIClient(self.log_ops, base_url=f"unix://{self.sock}", version="auto",
                               timeout=timeout)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def mounts(self, pids: Iterable[int] = ()) -> list[str]:
        """Mounts at or under its folder, as the daemon (while it runs) and `pids` see them."""
        own = [self.proc.pid] if self.alive and self.proc is not None else []
        return namespace_mounts(self.root, [*own, *pids])

    def signal(self, sig: int) -> None:
        if not self.alive or self.key is None:
            return
        p = self.key.same()
        if p is not None:
            self._signal_t = time.monotonic()
            p.send_signal(sig)
            if self.log_ops.history is not None:
                self.log_ops.history.append("fault", fault="signal_host", host="dockerd",
                                            signal=signal.Signals(sig).name, pid=p.pid)

    def wait_exit(self, timeout_s: float) -> float | None:
        """Seconds from the last signal to the exit; None if it is still running."""
        assert self.proc is not None
        t_from = self._signal_t or time.monotonic()
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        if self.log_ops.history is not None:
            self.log_ops.history.append("observe", what="host_exit", host="dockerd",
                                        returncode=self.proc.returncode)
        return time.monotonic() - t_from

    def stop(self, bound_s: float = STOP_BOUND_S) -> dict[str, Any]:
        """SIGTERM, then SIGKILL (by pid and start time) past `bound_s`."""
        if not self.alive:
            return {"was_running": False}
        self.signal(signal.SIGTERM)
        exit_s = self.wait_exit(bound_s)
        if exit_s is not None:
            return {"was_running": True, "sigterm_exit_s": round(exit_s, 3),
                    "returncode": self.proc.returncode if self.proc else None}
        self.signal(signal.SIGKILL)
        self.wait_exit(10.0)
        return {"was_running": True, "sigterm_exit_s": None, "killed": True}
