"""`boxlite-chaos bench-gate`: the gate run serially and in parallel in one invocation.

Prints serial and parallel wall time, the longest single scenario, the sum of the runtime's
own waits (time inside runtime operations, from the histories), and the harness overhead per
scenario (its wall time minus the time some runtime operation was in flight). A benchmark
that prints figures, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import schedule
from harness.history import read_history
from harness.image import busybox_image
from harness.runtime.spec import DEFAULT_SPEC, ensure_runtime
from harness.wait import hold

PROJECT = Path(__file__).resolve().parent.parent
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
            "-o", "testpaths=scenarios", "--chaos-report", str(report),
            "--chaos-record-durations", *extra]
    argv += ["-p", "no:xdist"] if workers == "1" else ["-n", workers, "--dist", "worksteal"]
    busy0, tree0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True,
                          env={**os.environ, "BOXLITE_CHAOS_REPORT": str(report)})
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
              idle_rate: float) -> list[str]:
    """Where the CPU went, and how long that much work takes on this machine's cores at
    100%. It counts the machine's busy time less its load before the gate: the runtime's
    processes, and the kernel's work for them (nested virtualization, disk images), which no
    rusage of ours sees (the gate's reaped tree is shown too; it misses that kernel work).
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
    floor = gate_busy / cores
    lines.append(f"{'':>8}   that work on {cores} cores at 100%: {floor:.1f}s = "
                 f"{floor / longest_s:.2f} x the longest scenario")
    return lines


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
    for label, workers in (("serial", "1"), ("parallel", args.workers)):
        if label == "serial" and args.skip_serial:
            continue
        runs[label] = run_gate(base / label, workers, extra)
        figures[label] = scenario_figures(base / label)
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
    if "parallel" in walls:
        print(f"parallel / longest: {walls['parallel'] / longest['wall_s']:.2f} (target <= 1.5)")
    cores = os.cpu_count() or 1
    for label, run in runs.items():
        for line in cpu_lines(label, run, cores, longest["wall_s"], idle_rate):
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
         "scenarios": figures}, indent=1))
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
