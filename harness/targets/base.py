"""The target seam: what a conformance scenario asks of a runtime, whichever runtime it is.

A `Target` is one runtime and its daemon (BoxLite: the runtime host embedding the SDK; Docker:
a private dockerd). It creates instances (boxes, containers), starts them, reads their
records through every read path it has, signals and restarts its daemon, injects the pattern's
faults, and names its processes: the daemon's family, and each instance's helpers.
"""

from __future__ import annotations

import abc
import itertools
import os
import shutil
import signal
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.common.errors import HarnessError
from harness.common.procs import Proc, alive
from harness.common.wait import WaitTimeout, wait_for
from harness.faults.base import Fault, FaultSet
from harness.leftovers.markers import MARKER

# The pattern's bound for a daemon told to stop (upstream's runner: a 60 s stop timeout).
STOP_BOUND_S = 60.0
# How long a failed instance's helpers may take to go: the BoxLite shim's parent watchdog
# (about 8 s), and dockerd's cleanup of a container whose shim died.
HELPERS_GONE_S = 10.0
# sun_path holds 108 bytes with its NUL; containerd refuses anything over 104.
SUN_PATH_MAX = 107

_roots = itertools.count(1)


class TargetUnavailable(HarnessError):
    """This machine cannot run the target; the message says why (its scenarios skip)."""


@dataclass
class RecordView:
    """One read of an instance's record through one read path of the target."""

    path: str                       # "<moment>.<path>", e.g. "after_restart.inspect"
    present: bool = False
    status: str | None = None       # in the runtime's own words
    failed: bool | None = None      # None: this path cannot tell a failed record from another
    error: str | None = None        # the error the runtime kept, verbatim
    exposes_error: bool = False     # whether this path shows the error at all
    transitional: bool = False      # stuck between states (nothing will settle it)
    read_error: str | None = None   # the path could not be read: its checks say unknown
    raw: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Started:
    """How a start ended: the runtime's error, or None when the instance started."""

    iid: str
    error: dict[str, Any] | None
    elapsed_s: float


@dataclass
class Cleanup:
    """What a target's teardown found: what its daemon left by itself, and what is still
    there after the teardown stopped, killed and unmounted everything it could."""

    observed: int                                           # family processes ever seen
    left_by_daemon: dict[str, list] = field(default_factory=dict)
    processes_left: list[dict[str, Any]] = field(default_factory=list)
    mounts_left: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def describe(procs: Iterable[Proc], kinds: Callable[[Proc], str] | None = None) -> list[dict]:
    return [{"pid": p.pid, "name": p.name, "create_time": p.create_time,
             **({"kind": kinds(p)} if kinds else {})} for p in procs]


def as_proc(p: psutil.Process) -> Proc | None:
    try:
        return Proc(p.pid, p.create_time(), p.name())
    except psutil.Error:
        return None


def cmdline(proc: Proc) -> str:
    p = proc.same()
    try:
        return " ".join(p.cmdline()) if p is not None else ""
    except psutil.Error:
        return ""


def descendants(root_pid: int | None = None) -> list[psutil.Process]:
    """Every process under the harness. The harness is a child subreaper, so whatever a
    daemon spawns and orphans (a containerd shim, a box's bwrap) is still under it."""
    try:
        return psutil.Process(root_pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []


def scan(match: Callable[[psutil.Process, str], bool]) -> list[Proc]:
    """Alive descendants for which match(process, command line) is true."""
    out = []
    for p in descendants():
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if match(p, cmd):
            proc = as_proc(p)
            if proc is not None:
                out.append(proc)
    return out


def short_root(preferred: Path, longest: str, limit: int = SUN_PATH_MAX,
               prefix: str = "chaos") -> Path:
    """`preferred` (created) when `preferred/longest` fits in `limit` bytes (the longest
    unix socket the runtime will bind under it), else a fresh folder under /tmp."""
    preferred = preferred.resolve()
    if len(str(preferred / longest)) <= limit:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred
    root = Path("/tmp") / f"{prefix}-{os.getpid()}-{next(_roots)}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return root


def keep_with_report(root: Path, link: Path, tmp: Path = Path("/tmp")) -> Path | None:
    """When `root` is short_root's fallback folder directly under `tmp` (the report's path was
    too long for its sockets), move what it still holds (a daemon's log and config, once its
    bulk is gone) to `link`, the report's symlink to it, and remove the folder: nothing of the
    run stays in /tmp, and nothing of it is lost. Returns the report's folder, or None when
    `root` is in the report already or `link` is not a symlink to it (then nothing moves).
    The owner's marker is not copied; release(root) is still the caller's."""
    if root.resolve().parent != tmp.resolve():
        return None
    if not (link.is_symlink() and link.resolve() == root.resolve()):
        return None
    link.unlink()
    shutil.copytree(root, link, symlinks=True, ignore=shutil.ignore_patterns(MARKER))
    shutil.rmtree(root, ignore_errors=True)
    return link


class Target(abc.ABC):
    """One runtime with its daemon. Scenarios drive it; checks judge what it did."""

    kind: str = ""                  # "docker" | "boxlite"

    def __init__(self) -> None:
        self.seen: dict[str, set[Proc]] = {}        # helpers ever seen, per instance
        self.family_seen: set[Proc] = set()

    # -- what it is ----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def label(self) -> str:
        """The column name in the conformance matrix, e.g. 'boxlite==0.10.8'."""

    @property
    @abc.abstractmethod
    def version(self) -> str: ...

    @property
    def known_version(self) -> str | None:
        """The version the known-failures table keys this target's entries on; None: the
        table does not apply."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"target": self.kind, "label": self.label, "version": self.version}

    # -- instances -----------------------------------------------------------------------
    @abc.abstractmethod
    def create(self, name: str, failing: bool = False) -> str:
        """A new instance; with `failing`, one whose start fails on its own."""

    @abc.abstractmethod
    def start_async(self, iid: str) -> Future:
        """Send a start; the Future resolves to a `Started`."""

    def start(self, iid: str, timeout_s: float = 120.0) -> Started:
        return self.start_async(iid).result(timeout=timeout_s)

    @abc.abstractmethod
    def inspect(self, iid: str, moment: str) -> list[RecordView]:
        """The instance's record through every read path the target has."""

    @abc.abstractmethod
    def _helpers(self, iid: str) -> list[Proc]:
        """The instance's helper processes alive now (shim, VM, container process...)."""

    def helpers(self, iid: str) -> list[Proc]:
        procs = self._helpers(iid)
        self.seen.setdefault(iid, set()).update(procs)
        self.family_seen.update(procs)
        return procs

    def helpers_left(self, iids: Iterable[str], bound_s: float = HELPERS_GONE_S,
                     ) -> dict[str, list[dict[str, Any]]]:
        """Wait (up to `bound_s`) for the instances' helpers to go; those still alive then."""
        iids = list(iids)
        try:
            wait_for(lambda: not any(self.helpers(i) for i in iids), bound_s,
                     "the failed instances' helpers to end", interval_s=0.1)
        except WaitTimeout:
            pass
        return {i: describe(self.helpers(i)) for i in iids}

    def wait_helpers(self, iid: str, timeout_s: float = 60.0) -> list[Proc]:
        """Wait until the instance's helpers are spawned (its start is under way)."""
        return wait_for(lambda: self.helpers(iid), timeout_s,
                        f"the helpers of {self.kind} instance {iid} to be spawned",
                        interval_s=0.005)

    @abc.abstractmethod
    def kill_helper(self, iid: str) -> Fault:
        """SIGKILL the instance's shim (waiting for it to be spawned first)."""

    @abc.abstractmethod
    def freeze(self, iid: str) -> Fault:
        """Freeze the instance: its processes make no progress until healed."""

    @abc.abstractmethod
    def populate(self, faults: FaultSet) -> dict[str, str]:
        """One instance in each state a daemon told to stop must cope with: starting or
        running, frozen, failed. Returns state -> instance id."""

    # -- the daemon ----------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def daemon_alive(self) -> bool: ...

    @abc.abstractmethod
    def signal_daemon(self, sig: int) -> None: ...

    @abc.abstractmethod
    def wait_daemon_exit(self, timeout_s: float) -> float | None:
        """Seconds from the last signal to the daemon's exit; None if it did not exit."""

    @abc.abstractmethod
    def start_daemon(self) -> None:
        """Start the daemon again on the same state (after it exited)."""

    def restart_daemon(self, sig: int = signal.SIGTERM,
                       timeout_s: float = STOP_BOUND_S) -> float | None:
        """Signal the daemon, wait for its exit (SIGKILL past `timeout_s`), start it again.
        Returns the exit time from the signal (None: it had to be killed)."""
        self.signal_daemon(sig)
        exit_s = self.wait_daemon_exit(timeout_s)
        if exit_s is None:
            self.signal_daemon(signal.SIGKILL)
            self.wait_daemon_exit(30.0)
        self.start_daemon()
        return exit_s

    @abc.abstractmethod
    def _family(self) -> list[Proc]:
        """Every process of the daemon and its instances alive now."""

    def family(self) -> list[Proc]:
        procs = self._family()
        self.family_seen.update(procs)
        return procs

    def remaining(self) -> list[Proc]:
        """What of the family runs now: found by a scan, or seen before and still alive
        (a process a scan can no longer place, e.g. a box whose shim.pid is gone)."""
        procs = set(self.family()) | {p for p in self.family_seen if alive(p)}
        return sorted(procs, key=lambda p: p.pid)

    @abc.abstractmethod
    def family_kind(self, name: str, cmd: str) -> str | None:
        """The kind of a daemon-side process in the target's words (a zombie under one of
        these is the daemon's to reap); None for any other process."""

    def adopts(self, name: str) -> bool:
        """Whether a process of this name is, by the target's design, re-parented to init
        (here: the subreaper harness), which must then reap it."""
        return False

    def reap_adopted(self) -> list[int]:
        """Reap the zombies of the target's processes that the harness adopted as subreaper
        (init's duty, the harness's here); never one of its own children it waits on."""
        me, own, reaped = os.getpid(), self.own_pids(), []
        try:
            kids = psutil.Process(me).children()
        except psutil.Error:
            return reaped
        for p in kids:
            try:
                if p.pid in own or p.status() != psutil.STATUS_ZOMBIE:
                    continue
                ours = any(f.pid == p.pid and f.create_time == p.create_time()
                           for f in self.family_seen)
                if ours or self.family_kind(p.name(), "") is not None:
                    os.waitpid(p.pid, os.WNOHANG)
                    reaped.append(p.pid)
            except (psutil.Error, ChildProcessError):
                continue
        return reaped

    @abc.abstractmethod
    def own_pids(self) -> set[int]:
        """Processes the harness itself started and waits on (the daemons)."""

    @abc.abstractmethod
    def close(self) -> Cleanup:
        """End everything: stop the daemon, end what it left (by pid and start time), undo
        its mounts; report what was left before and after."""
