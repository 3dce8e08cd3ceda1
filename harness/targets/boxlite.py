"""BoxLite as a target: the runtime host is the daemon (the runner flavour: SIGTERM runs a
graceful shutdown, like upstream's production runner), a box is the instance, and the box's
bwrap, shim and VM processes are its helpers.

A start that fails: here every VM fails on its own about 17 s after start (nested PVM); where
guests boot, a box starved of memory fails instead. Releases before 0.10 pull their guest base
image at first start, so they run only against a local registry on loopback
(harness.runtime.registry); without one they are unavailable, never pointed at the network.
"""

from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from harness.common.errors import HarnessError, HostError
from harness.common.procs import alive, kill_all
from harness.common.wait import WaitTimeout, wait_for
from harness.faults.base import Fault, FaultSet
from harness.faults.shim import Proc, box_tree, freeze_box, kill_shim, wait_for_shim
from harness.judge.checks import SETTLED
from harness.leftovers.markers import mark
from harness.leftovers.mounts import mounts_under
from harness.observe.history import History
from harness.observe.processes import classify
from harness.observe.records import RecordRead, read_host, read_store
from harness.runtime.host import RUNNER, HostFactory, RuntimeHost, RuntimeOpError
from harness.runtime.image import BusyboxImage
from harness.runtime.registry import LocalRegistry, needs_registry
from harness.runtime.spec import RuntimeEnv
from harness.scenario.shutdown import arrange, failed_box_options
from harness.scenario.steps import START_BOUND_S
from harness.targets.base import (
    HELPERS_GONE_S,
    Cleanup,
    RecordView,
    Started,
    Target,
    TargetUnavailable,
    descendants,
    describe,
    scan,
    short_root,
)

# The longest socket a home holds (0.9.x bind it there; 0.10.x use /tmp/bl-<uid>/).
LONGEST_SOCKET = "home1/boxes/XXXXXXXXXXXX/sockets/ready.sock"


class BoxliteTarget(Target):
    kind = "boxlite"

    def __init__(self, env: RuntimeEnv, image: BusyboxImage, workdir: Path,
                 history: History | None = None, guests_boot: bool = False) -> None:
        super().__init__()
        self.env = env
        self.image = image
        self.workdir = workdir
        # Releases before 0.10 bind the box's sockets inside its home: keep the home short
        # enough for them (in /tmp if need be; moved into the scenario's folder at close).
        self.root = short_root(workdir, LONGEST_SOCKET, prefix="chaos-boxlite")
        if self.root.parent == Path("/tmp"):
            # Outside the report: a sweep removes it should this process die before close().
            mark(self.root, "boxlite-target", workdir=str(workdir))
        self.factory = HostFactory(env, self.root, history)
        self.guests_boot = guests_boot
        self.flavour = RUNNER
        self.registry: LocalRegistry | None = None
        self.host: RuntimeHost | None = None

    def open(self) -> BoxliteTarget:
        if needs_registry(self.env.version):
            self._open_registry()
        try:
            self.host = self.factory.start(flavour=self.flavour)
        except HarnessError as exc:
            if self.registry is not None:
                self.registry.stop()
            raise TargetUnavailable(f"the runtime host did not start: {exc}") from exc
        self.family()
        return self

    def _open_registry(self) -> None:
        """Releases before 0.10 pull debian:bookworm-slim at first start: serve it from a
        registry on loopback, or give up (never let them reach the network)."""
        try:
            self.registry = LocalRegistry(self.workdir / "registry").start()
            self.registry.push(self.image)
        except (HarnessError, WaitTimeout, OSError) as exc:
            if self.registry is not None:
                self.registry.stop()
            raise TargetUnavailable(f"boxlite {self.env.version} pulls debian:bookworm-slim "
                                    "at first start, and no local registry could serve it: "
                                    f"{exc}") from exc
        self.flavour = dataclasses.replace(self.flavour, registries=(self.registry.host,))

    @property
    def label(self) -> str:
        return self.env.spec.text

    @property
    def version(self) -> str:
        return self.env.version

    @property
    def known_version(self) -> str | None:
        return self.env.version

    @property
    def home(self) -> Path:
        assert self.host is not None, "target not opened"
        return self.host.home

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "flavour": self.flavour.label,
                "guests_boot": self.guests_boot, "image": self.image.digest,
                "registry": self.registry.host if self.registry else None}

    def _options(self, failing: bool) -> dict[str, Any]:
        extra = failed_box_options(self.guests_boot) if failing else {}
        return {"rootfs_path": str(self.image.path), "auto_remove": False, **extra}

    # -- instances -----------------------------------------------------------------------
    def create(self, name: str, failing: bool = False) -> str:
        assert self.host is not None
        return self.host.call("create", timeout_s=120, options=self._options(failing),
                              name=name)["id"]

    def start_async(self, iid: str) -> Future:
        assert self.host is not None
        host, t0 = self.host, time.monotonic()
        sent = host.send("start", box_id=iid)
        out: Future = Future()

        def done(f: Future) -> None:
            # Through host.result (the future is done: no wait) so the reply is in the history.
            try:
                host.result(f, 0)
                error = None
            except RuntimeOpError as exc:
                error = {"type": exc.type, "message": exc.message}
            except HostError as exc:
                error = {"type": "HostError", "message": str(exc)}
            out.set_result(Started(iid, error, time.monotonic() - t0))

        sent.add_done_callback(done)
        return out

    def start(self, iid: str, timeout_s: float = START_BOUND_S) -> Started:
        return super().start(iid, timeout_s)

    def inspect(self, iid: str, moment: str) -> list[RecordView]:
        reads: list[RecordRead] = []
        if self.host is not None and self.host.alive:
            reads += read_host(self.host, iid, moment)
        reads.append(read_store(self.home, iid, f"{moment}.store"))
        return [self._view(iid, r) for r in reads]

    def _view(self, iid: str, r: RecordRead) -> RecordView:
        running = r.status == "running" and bool(self.helpers(iid))
        return RecordView(r.path, r.present, r.status,
                          failed=(r.status == "failed") if r.present else None,
                          error=r.reason, exposes_error=r.exposes_reason,
                          transitional=r.present and r.status not in SETTLED and not running,
                          read_error=r.error, raw=r.raw)

    def _helpers(self, iid: str) -> list[Proc]:
        # bwrap's arguments and the shim's path name the box's folder; box_tree also finds
        # the processes under shim.pid.
        mark = f"{self.home}/boxes/{iid}/"
        procs = set(scan(lambda p, cmd: mark in cmd))
        procs.update(box_tree(self.home, iid) or [])
        return sorted((p for p in procs if alive(p)), key=lambda p: p.pid)

    def wait_helpers(self, iid: str, timeout_s: float = 60.0) -> list[Proc]:
        tree = wait_for_shim(self.home, iid, timeout_s)
        self.seen.setdefault(iid, set()).update(tree)
        return tree

    def kill_helper(self, iid: str) -> Fault:
        return kill_shim(self.home, iid, self.wait_helpers(iid))

    def freeze(self, iid: str) -> Fault:
        return freeze_box(self.home, iid, self.wait_helpers(iid))

    def populate(self, faults: FaultSet) -> dict[str, str]:
        assert self.host is not None
        boxes = arrange(self.host, faults, 3, self._options(False), self._options(True))
        for b in boxes:
            self.seen.setdefault(b.id, set()).update(b.tree)
        names = {"initializing": "starting", "hung": "frozen"}
        return {names.get(b.state, b.state): b.id for b in boxes}

    # -- the daemon ----------------------------------------------------------------------
    @property
    def daemon_alive(self) -> bool:
        return self.host is not None and self.host.alive

    def signal_daemon(self, sig: int) -> None:
        assert self.host is not None
        self.host.signal(sig)

    def wait_daemon_exit(self, timeout_s: float) -> float | None:
        assert self.host is not None
        try:
            return self.host.wait_exit(timeout_s).elapsed_s
        except HostError:
            return None

    def start_daemon(self) -> None:
        assert self.host is not None
        self.host = self.factory.restart(self.host, self.flavour)
        self.family()

    def _family(self) -> list[Proc]:
        """The hosts and everything under them, whatever names the home in its command
        line (0.10's bwrap and shim), and each box's tree under shim.pid (0.9's shim,
        which names neither)."""
        home = str(self.home)
        hosts = {h.pid for h in self.factory.hosts if h.alive}
        under = {p.pid for pid in hosts for p in descendants(pid)}
        procs = set(scan(lambda p, cmd: p.pid in hosts or p.pid in under or home in cmd))
        boxes = self.home / "boxes"
        for box in (boxes.iterdir() if boxes.is_dir() else ()):
            procs.update(box_tree(self.home, box.name) or [])
        return sorted((p for p in procs if alive(p)), key=lambda p: p.pid)

    def family_kind(self, name: str, cmd: str) -> str | None:
        kind = classify(name, cmd)
        return None if kind == "other" else kind

    def own_pids(self) -> set[int]:
        return {h.pid for h in self.factory.hosts if h.proc is not None}

    def close(self) -> Cleanup:
        notes: dict[str, Any] = {}
        for host in self.factory.hosts:
            if host.alive:
                self.family()
                notes.setdefault("closed_hosts", []).append(host.close())
        # The shims' parent watchdog ends what the hosts left (within about 8 s).
        try:
            wait_for(lambda: not self.remaining(), HELPERS_GONE_S,
                     "the box processes to end after their host", interval_s=0.05)
        except WaitTimeout:
            pass
        left = self.remaining()
        root = self.factory.root.resolve()
        left_by_daemon = {"processes": describe(left), "mounts": mounts_under(root)}
        notes["killed"] = kill_all(left)
        self.factory.close_all()
        notes["reaped"] = self.reap_adopted()
        if self.registry is not None:
            self.registry.stop()
        procs_left = describe(p for p in self.family_seen if alive(p))
        mounts_left = mounts_under(root)
        if root != self.workdir.resolve() and not mounts_left:
            notes["homes"] = self._bring_home()
        return Cleanup(len(self.family_seen), left_by_daemon, procs_left, mounts_left, notes)

    def _bring_home(self) -> str:
        """Move the homes from their short folder into the scenario's (same filesystem: a
        rename), linking hosts/ where the report looks for the hosts' stderr."""
        dest = self.workdir / "runtime"
        try:
            os.rename(self.root, dest)
        except OSError as exc:
            return f"left in {self.root}: {exc}"
        if not (self.workdir / "hosts").exists():
            (self.workdir / "hosts").symlink_to(Path("runtime") / "hosts")
        return f"moved from {self.root} to {dest}"
