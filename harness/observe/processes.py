"""Process observation: the harness as child subreaper, and a sampler that records every
descendant (pid, start time, name, parent, status over time) before anything reaps it.

Processes are identified by (pid, start time) so a recycled pid is never mistaken for ours;
`kill_leftovers` only ever signals a process whose identity still matches what was recorded.
The sampler reads /proc itself (procfs.py), with psutil's values: start times are psutil's
`create_time()`, equal to those taken with psutil elsewhere in the harness.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from harness.common.wait import Deadline, poll_until
from harness.observe import procfs
from harness.observe.procfs import Listing, ProcStat

PR_SET_CHILD_SUBREAPER = 36
SAMPLE_INTERVAL_S = 0.1
# Opt-in (idle_interval_s; off by default): once the tree (processes, their statuses and
# parents) has not changed for STABLE_AFTER_S, the background sampler slows to
# IDLE_INTERVAL_S until the next change, and a child that becomes waitable still wakes it
# within SAMPLE_INTERVAL_S. It cut the sampler's CPU 3x on a quiet tree (bench-ledger), but it
# is off in scenarios: checks read exit times from the background samples (a boot failure
# is told from a timeout by when the ledger saw the shim end, 29.5 s against 30 s), and a
# 0.5 s resolution turned a runtime's truthful answer into a violation in a CI run.
IDLE_INTERVAL_S = 0.5
STABLE_AFTER_S = 1.0
# A process first seen between fork and exec shows its parent's command line; while young and
# unclassified, its identity is read again (exec may keep the name, e.g. python -> python).
YOUNG_S = 2.0


def become_subreaper() -> bool:
    """Make this process adopt orphaned descendants, so none escapes observation."""
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def is_subreaper() -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    PR_GET_CHILD_SUBREAPER = 37
    val = ctypes.c_int(0)
    return libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(val), 0, 0, 0) == 0 and val.value == 1


Key = tuple[int, float]


@dataclass
class ProcRecord:
    pid: int
    create_time: float
    name: str
    ppid: int
    cmd: str
    first_seen: float
    last_seen: float
    statuses: list[tuple[float, str]] = field(default_factory=list)
    ppids: list[tuple[float, int]] = field(default_factory=list)
    zombie_since: float | None = None
    zombie_ppid: int | None = None      # its parent when it became a zombie (who must reap it)
    gone_at: float | None = None
    box: str | None = None              # the box it belongs to, from its command line
    adopted: bool = False           # re-parented to the harness (an orphan)

    @property
    def key(self) -> Key:
        return (self.pid, self.create_time)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "create_time": self.create_time, "name": self.name,
                "ppid": self.ppid, "cmd": self.cmd, "first_seen": round(self.first_seen, 3),
                "last_seen": round(self.last_seen, 3), "statuses": self.statuses,
                "zombie_since": self.zombie_since, "zombie_ppid": self.zombie_ppid,
                "gone_at": self.gone_at, "adopted": self.adopted, "box": self.box}


@dataclass
class Sample:
    t: float
    count: int
    zombies: list[dict[str, Any]]       # pid, ppid, name of each zombie in this sample
    by_name: dict[str, int]


_BOX_IN_CMD = re.compile(r"/boxes/([A-Za-z0-9_-]+)(?:/|\s|$)")


def box_of(cmd: str) -> str | None:
    """The box id a runtime process belongs to, from the box folder in its command line
    (bwrap binds `<home>/boxes/<id>/...`; the shim runs `<home>/boxes/<id>/bin/boxlite-shim`)."""
    m = _BOX_IN_CMD.search(cmd or "")
    return m.group(1) if m else None


def classify(name: str, cmd: str) -> str:
    """The runtime's processes in its own words: shim, vm, bwrap, host or other."""
    if "boxlite-shim" in cmd or name == "boxlite-shim":
        return "shim"
    if name.startswith("libkrun"):
        return "vm"
    if name == "bwrap":
        return "bwrap"
    if "host_main.py" in cmd or "host_main.mjs" in cmd:        # the Python or Node host
        return "host"
    return "other"


class ProcessLedger:
    """Samples the descendants of `root_pid` on a thread; reaps only adopted orphans."""

    def __init__(self, root_pid: int | None = None, interval_s: float = SAMPLE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic,
                 idle_interval_s: float | None = None,
                 on_sample: Callable[[Sample], None] | None = None,
                 list_procs: Callable[[], Listing] | None = None) -> None:
        self.root_pid = root_pid or os.getpid()
        self.interval_s = interval_s
        self.idle_interval_s = idle_interval_s
        self.clock = clock
        self.signature: frozenset[tuple[Key, str, int]] = frozenset()
        self.t0 = clock()
        self.on_sample = on_sample
        self.records: dict[Key, ProcRecord] = {}
        self.samples: list[Sample] = []
        self.own_children: set[int] = set()     # pids the harness waits on itself (hosts)
        self.exempt: set[int] = set()           # a scenario's own processes, not the runtime's
        self.baseline: set[Key] = set()
        self.errors: list[str] = []
        self._list = list_procs or procfs.ProcTree(self.root_pid).list
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._sample_lock = threading.Lock()

    # -- sampling -------------------------------------------------------------------------
    def snapshot_baseline(self) -> None:
        listing = self._safe_list()
        if listing and listing.procs:
            boot = procfs.boot_time()
            self.baseline.update((st.pid, procfs.create_time(st.start_ticks, boot))
                                 for st in listing.procs.values())

    def _safe_list(self) -> Listing | None:
        try:
            return self._list()
        except OSError as exc:
            self.errors.append(f"listing descendants failed: {exc!r}")
            return None

    def sample(self) -> Sample:
        # Scenarios sample synchronously too (to judge what is alive *now*): one at a time.
        with self._sample_lock:
            return self._sample()

    def _sample(self) -> Sample:
        now = self.clock() - self.t0
        seen: set[Key] = set()
        zombies = []
        by_name: dict[str, int] = {}
        listing = self._safe_list()
        procs = listing.procs.values() if listing else ()
        unread = listing.unread if listing else {}
        self.errors.extend(f"reading pid {pid} failed: {why}" for pid, why in unread.items())
        # Read each sample, as psutil reads it for every create_time(): equal identities.
        boot = procfs.boot_time() if procs else 0.0
        for st in procs:
            key = (st.pid, procfs.create_time(st.start_ticks, boot))
            if key in self.baseline:
                continue
            status, ppid = st.status, st.ppid
            rec = self.records.get(key)
            if rec is None:
                argv = procfs.read_argv(st.pid)
                full = " ".join(argv or ())
                rec = ProcRecord(st.pid, key[1], procfs.name_of(st, argv), ppid, full[:300],
                                 now, now, box=box_of(full))
                self.records[key] = rec
            else:
                self._reidentify(rec, st, now)
            seen.add(key)
            rec.last_seen = now
            if not rec.statuses or rec.statuses[-1][1] != status:
                rec.statuses.append((round(now, 3), status))
            if not rec.ppids or rec.ppids[-1][1] != ppid:
                rec.ppids.append((round(now, 3), ppid))
                rec.ppid = ppid
            kind = classify(rec.name, rec.cmd)
            # An orphan the subreaper adopted: seen under another parent first, or a runtime
            # process (which is never our own child) found under us. Anything else directly
            # under us is a child the harness spawned and waits on itself: never reaped here.
            if ppid == self.root_pid and st.pid not in self.own_children and (
                    rec.ppids[0][1] != self.root_pid or kind in ("shim", "vm", "bwrap")):
                rec.adopted = True
            by_name[kind] = by_name.get(kind, 0) + 1
            if status == psutil.STATUS_ZOMBIE:
                if rec.zombie_since is None:
                    rec.zombie_since = now
                    rec.zombie_ppid = ppid
                zombies.append({"pid": st.pid, "ppid": ppid, "name": rec.name, "kind": kind})
                if rec.adopted:
                    self._reap(st.pid)
        for key, rec in list(self.records.items()):
            if key in seen:
                rec.gone_at = None
            elif listing is not None and rec.pid not in unread and rec.gone_at is None:
                # Gone only when the listing worked and the process was really absent.
                rec.gone_at = now
        s = Sample(round(now, 3), len(seen), zombies, by_name)
        self.signature = frozenset((k, self.records[k].statuses[-1][1], self.records[k].ppid)
                                   for k in seen)
        with self._lock:
            self.samples.append(s)
        if self.on_sample:
            self.on_sample(s)
        return s

    def _reidentify(self, rec: ProcRecord, st: ProcStat, now: float) -> None:
        """First seen between fork and exec (or renamed, like the shim's 'libkrun VM'): take
        the new identity, keep the old name visible."""
        argv = None
        if len(st.comm) >= procfs.COMM_LEN:     # psutil's name() reads it for these
            argv = procfs.read_argv(st.pid)
        name = procfs.name_of(st, argv)
        if st.status == psutil.STATUS_ZOMBIE or (name == rec.name and not (
                now - rec.first_seen < YOUNG_S and classify(rec.name, rec.cmd) == "other")):
            return
        if argv is None:
            argv = procfs.read_argv(st.pid)
        if argv is not None:
            full = " ".join(argv)
            rec.cmd = full[:300] or rec.cmd
            rec.box = box_of(full) or rec.box
        if not rec.name.startswith("libkrun") and not name.startswith("libkrun"):
            rec.name = name
        elif name.startswith("libkrun"):
            rec.name = name

    def _reap(self, pid: int) -> None:
        # Only orphans we adopted: reaping them is our duty as subreaper, and it steals
        # no exit status from anyone else.
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    def start(self) -> ProcessLedger:
        self.snapshot_baseline()
        self._thread = threading.Thread(target=self._loop, name="process-ledger", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        last: frozenset | None = None
        stable_since = self.clock()
        while not self._stop.is_set():
            t = self.clock()
            self.sample()
            if self.signature != last:
                last, stable_since = self.signature, t
            # Slowed or not, a child that becomes waitable is sampled (and, if an adopted
            # orphan, reaped) within one fast interval, as init would: a zombie left standing
            # longer reads as a live process to a runtime recovering its boxes. While one
            # waits (a child someone else will reap), no slowing down: plain fast sampling.
            waiting = self.child_waitable()
            pause = self.interval_s if waiting else self.next_interval(t - stable_since)
            end = t + pause
            while not self._stop.is_set() and self.clock() < end:
                self._stop.wait(max(0.0, min(self.interval_s, end - self.clock())))
                if pause > self.interval_s and self.child_waitable():
                    break

    def child_waitable(self) -> bool:
        """Whether a child of this process has exited and waits to be reaped (it is not
        reaped here: WNOWAIT). Only for a ledger rooted at this process."""
        if self.root_pid != os.getpid():
            return False
        try:
            return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return False

    def next_interval(self, stable_for_s: float) -> float:
        """The pause before the next background sample, given how long nothing changed."""
        if self.idle_interval_s is not None and stable_for_s >= STABLE_AFTER_S:
            return max(self.interval_s, self.idle_interval_s)
        return self.interval_s

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.sample()

    # -- questions ------------------------------------------------------------------------
    def _records(self) -> list[ProcRecord]:
        with self._sample_lock:             # a snapshot: the sampler thread adds records
            return list(self.records.values())

    def kinds(self, *kinds: str) -> list[ProcRecord]:
        return [r for r in self._records() if classify(r.name, r.cmd) in kinds]

    def alive(self, rec: ProcRecord) -> bool:
        """Still running (not a zombie) and still the same process (pid plus start time)."""
        try:
            p = psutil.Process(rec.pid)
            return p.create_time() == rec.create_time and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def leftovers(self, kinds: tuple[str, ...] | None = None) -> list[ProcRecord]:
        recs = self._records() if kinds is None else self.kinds(*kinds)
        return [r for r in recs if self.alive(r)]

    def zombie_records(self) -> list[ProcRecord]:
        return [r for r in self._records()
                if r.zombie_since is not None and r.pid not in self.exempt]

    def kill_leftovers(self, wait_s: float = 5.0) -> list[dict[str, Any]]:
        """SIGCONT then SIGKILL every recorded process still alive; return what was killed."""
        killed = []
        for rec in self.leftovers():
            try:
                p = psutil.Process(rec.pid)
                if p.create_time() != rec.create_time:
                    continue
                p.send_signal(signal.SIGCONT)   # a frozen process must be able to die
                p.kill()
                killed.append({**rec.to_json(), "killed": True})
            except psutil.Error:
                continue
        deadline = Deadline(wait_s, "the killed leftovers to end")
        for item in killed:
            if not poll_until(lambda item=item: self._ended(item), deadline.remaining(),
                              f"killed leftover pid {item['pid']} to end", 0.02):
                item["unkillable"] = proc_dump(item["pid"])
        return killed

    def _ended(self, item: dict[str, Any]) -> bool:
        """Gone, its pid reused, or a zombie (reaped here if it is an adopted orphan)."""
        try:
            p = psutil.Process(item["pid"])
            if p.create_time() != item["create_time"]:
                return True
            if p.status() == psutil.STATUS_ZOMBIE:
                if p.ppid() == self.root_pid and p.pid not in self.own_children:
                    self._reap(p.pid)
                return True
        except psutil.Error:
            return True
        return False


def proc_dump(pid: int) -> dict[str, str]:
    """What /proc says about a process that will not die, for the report."""
    out = {}
    for name in ("status", "wchan", "stack", "stat"):
        try:
            out[name] = Path(f"/proc/{pid}/{name}").read_text(errors="replace")[:4000]
        except OSError as exc:
            out[name] = f"<unreadable: {exc}>"
    return out
