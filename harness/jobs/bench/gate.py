"""`boxlite-chaos bench-gate`: the gate run serially and in parallel in one invocation.

Prints serial and parallel wall time, the gate's longest unit (one scenario, set-up to
teardown), the sum of the runtime's own waits (time inside runtime operations, from the
histories), the harness overhead per scenario (its wall time minus the time some runtime
operation was in flight), and where the CPU went: the machine's busy core-seconds, and
core-seconds per scenario and per family. A benchmark that prints figures, not a timed test.

Per-scenario CPU comes from harness.jobs.bench.cpu, loaded as a pytest plugin in the gate's
processes; the figures from harness.jobs.bench.figures. The whole gate's figure is read from
the machine's busy time (/proc/stat), which only an otherwise idle machine makes the gate's own.

Its own runner rather than pytest-benchmark: what is measured is a whole gate run in a pytest
subprocess (serial, then parallel), not a function timed in a loop.
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

from harness.common.paths import PROJECT
from harness.common.wait import hold
from harness.jobs.bench import cpu as scenario_cpu
from harness.jobs.bench.figures import (
    by_family,
    cpu_lines,
    cpu_table,
    longest_unit,
    scenario_figures,
    schedule_lines,
)
from harness.runtime.image import busybox_image
from harness.runtime.spec import DEFAULT_SPEC, ensure_runtime
from harness.session import schedule
from harness.session.pace import worker_count


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
            "-p", scenario_cpu.__name__, "-o", "testpaths=scenarios", "--chaos-report", str(report),
            "--chaos-record-durations", *extra]
    argv += ["-p", "no:xdist"] if workers == "1" else ["-n", workers, "--dist", "worksteal"]
    report.mkdir(parents=True, exist_ok=True)
    (report / scenario_cpu.CPU_FILE).unlink(missing_ok=True)
    busy0, tree0, t0 = machine_busy_s(), children_cpu_s(), time.monotonic()
    proc = subprocess.run(argv, cwd=PROJECT, capture_output=True, text=True,
                          env={**os.environ, "BOXLITE_CHAOS_REPORT": str(report),
                               scenario_cpu.CPU_ENV: str(report / scenario_cpu.CPU_FILE)})
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
        cpu[label] = scenario_cpu.read_scenario_cpu(base / label)
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
    for line in schedule_lines(cpu.get("serial", [])):
        print(line)
    worst = sorted(ref, key=lambda r: -r["overhead_s"])[:5]
    for r in worst:
        print(f"  {r['overhead_s']:6.2f}s overhead  {r['wall_s']:6.1f}s wall  {r['scenario']}")
    (base / "bench-gate.json").write_text(json.dumps(
        {"walls": walls, "runs": runs, "idle_busy_rate": idle_rate, "warm_setup_s": warm,
         "scenarios": figures, "scenario_cpu": cpu,
         "family_cpu": {k: by_family(v) for k, v in cpu.items()}}, indent=1))
    return 0


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
