"""A process as the harness recorded it (pid plus start time), so that nothing signals a
recycled pid: whether it still runs, waiting for it to end, and killing only what was recorded.

On the ground floor because every room that starts or stops processes needs it: the faults
(a box's shim), the targets (a daemon's family) and the sweep of what dead runs left.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import psutil

from harness.common.wait import poll_until


@dataclass(frozen=True)
class Proc:
    pid: int
    create_time: float
    name: str

    def same(self) -> psutil.Process | None:
        """The process, if `pid` still names the one recorded (same start time); else None."""
        try:
            p = psutil.Process(self.pid)
            return p if p.create_time() == self.create_time else None
        except psutil.Error:
            return None


def alive(proc: Proc) -> bool:
    """Still running (a zombie has ended) and still the same process."""
    p = proc.same()
    try:
        return p is not None and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def watch_ends(procs: Iterable[Proc], t0: float, timeout_s: float,
               interval_s: float = 0.05) -> dict[Proc, float | None]:
    """Poll until every process has ended or `timeout_s` passed; each one's end in seconds
    after `t0` (monotonic), None for one still running at the end."""
    ends: dict[Proc, float | None] = {p: None for p in procs}

    def all_ended() -> bool:
        now = time.monotonic()
        for p, end in ends.items():
            if end is None and not alive(p):
                ends[p] = round(now - t0, 3)
        return all(e is not None for e in ends.values())

    poll_until(all_ended, timeout_s, f"{len(ends)} process(es) to end", interval_s)
    return ends


def kill_all(procs: Iterable[Proc], wait_s: float = 5.0) -> list[dict[str, Any]]:
    """SIGCONT then SIGKILL each process that is still the one recorded (pid + start time),
    and wait (bounded, `wait_s` seconds) for them to end. Not reaped here: the caller's
    subreaper reaps what it adopted. Returns the pid and name of each one signalled."""
    procs = list(procs)
    killed = []
    for proc in procs:
        p = proc.same()
        if p is None:
            continue
        try:
            p.send_signal(signal.SIGCONT)       # a frozen process must be able to die
            p.kill()
            killed.append({"pid": proc.pid, "name": proc.name})
        except psutil.Error:
            continue
    watch_ends(procs, time.monotonic(), wait_s, interval_s=0.02)
    return killed
