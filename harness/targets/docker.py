"""Docker as the reference target: a private dockerd, a locally imported busybox image, and the
pattern's faults (a start that fails, the shim SIGKILLed, dockerd signalled during a start, a
paused container).

The daemon is the fixture's own: data root, exec root, unix socket, pid file, config and key
file under its folder, its containers' cgroups under a parent of its own; no TCP listener, no
bridge, no iptables, no IP forwarding; containers run with network_mode none from an image
imported from a tar built from the local busybox, never pulled. It is stopped with SIGTERM,
then SIGKILL by pid and start time, and whatever it mounted under its folder is unmounted.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import docker.errors
import psutil
import requests

from harness.common.wait import WaitTimeout, wait_for
from harness.faults.base import Fault, FaultSet
from harness.faults.shim import KillShim, Proc
from harness.leftovers.sweep import mark, release
from harness.observe.history import History
from harness.runtime.image import BUSYBOX, _layer_tar
from harness.targets.base import (
    STOP_BOUND_S,
    Cleanup,
    RecordView,
    Started,
    Target,
    TargetUnavailable,
    alive,
    describe,
    kill_all,
    mounts_under,
    scan,
    short_root,
    unmount_under,
)

DOCKERD = "dockerd"
READY_TIMEOUT_S = 60.0
API_TIMEOUT_S = 60
# dockerd picks overlay2 where it works; vfs needs nothing from the kernel but is slow.
STORAGE_DRIVERS: tuple[str | None, ...] = (None, "vfs")
STORAGE_TROUBLE = re.compile(r"overlay|storage.driver|graphdriver|driver not supported", re.I)
IMAGE_REPO = "boxlite-chaos/busybox"
MISSING_ENTRYPOINT = "/nonexistent/entrypoint"
NAMESPACE = "moby"                                  # dockerd's containerd namespace
SHIM_SOCKETS = Path("/run/containerd/s")
SLEEP = ["sleep", "3600"]
# containerd refuses socket paths over 104 bytes; the longest a daemon root carries is its
# debug socket (as long as containerd.sock.ttrpc).
SOCKET_MAX = 104
LONGEST_SOCKET = "exec/containerd/containerd-debug.sock"
# Statuses nothing will move on from by itself (Docker's own words).
TRANSITIONAL = ("restarting", "removing")

_errors = (docker.errors.DockerException, requests.exceptions.RequestException)
_requests = itertools.count(1)
# Where the object ids sit in an API path: named as a template, so ops group by call.
_ID_IN_PATH = re.compile(r"/(?:containers|images|exec)/(?!(?:create|json|load|prune)\b)[^/]+")
_API_VERSION = re.compile(r"^/v\d+\.\d+(?=/)")


class OpLog:
    """Docker's operations in the scenario's history, as `invoke` then `ok` or `fail` with
    host "dockerd" (the runtime host's events have the same shape): the history says which
    time was dockerd's own and the timeline draws it. Without a history it logs nothing."""

    def __init__(self, history: History | None) -> None:
        self.history = history

    @contextlib.contextmanager
    def op(self, op: str, **args: Any) -> Iterator[None]:
        if self.history is None:
            yield
            return
        req = next(_requests)
        self.history.append("invoke", host="dockerd", op=op, req=req, args=args)
        t0 = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.history.append("fail", host="dockerd", op=op, req=req,
                                elapsed_s=round(time.monotonic() - t0, 4),
                                error={"type": type(exc).__name__, "message": str(exc)[:300]})
            raise
        self.history.append("ok", host="dockerd", op=op, req=req,
                            elapsed_s=round(time.monotonic() - t0, 4))


class LoggedAPIClient(docker.APIClient):
    """docker's low-level client (a requests.Session), each HTTP request an `api` op in
    the history, named by method and path template (`POST /containers/{id}/start`)."""

    def __init__(self, log: OpLog, **kwargs: Any) -> None:
        self._oplog = log           # before super(): version="auto" asks the daemon at once
        super().__init__(**kwargs)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        path = _API_VERSION.sub("", urlparse(url).path)
        path = _ID_IN_PATH.sub(lambda m: m.group(0).rsplit("/", 1)[0] + "/{id}", path)
        with self._oplog.op("api", call=f"{method.upper()} {path}"):
            return super().request(method, url, *args, **kwargs)


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
    from harness.leftovers.sweep import rmdir_cgroups
    return rmdir_cgroups(cgroup_dirs(parent))


def shim_socket(exec_root: Path, iid: str) -> Path:
    """Where containerd 1.6 puts a container's shim socket: outside any root it is given,
    named by sha256 of <containerd address>/<namespace>/<id> (runtime/v2/shim/util.go)."""
    key = f"{exec_root}/containerd/containerd.sock/{NAMESPACE}/{iid}"
    return SHIM_SOCKETS / hashlib.sha256(key.encode()).hexdigest()


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


def in_cgroup(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


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
    def cgroup_parent(self) -> str:
        return f"boxlite-chaos-{self.root.name}"

    @property
    def proc(self) -> subprocess.Popen | None:
        return self.procs[-1] if self.procs else None

    def argv(self) -> list[str]:
        argv = [DOCKERD, "--config-file", str(self.root / "daemon.json"),
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
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=log, start_new_session=True)
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
        except _errors:
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


# -- faults ----------------------------------------------------------------------------------

@dataclass
class PauseContainer(Fault):
    """`docker pause`: the container's processes are frozen in their cgroup. Healed with
    `docker unpause`, or, with dockerd gone, by thawing the freezer cgroup directly."""

    owner: DockerTarget | None = None
    iid: str = ""
    procs: list[Proc] = field(default_factory=list)

    def _inject(self) -> None:
        assert self.owner is not None
        self.procs = self.owner.helpers(self.iid)
        self.owner.api.pause(self.iid)

    def _heal(self) -> None:
        assert self.owner is not None
        if self.owner.daemon.alive:
            try:
                if self.owner.api.inspect_container(self.iid)["State"]["Paused"]:
                    self.owner.api.unpause(self.iid)
                return
            except _errors:
                pass
        for proc in self.procs:
            if alive(proc):
                thaw(proc.pid)


def thaw(pid: int) -> None:
    """Thaw the freezer cgroup (v1) or cgroup.freeze (v2) that holds `pid`."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _id, ctrls, path = line.split(":", 2)
        if "freezer" in ctrls.split(","):
            Path(f"/sys/fs/cgroup/freezer{path}/freezer.state").write_text("THAWED")
            return
        if ctrls == "" and Path(f"/sys/fs/cgroup{path}/cgroup.freeze").exists():
            Path(f"/sys/fs/cgroup{path}/cgroup.freeze").write_text("0")
            return


# -- the target ------------------------------------------------------------------------------

class DockerTarget(Target):
    kind = "docker"

    def __init__(self, root: Path, history: History | None = None) -> None:
        super().__init__()
        self.root = root
        self.daemon = DockerDaemon(root, log_ops=OpLog(history))
        # Should this process die, a sweep stops the daemon and what it started, undoes its
        # mounts and cgroups, and removes its state (all of a /tmp folder; data and exec of
        # one kept with the report, as close() does).
        mark(root, "dockerd", remove=(".",) if root.parent == Path("/tmp") else ("data", "exec"),
             cgroups=[str(d) for d in cgroup_dirs(self.daemon.cgroup_parent)])
        self.api: docker.APIClient | None = None    # type: ignore[assignment]
        self.image = ""
        self._version = "?"
        self.driver = "?"
        self.created: list[str] = []

    # -- set-up --------------------------------------------------------------------------
    def open(self) -> DockerTarget:
        if os.geteuid() != 0:
            raise TargetUnavailable("dockerd needs root; the harness is not running as root")
        if shutil.which(DOCKERD) is None:
            raise TargetUnavailable("dockerd is not installed (apt-get install docker.io)")
        if not BUSYBOX.is_file():
            raise TargetUnavailable(f"{BUSYBOX} not found (apt-get install busybox-static)")
        why = []
        for driver in STORAGE_DRIVERS:
            self.daemon.storage_driver = driver
            try:
                self.daemon.start()
                self._connect()
                self.image = import_busybox(self.api, BUSYBOX)
                self._probe()
                self.family()
                return self
            except (TargetUnavailable, *_errors) as exc:
                why.append(f"{driver or 'default driver'}: {exc}")
            self.close()            # a fresh start for the next driver, nothing left behind
            if not STORAGE_TROUBLE.search(why[-1]):
                break               # another storage driver would not help
        raise TargetUnavailable("dockerd could not run a container here: " + "; ".join(why))

    def _connect(self) -> None:
        self.api = self.daemon.client()
        info = self.api.info()
        self._version = self.api.version()["Version"]
        self.driver = f"{info.get('Driver')}, cgroup v{info.get('CgroupVersion')} " \
                      f"{info.get('CgroupDriver')}"

    def _probe(self) -> None:
        """A container that runs `true`: the machine can run containers at all, so a start
        that fails later fails for the fault's reason, not the machine's."""
        assert self.api is not None
        cid = self.api.create_container(self.image, command=["true"], host_config=
                                        self.api.create_host_config(network_mode="none"))["Id"]
        self.created.append(cid)
        try:
            self.api.start(cid)
            code = self.api.wait(cid, timeout=30)["StatusCode"]
            if code != 0:
                raise TargetUnavailable(f"a probe container running `true` exited {code}")
        except docker.errors.APIError as exc:
            raise TargetUnavailable(f"a probe container could not start: {exc.explanation}") \
                from exc
        finally:
            try:
                self.api.remove_container(cid, force=True)
            except _errors:
                pass

    @property
    def label(self) -> str:
        return f"docker {self._version}"

    @property
    def version(self) -> str:
        return self._version

    @property
    def known_version(self) -> str | None:
        # Docker's own deviations from the pattern can be tabled too, keyed on its version.
        return self._version if self._version != "?" else None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "root": str(self.root), "driver": self.driver,
                "argv": self.daemon.argv(), "image": self.image}

    # -- instances -----------------------------------------------------------------------
    def create(self, name: str, failing: bool = False) -> str:
        assert self.api is not None
        kwargs: dict[str, Any] = {}
        if failing:
            kwargs["entrypoint"] = [MISSING_ENTRYPOINT]
        iid = self.api.create_container(
            self.image, command=SLEEP, name=f"chaos-{name}", labels={"boxlite-chaos": name},
            host_config=self.api.create_host_config(network_mode="none"), **kwargs)["Id"]
        self.created.append(iid)
        return iid

    def start_async(self, iid: str) -> Future:
        fut: Future = Future()
        # A client of its own: the start may be cut by the daemon's death mid-request.
        api = self.daemon.client(timeout=int(STOP_BOUND_S) * 2)

        def run() -> None:
            t0 = time.monotonic()
            error = None
            try:
                api.start(iid)
            except docker.errors.APIError as exc:
                error = {"type": type(exc).__name__, "message": str(exc.explanation),
                         "status": exc.status_code}
            except _errors as exc:
                error = {"type": type(exc).__name__, "message": str(exc)}
            finally:
                api.close()
            fut.set_result(Started(iid, error, time.monotonic() - t0))

        threading.Thread(target=run, name=f"docker-start-{iid[:12]}", daemon=True).start()
        return fut

    def inspect(self, iid: str, moment: str) -> list[RecordView]:
        assert self.api is not None
        views = []
        path = f"{moment}.inspect"
        try:
            state = self.api.inspect_container(iid)["State"]
            views.append(RecordView(
                path, True, state["Status"],
                failed=not state["Running"] and bool(state.get("Error")),
                error=state.get("Error") or "", exposes_error=True,
                transitional=state["Status"] in TRANSITIONAL,
                raw={"State": state}))
        except docker.errors.NotFound:
            views.append(RecordView(path, False, exposes_error=True))
        except _errors as exc:
            views.append(RecordView(path, read_error=f"{type(exc).__name__}: {exc}"))
        path = f"{moment}.list"
        try:
            rows = [r for r in self.api.containers(all=True, filters={"id": iid})
                    if r["Id"] == iid]
            views.append(RecordView(path, bool(rows), rows[0]["State"] if rows else None,
                                    transitional=bool(rows) and rows[0]["State"] in TRANSITIONAL,
                                    raw={"Status": rows[0]["Status"]} if rows else None))
        except _errors as exc:
            views.append(RecordView(path, read_error=f"{type(exc).__name__}: {exc}"))
        return views

    def _helpers(self, iid: str) -> list[Proc]:
        # The shim names its container with -id; the container's processes sit in a cgroup
        # named after it (and keep it when an orphan).
        return scan(lambda p, cmd: iid in cmd or in_cgroup(p.pid, iid))

    def kill_helper(self, iid: str) -> Fault:
        shims = wait_for(lambda: [p for p in self.helpers(iid)
                                  if p.name.startswith("containerd-shim")], 30,
                         f"the shim of container {iid[:12]}", interval_s=0.005)
        return KillShim("kill_docker_shim", {"container": iid[:12], "pid": shims[0].pid},
                        proc=shims[0])

    def freeze(self, iid: str) -> Fault:
        return PauseContainer("docker_pause", {"container": iid[:12]}, owner=self, iid=iid)

    def populate(self, faults: FaultSet) -> dict[str, str]:
        running, frozen = self.create("running"), self.create("frozen")
        failed = self.create("failed", failing=True)
        for iid in (running, frozen):
            started = self.start(iid, 60)
            if started.error:
                raise TargetUnavailable(f"container {iid[:12]} did not start: {started.error}")
        faults.inject(self.freeze(frozen))
        if self.start(failed, 60).error is None:
            raise TargetUnavailable(f"container {failed[:12]} started; it was to fail")
        return {"running": running, "frozen": frozen, "failed": failed}

    # -- the daemon ----------------------------------------------------------------------
    @property
    def daemon_alive(self) -> bool:
        return self.daemon.alive

    def signal_daemon(self, sig: int) -> None:
        self.daemon.signal(sig)

    def wait_daemon_exit(self, timeout_s: float) -> float | None:
        return self.daemon.wait_exit(timeout_s)

    def start_daemon(self) -> None:
        # The harness is init for what a dead dockerd left. Its managed containerd dies with
        # it (a parent-death signal); while that one is dying or unreaped, its pid in
        # containerd.pid still answers, and a new dockerd waits in vain for that "running"
        # containerd. So: wait for it to be gone, reaping it as init would.
        try:
            with self.daemon.log_ops.op("containerd_gone"):
                wait_for(self._old_containerd_gone, 10.0,
                         "the dead dockerd's containerd to end and be reaped", interval_s=0.02)
        except WaitTimeout:
            pass                # one that lives on is the new dockerd's to adopt
        self.daemon.start()
        self._connect()
        self.family()

    def _old_containerd_gone(self) -> bool:
        self.reap_adopted()
        try:
            pid = int((self.daemon.exec_root / "containerd" / "containerd.pid").read_text())
            psutil.Process(pid)
        except (OSError, ValueError, psutil.NoSuchProcess):
            return True
        except psutil.Error:
            return False
        return False

    def _family(self) -> list[Proc]:
        roots = (str(self.daemon.exec_root), str(self.daemon.data))
        return scan(lambda p, cmd: any(r in cmd for r in roots)
                    or in_cgroup(p.pid, self.daemon.cgroup_parent))

    def family_kind(self, name: str, cmd: str) -> str | None:
        if name == DOCKERD:
            return "dockerd"
        if name == "containerd":
            return "containerd"
        if name.startswith("containerd-shim"):
            return "shim"
        if name == "runc":
            return "runc"
        return None

    def adopts(self, name: str) -> bool:
        # A shim daemonizes (double fork): by design it runs re-parented to init.
        return name.startswith("containerd-shim")

    def own_pids(self) -> set[int]:
        return {p.pid for p in self.daemon.procs}

    def close(self) -> Cleanup:
        notes: dict[str, Any] = {}
        if self.daemon.alive:
            self.family()
        notes["stop"] = self.daemon.stop()
        left = self.remaining()
        left_by_daemon = {"processes": describe(left), "mounts": mounts_under(self.root)}
        notes["killed"] = kill_all(left)
        notes["unmounted"] = unmount_under(self.root)
        notes["cgroups"] = remove_cgroups(self.daemon.cgroup_parent)
        notes["reaped"] = self.reap_adopted()
        notes["shim_sockets_removed"] = remove_shim_sockets(self.daemon, self.created)
        procs_left = describe(p for p in self.family_seen if alive(p))
        mounts_left = mounts_under(self.root)
        if not mounts_left and not procs_left:
            # The image and container layers are the bulk; the log and config stay.
            for sub in (self.daemon.data, self.daemon.exec_root):
                shutil.rmtree(sub, ignore_errors=True)
            release(self.root)
        return Cleanup(len(self.family_seen), left_by_daemon, procs_left, mounts_left, notes)


def import_busybox(api: docker.APIClient, busybox: Path) -> str:
    """`docker import` of a root filesystem holding the static busybox (the layer of the
    BoxLite test image): no registry involved. Returns the image reference."""
    layer = _layer_tar(busybox.read_bytes())
    tag = hashlib.sha256(layer).hexdigest()[:12]
    ref = f"{IMAGE_REPO}:{tag}"
    api.import_image_from_data(layer, repository=IMAGE_REPO, tag=tag,
                               changes=["ENV PATH=/bin", 'CMD ["/bin/sh"]'])
    api.inspect_image(ref)          # raises when the import did not produce it
    return ref
