"""Per-scenario CPU for `bench-gate`: this module, loaded as a pytest plugin in the gate's
processes, appends one line per test to $BOXLITE_CHAOS_BENCH_CPU; read_scenario_cpu reads them.

It is loaded (`-p harness.jobs.bench.cpu`) only when $BOXLITE_CHAOS_BENCH_CPU names a file.
Around each test it reads the pytest process's own rusage (the harness: sampler, checks,
hypothesis) and, on a thread every 0.2 s, the CPU /proc shows for each of its descendants: the
scenario's hosts, bwraps, shims and VMs (all under the harness, a subreaper), dockerd and its
helpers. It misses a process's CPU after its last reading (up to 0.2 core-s each), processes
that lived less than 0.2 s, and the kernel's work that no process is charged for (threads of
its own, interrupts); its own CPU is reported apart. The rusage of what the harness reaped is
written too, as a cross-check: it misses nested VMs, whose spinning shows in /proc while they
live but does not reach their reaper's rusage.

Sampled from /proc by hand rather than taken from rusage or a benchmark plugin: a nested VM's
CPU shows in /proc while it lives and never reaches its reaper's rusage.
"""

from __future__ import annotations

import json
import os
import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.faults.shim import proc_children

CPU_ENV = "BOXLITE_CHAOS_BENCH_CPU"
CPU_FILE = "scenario-cpu.jsonl"


# How often the tree sampler reads its processes' CPU: a process's CPU after its last sample
# is missed (at most this much per process, a core's worth), and so is a process that lived
# less than one interval; its own cost is counted apart (`sampler_s`).
TREE_INTERVAL_S = 0.2


def rusage_s(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a live process, from /proc/<pid>/stat (None when unreadable)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeCpu:
    """The CPU of this process's descendants (hosts, bwraps, shims, VMs, dockerd: all under
    the harness, a subreaper) while one test runs, read from /proc on a thread every
    TREE_INTERVAL_S: per process (pid, start time), its last reading less its first if it
    was there before the test began. /proc, not rusage: on nested PVM a VM's spinning is
    charged to its process while it lives but does not reach the rusage of whoever reaps it
    (measured: a VM that showed 12.5 s in /proc added 0.3 s to the harness's
    RUSAGE_CHILDREN)."""

    def __init__(self, interval_s: float = TREE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.first: dict[tuple[int, float], float] = {}
        self.last: dict[tuple[int, float], float] = {}
        self.samples = 0
        self.sampler_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-tree-cpu", daemon=True)

    def sample(self) -> None:
        try:
            # /proc's children files, not psutil's scan of every process: that scan cost
            # 2-3 ms a sample, a tenth of the CPU this measured under 8 workers.
            procs = proc_children(psutil.Process(os.getpid()))
        except psutil.Error:
            return
        for p in procs:
            try:
                key = (p.pid, p.create_time())
            except psutil.Error:
                continue
            cpu = proc_cpu_s(p.pid)
            if cpu is None:
                continue
            if key not in self.last:
                # Born during the test unless seen in the first sample (there before it).
                self.first[key] = cpu if self.samples == 0 else 0.0
            self.last[key] = cpu
        self.samples += 1

    def _loop(self) -> None:
        t0 = time.thread_time()
        while not self._stop.wait(self.interval_s):
            self.sample()
        self.sampler_s = time.thread_time() - t0

    def start(self) -> TreeCpu:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> float:
        """End sampling; the tree's core-seconds during the test."""
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()
        return sum(max(0.0, v - self.first[k]) for k, v in self.last.items())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None
                            ) -> Iterator[None]:
    """Around one test (set-up, call, teardown): its wall time, the pytest process's own CPU
    (`harness_s`, less the sampler's), the CPU its descendants spent (`tree_s`, sampled) and
    the CPU of the processes it reaped meanwhile (`reaped_s`, from rusage: a cross-check
    that misses nested VMs), appended as one line to $CPU_ENV."""
    path = os.environ.get(CPU_ENV)
    if not path:
        return (yield)
    own0, reaped0 = rusage_s(resource.RUSAGE_SELF), rusage_s(resource.RUSAGE_CHILDREN)
    tree = TreeCpu().start()
    t0 = time.monotonic()
    try:
        return (yield)
    finally:
        tree_s = tree.stop()
        line = json.dumps({
            "nodeid": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
            "wall_s": round(time.monotonic() - t0, 3),
            "harness_s": round(rusage_s(resource.RUSAGE_SELF) - own0 - tree.sampler_s, 3),
            "tree_s": round(tree_s, 3), "processes": len(tree.last),
            "sampler_s": round(tree.sampler_s, 3),
            "reaped_s": round(rusage_s(resource.RUSAGE_CHILDREN) - reaped0, 3)}) + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode())     # one write per line: workers share the file
            finally:
                os.close(fd)
        except OSError:
            pass


def read_scenario_cpu(report: Path) -> list[dict[str, Any]]:
    """The per-test lines the plugin wrote into `report` (a later line for a test wins)."""
    path = report / CPU_FILE
    rows: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue                        # a line cut by a killed run
            if isinstance(r, dict) and "nodeid" in r:
                r["core_s"] = round(r.get("harness_s", 0.0) + r.get("tree_s", 0.0), 3)
                rows[r["nodeid"]] = r
    return list(rows.values())
