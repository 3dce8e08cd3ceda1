"""The figures `bench-gate` prints, from what a gate run left: each scenario's wall time split
into runtime operations, observation windows and harness overhead (from its history), and the
lines on where the CPU went, per family and per scenario, against the machine's busy time.

Plain interval arithmetic and f-strings rather than a data-frame or table library: the rows
are a few hundred, and the harness keeps its dependencies to what it runs on.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Any

from harness.observe.history import read_history

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


def makespan(walls: list[float], workers: int) -> float:
    """Seconds a schedule takes when `workers` take the units (`walls`, seconds each, as
    measured alone) longest first, each the next free worker: the scheduler's own order
    (harness.session.schedule). An estimate for a machine whose CPU does not bind, such as a
    larger one: its floor is the longest unit. Raises ValueError for fewer than 1 worker."""
    if workers < 1:
        raise ValueError(f"{workers} workers cannot take a unit")
    free = [0.0] * workers
    for wall in sorted(walls, reverse=True):
        heapq.heappush(free, heapq.heappop(free) + wall)
    return max(free)


def schedule_lines(rows: list[dict[str, Any]], worker_counts: tuple[int, ...] = (8, 16, 20, 24)
                   ) -> list[str]:
    """What the serial run's units (Docker's reference scenarios aside) would take on a
    larger machine: the longest-first makespan per number of workers, and the cores their
    CPU needs to keep up. Estimates, not measurements: a unit alone is its fastest."""
    units = [r for r in rows if not is_docker(r["nodeid"])]
    if not units:
        return []
    walls = [r["wall_s"] for r in units]
    core_s = sum(r["core_s"] for r in units)
    spans = ", ".join(f"{n} -> {makespan(walls, n):.1f}s" for n in worker_counts)
    return [f"schedule estimate, Docker aside ({len(units)} units, longest {max(walls):.1f}s, "
            f"{core_s:.1f} core-s): workers {spans}; at the longest unit's pace that CPU "
            f"keeps {core_s / max(walls):.1f} cores busy"]


def is_docker(nodeid: str) -> bool:
    """A Docker reference scenario (the conformance pattern against Docker)."""
    return "[docker" in nodeid
