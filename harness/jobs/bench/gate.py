"""`boxlite-chaos bench-gate`: the gate run serially and in parallel in one invocation.

Prints serial and parallel wall time, the gate's longest unit (one scenario, set-up to
teardown), the sum of the runtime's own waits (time inside runtime operations, from the
histories), the harness overhead per scenario (its wall time minus the time some runtime
operation was in flight), and where the CPU went: the machine's busy core-seconds, and
core-seconds per scenario and per family. A benchmark that prints figures, not a timed test.

Per-scenario CPU comes from this module loaded as a pytest plugin in the gate's processes
(`-p harness.jobs.bench.gate`, only when $BOXLITE_CHAOS_BENCH_CPU names a file). Around each test
it reads the pytest process's own rusage (the harness: sampler, checks, hypothesis) and, on
a thread every 0.2 s, the CPU /proc shows for each of its descendants: the scenario's hosts,
bwraps, shims and VMs (all under the harness, a subreaper), dockerd and its helpers. It
misses a process's CPU after its last reading (up to 0.2 core-s each), processes that lived
less than 0.2 s, and the kernel's work that no process is charged for (threads of its own,
interrupts); its own CPU is reported apart. The rusage of what the harness reaped is written
too, as a cross-check: it misses nested VMs, whose spinning shows in /proc while they live
but does not reach their reaper's rusage. The whole gate's figure is read from the machine's
busy time (/proc/stat), which only an otherwise idle machine makes the gate's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from harness.common.paths import PROJECT
from harness.common.wait import hold
from harness.faults.shim import proc_children
from harness.observe.history import read_history
from harness.runtime.image import busybox_image
from harness.runtime.spec import DEFAULT_SPEC, ensure_runtime
from harness.session import schedule

# Operations whose time is the runtime's (or its process's) own, not the harness's: the
# runtime host's, and dockerd's as the Docker conformance target logs them.
RUNTIME_OPS = {"create", "start", "stop", "remove", "exec", "get_info", "list_info",
               "shutdown", "host_start", "spawn_child", "wait_child",
               "api", "dockerd_start", "containerd_gone"}
# Windows in which a check only watches the runtime (for a zombie to outlast its grace).
WINDOW_OPS = frozenset({"observe_window"})


def op_intervals(events: list[dict[str, Any]],
                 ops: set[str] | frozenset[str] = frozenset(RUNTIME_OPS)
                 ) -> list[tuple[float, float]]:
    """[invoke, reply] intervals of the operations named in `ops`, plus signal → host exit
    (when `ops` holds the runtime's)."""
    open_ops: dict[tuple[str, Any], float] = {}
    out = []
    signals = bool(ops & RUNTIME_OPS)
    for e in events:
        key = (e.get("host"), e.get("req") if e.get("op") != "host_start" else "start")
        if e["kind"] == "invoke" and e.get("op") in ops:
            open_ops[key] = e["t"]
        elif e["kind"] in ("ok", "fail") and key in open_ops:
            out.append((open_ops.pop(key), e["t"]))
        elif signals and e["kind"] == "fault" and e.get("fault") == "signal_host":
            open_ops[(e.get("host"), "exit")] = e["t"]
        elif e["kind"] == "observe" and e.get("what") == "host_exit":
            # Whatever the host still had in flight was inside the runtime until it exited
            # (a start cut short by SIGTERM never answers).
            for key in [k for k in open_ops if k[0] == e.get("host")]:
                out.append((open_ops.pop(key), e["t"]))
    return out


def union_length(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def scenario_figures(run: Path) -> list[dict[str, Any]]:
    """Per scenario: its wall time (the whole test: the history opens in set-up and ends in
    teardown), the union of runtime operations, of observation windows (time a check gives
    the runtime to reap or clean up), and the overhead: wall minus the union of both."""
    rows = []
    results = run / "results.jsonl"
    if not results.is_file():
        return rows
    for line in results.read_text().splitlines():
        r = json.loads(line)
        hist = Path(r["workdir"]) / "history.jsonl"
        try:
            events = read_history(hist)
        except Exception:  # noqa: BLE001 - a scenario without history has no split
            events = []
        wall = max((e["t"] for e in events), default=r["duration_s"])
        ops = op_intervals(events)
        windows = op_intervals(events, WINDOW_OPS)
        both = union_length(ops + windows)
        rows.append({"scenario": r["nodeid"], "outcome": r["outcome"], "wall_s": wall,
                     "runtime_s": union_length(ops), "windows_s": both - union_length(ops),
                     "overhead_s": max(0.0, wall - both)})
    return rows


# -- per-scenario CPU: this module as a pytest plugin in the gate's processes ------------------

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


HOSTILE_TEST = "scenarios/inputs/test_hostile_options.py::test_hostile_options"


def family_of(nodeid: str) -> str:
    """A scenario's family: its test function (every parameter together), except that the
    hostile shards (`test_hostile_options[process-entrypoint]`) group by hostile family."""
    base, _, params = nodeid.partition("[")
    if base == HOSTILE_TEST and params:
        return f"{base}[{params.split('-', 1)[0].rstrip(']')}]"
    return base


def by_family(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per family: scenarios, core-seconds (harness and reaped), summed and longest wall."""
    fams: dict[str, dict[str, Any]] = {}
    for r in rows:
        f = fams.setdefault(family_of(r["nodeid"]), {
            "family": family_of(r["nodeid"]), "scenarios": 0, "core_s": 0.0,
            "harness_s": 0.0, "tree_s": 0.0, "reaped_s": 0.0, "wall_s": 0.0,
            "longest_s": 0.0})
        f["scenarios"] += 1
        for k in ("core_s", "harness_s", "tree_s", "reaped_s", "wall_s"):
            f[k] += r.get(k, 0.0)
        f["longest_s"] = max(f["longest_s"], r.get("wall_s", 0.0))
    return sorted(fams.values(), key=lambda f: -f["core_s"])


def cpu_table(label: str, rows: list[dict[str, Any]], run: dict[str, Any]) -> list[str]:
    """Core-seconds per family and per scenario, with what they add up to against the
    machine's busy time (the difference: the kernel's work no process is charged for, the
    pytest controller, other load)."""
    if not rows:
        return [f"{label:>8} per-scenario CPU: none recorded"]
    total = sum(r["core_s"] for r in rows)
    lines = [f"{label:>8} core-seconds by scenario (its pytest process + its descendants "
             f"from /proc: hosts, bwraps, shims, VMs, dockerd): {total:.1f} in all, "
             f"{sum(r['harness_s'] for r in rows):.1f} of it the harness's, "
             f"{sum(r.get('sampler_s', 0.0) for r in rows):.1f} more the bench's sampler; "
             f"machine busy {run['machine_busy_s']:.1f} (the rest: the kernel's own work, "
             f"the pytest controller, short-lived processes, other load)",
             f"{'':>8}   per family ({len(by_family(rows))}):"]
    for f in by_family(rows):
        lines.append(f"{'':>8}   {f['core_s']:7.1f} core-s  {f['harness_s']:6.1f} harness  "
                     f"{f['scenarios']:3d} unit(s), longest {f['longest_s']:5.1f}s  "
                     f"{f['family']}")
    lines.append(f"{'':>8}   per scenario ({len(rows)}):")
    for r in sorted(rows, key=lambda r: -r["core_s"]):
        lines.append(f"{'':>8}   {r['core_s']:7.1f} core-s  {r['harness_s']:6.1f} harness  "
                     f"{r['wall_s']:6.1f}s wall  {r['nodeid']}")
    return lines


def longest_unit(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The test with the longest wall time, set-up to teardown."""
    return max(rows, key=lambda r: r["wall_s"]) if rows else None


def machine_busy_s() -> float:
    """Core-seconds this machine has spent busy since boot (/proc/stat, all CPUs)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def harness_cpu_s(report: Path) -> float | None:
    """The pytest processes' own CPU (each wrote its line at session end)."""
    # Imported here: the plugin pulls in hypothesis, which `gate` (pytest in this process)
    # must import itself for its assertion rewriting.
    from harness.plugin import HARNESS_CPU
    path = report / HARNESS_CPU
    if not path.is_file():
        return None
    return sum(json.loads(line)["cpu_s"] for line in path.read_text().splitlines() if line)


def run_gate(report: Path, workers: str, extra: list[str]) -> dict[str, Any]:
    """Run the gate; its wall time and where the CPU went: the machine's busy core-seconds,
    the gate's process tree (pytest and everything it reaped: hosts, shims, VMs, dockerd;
    the harness is a subreaper), and the harness's share of it."""
    argv = [sys.executable, "-m", "pytest", "scenarios", "-q", "-p", "no:cacheprovider",
            "-p", __name__, "-o", "testpaths=scenarios", "--chaos-report", str(report),
            "--chaos-record-durations", *extra]
    argv += ["-p", "no:xdist"] if workers == "1" else ["-n", workers, "--dist", "worksteal"]
    report.mkdir(parents=True, exist_ok=True)
    (report / CPU_FILE).unlink(missing_ok=True)
    busy0, tree0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True,
                          env={**os.environ, "BOXLITE_CHAOS_REPORT": str(report),
                               CPU_ENV: str(report / CPU_FILE)})
    wall = time.monotonic() - t0
    busy, tree = machine_busy_s() - busy0, children_cpu_s() - tree0
    report.mkdir(parents=True, exist_ok=True)
    (report / "pytest.log").write_text(proc.stdout + proc.stderr)
    harness = harness_cpu_s(report)
    return {"wall_s": wall, "returncode": proc.returncode, "machine_busy_s": busy,
            "gate_cpu_s": tree, "harness_cpu_s": harness,
            "runtime_cpu_s": None if harness is None else max(0.0, tree - harness)}


def idle_busy_rate(seconds: float = 5.0) -> float:
    """Busy core-seconds per second of this machine before the gate runs (other load)."""
    b0 = machine_busy_s()
    hold(seconds, "a reading of the machine's CPU before the gate (its other load)")
    return (machine_busy_s() - b0) / seconds


def cpu_lines(label: str, run: dict[str, Any], cores: int, longest_s: float,
              idle_rate: float, scenario_core_s: float | None = None) -> list[str]:
    """Where the CPU went, and how long that much work takes on this machine's cores at
    100% (the CPU floor). It counts the machine's busy time less its load before the gate:
    the runtime's processes, and the kernel's work for them (nested virtualization, disk
    images), which no process of ours is charged for. On a machine already busy before the
    gate (over LOADED_BEFORE of its cores) that split means nothing: the sum over scenarios
    (`scenario_core_s`, from /proc; a lower bound, it misses the kernel's share) stands in.
    Not a fixed floor: a VM that spins until it fails takes what CPU it gets (the serial run
    burns more core-seconds than the parallel one), but a run at ~85% busy is CPU-bound."""
    wall, busy = run["wall_s"], run["machine_busy_s"]
    gate_busy = max(0.0, busy - idle_rate * wall)
    lines = [f"{label:>8} CPU: machine busy {busy:.1f} of {wall * cores:.1f} core-s "
             f"({100 * busy / (wall * cores):.0f}%), {gate_busy:.1f} of it the gate's "
             f"(less {idle_rate:.2f} core-s/s of load before the gate)"]
    if run["harness_cpu_s"] is not None:
        lines.append(f"{'':>8}   harness (the pytest processes) {run['harness_cpu_s']:.1f} core-s;"
                     f" runtime and the kernel's work for it "
                     f"{max(0.0, gate_busy - run['harness_cpu_s']):.1f} (processes reaped "
                     f"through the harness: {run['gate_cpu_s']:.1f})")
    gate_core_s, source = gate_busy, "machine busy less the load before"
    if idle_rate > LOADED_BEFORE * cores:
        lines.append(f"{'':>8}   the machine was {100 * idle_rate / cores:.0f}% busy before the "
                     f"gate: its busy time cannot be split between the gate and that load")
        if scenario_core_s is not None:
            gate_core_s, source = scenario_core_s, "sum over scenarios, a lower bound"
    floor = gate_core_s / cores
    lines.append(f"{'':>8}   that work on {cores} cores at 100% (the CPU floor): {floor:.1f}s"
                 f" = {floor / longest_s:.2f} x the longest scenario; wall / floor "
                 f"{wall / floor if floor else float('inf'):.2f} (target <= 1.1 in parallel)")
    lines.append(f"{'':>8}   the gate's core-seconds: {gate_core_s:.1f} ({source}; target on "
                 f"2 cores: <= {CORE_S_TARGET:.0f})")
    return lines


# Above this share of the cores busy before the gate, its busy time is not the gate's.
LOADED_BEFORE = 0.25
# The target for the whole gate on a 2-core machine.
CORE_S_TARGET = 200.0


def main(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    ensure_runtime(args.runtime)
    busybox_image()
    warm = time.monotonic() - t0
    base = Path(args.report).resolve() if args.report else \
        PROJECT / "reports" / f"bench-gate-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    extra = ["--runtime", args.runtime, "--chaos-order", args.order] + \
        (["-k", args.k] if args.k else [])
    print(f"bench-gate: runtime {args.runtime}, {os.cpu_count()} cores, report {base}")
    print(f"virtualenv + image ready in {warm:.2f}s (a warm cache builds nothing)")
    known = schedule.load_estimates()
    print(f"parallel order: {args.order}" + (
        f" ({len(known)} tests with estimates; {schedule.cache_file()})"
        if args.order == "longest-first" else ""))
    idle_rate = idle_busy_rate()
    print(f"machine load before the gate: {idle_rate:.2f} busy core-s per second")
    runs: dict[str, dict[str, Any]] = {}
    figures = {}
    cpu: dict[str, list[dict[str, Any]]] = {}
    for label, workers in (("serial", "1"), ("parallel", args.workers)):
        if label == "serial" and args.skip_serial:
            continue
        runs[label] = run_gate(base / label, workers, extra)
        figures[label] = scenario_figures(base / label)
        cpu[label] = read_scenario_cpu(base / label)
        print(f"{label:>8} (-n {workers}): {runs[label]['wall_s']:7.1f}s wall, "
              f"{len(figures[label])} scenarios, pytest exit {runs[label]['returncode']}",
              flush=True)
    walls = {k: v["wall_s"] for k, v in runs.items()}
    ref = figures.get("serial") or figures["parallel"]
    longest = max(ref, key=lambda r: r["wall_s"])
    waits = sum(r["runtime_s"] for r in ref)
    windows = sum(r["windows_s"] for r in ref)
    over = [r["overhead_s"] for r in ref]
    print(f"longest scenario: {longest['wall_s']:.1f}s ({longest['scenario']})"
          + (" [serial run]" if "serial" in figures else " [parallel run: stretched by "
             "contention; run without --skip-serial for the real figure]"))
    for label, rows in cpu.items():
        unit = longest_unit(rows)
        if unit:
            print(f"{label:>8} run's longest unit (set-up to teardown): {unit['wall_s']:.1f}s "
                  f"({unit['nodeid']})")
    if "parallel" in walls:
        print(f"parallel / longest: {walls['parallel'] / longest['wall_s']:.2f} (target <= 1.5)")
    cores = os.cpu_count() or 1
    for label, run in runs.items():
        rows = cpu.get(label, [])
        for line in cpu_lines(label, run, cores, longest["wall_s"], idle_rate,
                              sum(r["core_s"] for r in rows) if rows else None):
            print(line)
        for line in cpu_table(label, cpu.get(label, []), run):
            print(line)
    print(f"sum of the runtime's own waits: {waits:.1f}s in operations + {windows:.1f}s in "
          f"observation windows, over {len(ref)} scenarios (sum of walls "
          f"{sum(r['wall_s'] for r in ref):.1f}s)")
    print(f"harness overhead per scenario ({'serial' if 'serial' in figures else 'parallel'} "
          f"run): mean {statistics.mean(over):.2f}s, median {statistics.median(over):.2f}s, "
          f"p90 {sorted(over)[int(0.9 * (len(over) - 1))]:.2f}s, max {max(over):.2f}s; "
          f"{sum(o > 1.0 for o in over)} of {len(over)} over 1 s (target <= 1 s)")
    if "serial" in figures and "parallel" in figures:
        plong = max(figures["parallel"], key=lambda r: r["wall_s"])
        pover = [r["overhead_s"] for r in figures["parallel"]]
        print(f"in the parallel run: longest {plong['wall_s']:.1f}s ({plong['scenario']}); "
              f"overhead median {statistics.median(pover):.2f}s, max {max(pover):.2f}s "
              f"(harness code waiting for a CPU counts as overhead)")
    worst = sorted(ref, key=lambda r: -r["overhead_s"])[:5]
    for r in worst:
        print(f"  {r['overhead_s']:6.2f}s overhead  {r['wall_s']:6.1f}s wall  {r['scenario']}")
    (base / "bench-gate.json").write_text(json.dumps(
        {"walls": walls, "runs": runs, "idle_busy_rate": idle_rate, "warm_setup_s": warm,
         "scenarios": figures, "scenario_cpu": cpu,
         "family_cpu": {k: by_family(v) for k, v in cpu.items()}}, indent=1))
    return 0


def worker_count(text: str) -> str:
    """argparse type of `-n`: a positive number of workers, or pytest-xdist's `auto` /
    `logical`. Raises argparse.ArgumentTypeError otherwise: `-n 0` would be a serial gate
    under the parallel run's name."""
    if text in ("auto", "logical"):
        return text
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of workers (a positive integer, or auto)") from None
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"{n} workers cannot run the gate; give 1 or more (1 runs it serially)")
    return str(n)


def add_parser(sub: Any) -> None:
    p = sub.add_parser("bench-gate", help="the gate serially and in parallel, with figures")
    p.add_argument("--runtime", default=DEFAULT_SPEC)
    p.add_argument("-n", "--workers", type=worker_count, default="8",
                   help="parallel workers (default 8)")
    p.add_argument("-k", help="pytest -k expression (a subset of the gate)")
    p.add_argument("--skip-serial", action="store_true")
    p.add_argument("--order", choices=("longest-first", "collection"), default="longest-first",
                   help="parallel order (collection: the old order, to compare)")
    p.add_argument("--report")
    p.set_defaults(fn=main)
