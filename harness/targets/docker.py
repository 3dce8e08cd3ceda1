"""Docker as the reference target: a private dockerd (harness.targets.dockerd), a locally
imported busybox image, and the pattern's faults (a start that fails, the shim SIGKILLed,
dockerd signalled during a start, a paused container).

Containers run with network_mode none from an image imported from a tar built from the local
busybox, never pulled. At the end the daemon is stopped, whatever it left running is killed,
and whatever it mounted under its folder is unmounted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import psutil

from harness.common.procs import alive, kill_all
from harness.common.wait import WaitTimeout, wait_for
from harness.faults.base import Fault, FaultSet
from harness.faults.shim import KillShim, Proc
from harness.leftovers.markers import mark, release
from harness.leftovers.mounts import unmount_under
from harness.observe.history import History
from harness.runtime.image import BUSYBOX, _layer_tar
from harness.targets.base import (
    STOP_BOUND_S,
    Cleanup,
    RecordView,
    Started,
    Target,
    TargetUnavailable,
    describe,
    keep_with_report,
    scan,
)
from harness.targets.dockerapi import API_ERRORS, OpLog
from harness.targets.dockerd import (
    DOCKERD,
    UNSHARE,
    DockerDaemon,
    cgroup_dirs,
    remove_cgroups,
    remove_shim_sockets,
    remove_stack_dumps,
)

# dockerd picks overlay2 where it works; vfs needs nothing from the kernel but is slow.
STORAGE_DRIVERS: tuple[str | None, ...] = (None, "vfs")
STORAGE_TROUBLE = re.compile(r"overlay|storage.driver|graphdriver|driver not supported", re.I)
IMAGE_REPO = "boxlite-chaos/busybox"
MISSING_ENTRYPOINT = "/nonexistent/entrypoint"
SLEEP = ["sleep", "3600"]
# Statuses nothing will move on from by itself (Docker's own words).
TRANSITIONAL = ("restarting", "removing")


def in_cgroup(pid: int, needle: str) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False


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
            except API_ERRORS:
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

    def __init__(self, root: Path, history: History | None = None,
                 keep: Path | None = None) -> None:
        """`root`: the daemon's folder (daemon_root's); `keep`: the report's symlink to it,
        where its log and config go at close when `root` had to be a /tmp folder."""
        super().__init__()
        self.root = root
        self.keep = keep
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
        if shutil.which(UNSHARE) is None:
            raise TargetUnavailable("unshare is not installed (apt-get install util-linux): "
                                    "dockerd's mounts need a namespace of their own")
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
            except (TargetUnavailable, *API_ERRORS) as exc:
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
            except API_ERRORS:
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
            except API_ERRORS as exc:
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
        except API_ERRORS as exc:
            views.append(RecordView(path, read_error=f"{type(exc).__name__}: {exc}"))
        path = f"{moment}.list"
        try:
            rows = [r for r in self.api.containers(all=True, filters={"id": iid})
                    if r["Id"] == iid]
            views.append(RecordView(path, bool(rows), rows[0]["State"] if rows else None,
                                    transitional=bool(rows) and rows[0]["State"] in TRANSITIONAL,
                                    raw={"Status": rows[0]["Status"]} if rows else None))
        except API_ERRORS as exc:
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
        # The daemon's mounts live in its own mount namespace: those a process it left still
        # holds there (a leaked shim's), read through that process; they go with it.
        left_by_daemon = {"processes": describe(left),
                          "mounts": self.daemon.mounts(p.pid for p in left)}
        notes["killed"] = kill_all(left)
        notes["unmounted"] = unmount_under(self.root)         # any made in this namespace
        notes["stack_dumps_removed"] = remove_stack_dumps(self.family_seen)
        notes["cgroups"] = remove_cgroups(self.daemon.cgroup_parent)
        notes["reaped"] = self.reap_adopted()
        notes["shim_sockets_removed"] = remove_shim_sockets(self.daemon, self.created)
        procs_left = describe(p for p in self.family_seen if alive(p))
        mounts_left = self.daemon.mounts(p.pid for p in self.family_seen if alive(p))
        if not mounts_left and not procs_left:
            # The image and container layers are the bulk; the log and config stay.
            for sub in (self.daemon.data, self.daemon.exec_root):
                shutil.rmtree(sub, ignore_errors=True)
            if self.keep is not None:
                notes["kept_in_report"] = str(keep_with_report(self.root, self.keep))
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
