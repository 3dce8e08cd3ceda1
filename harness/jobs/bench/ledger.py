"""Benchmark of the process ledger: its CPU overhead while sampling N processes, and its
detection latency from a zombie appearing to the ledger seeing it. Prints figures; it is not
a timed test.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import time

from harness.common.wait import hold, wait_for
from harness.observe.processes import IDLE_INTERVAL_S, STABLE_AFTER_S, ProcessLedger


def overhead(n_procs: int, seconds: float, interval_s: float,
             idle_s: float | None) -> dict[str, float]:
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(n_procs)]
    try:
        ledger = ProcessLedger(interval_s=interval_s, idle_interval_s=idle_s)
        ledger.own_children.update(p.pid for p in procs)
        t_cpu, t_wall = time.process_time(), time.monotonic()
        ledger.start()
        time.sleep(seconds)
        ledger.stop()
        cpu, wall = time.process_time() - t_cpu, time.monotonic() - t_wall
        return {"procs": n_procs, "interval_s": interval_s, "samples": len(ledger.samples),
                "cpu_s": cpu, "cpu_share_pct": 100 * cpu / wall,
                "ms_per_sample": 1000 * cpu / max(1, len(ledger.samples))}
    finally:
        for p in procs:
            p.kill()
            p.wait()


def detection_latency(trials: int, interval_s: float, idle_s: float | None) -> list[float]:
    """From a zombie appearing to the ledger seeing it. With an idle interval, each zombie
    appears after a quiet spell (the sampler slowed down): the worst case."""
    out = []
    ledger = ProcessLedger(interval_s=interval_s, idle_interval_s=idle_s).start()
    try:
        for _ in range(trials):
            if idle_s is not None:
                # Quiet long enough to slow down, then at a random phase of its idle cycle.
                hold(STABLE_AFTER_S + idle_s * (2 + random.random()),
                     "a quiet tree, so the sampler has slowed")
            child = subprocess.Popen(["true"])
            ledger.own_children.add(child.pid)       # we reap it ourselves, after detection
            # The zombie exists from the child's exit; poll /proc to timestamp that moment.
            pid = child.pid
            wait_for(lambda pid=pid: _state(pid) == "Z", 5, "the child to become a zombie", 0.0005)
            t_zombie = time.monotonic()
            wait_for(lambda pid=pid: any(r.pid == pid and r.zombie_since is not None
                                         for r in ledger.zombie_records()), 5,
                     "the ledger to see the zombie", 0.0005)
            out.append(time.monotonic() - t_zombie)
            child.wait()
    finally:
        ledger.stop()
    return out


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"


def main(args: argparse.Namespace) -> int:
    print(f"process ledger benchmark on {os.cpu_count()} cores")
    modes = [("fixed", None), ("adaptive", args.idle_interval)]
    print(f"{'mode':>9} {'procs':>6} {'interval':>9} {'samples':>8} {'cpu %':>7} "
          f"{'ms/sample':>10}")
    for label, idle in modes:
        for n in args.procs:
            r = overhead(n, args.seconds, args.interval, idle)
            print(f"{label:>9} {r['procs']:>6} {r['interval_s']:>9.2f} {r['samples']:>8} "
                  f"{r['cpu_share_pct']:>7.2f} {r['ms_per_sample']:>10.2f}")
    for label, idle in modes:
        lat = sorted(detection_latency(args.trials, args.interval, idle))
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        what = f"interval {args.interval}s" + (
            "" if idle is None else f", {idle}s after {STABLE_AFTER_S}s quiet (worst case)")
        print(f"zombie detection latency, {label} ({what}), {len(lat)} trials: "
              f"p50 {1000 * statistics.median(lat):.0f} ms, p95 {1000 * p95:.0f} ms, "
              f"max {1000 * lat[-1]:.0f} ms")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bench-ledger", help="sampler CPU overhead and zombie detection latency")
    p.add_argument("--procs", type=int, nargs="+", default=[5, 25, 100])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--idle-interval", type=float, default=IDLE_INTERVAL_S,
                   help="the adaptive sampler's interval once nothing has changed for a while")
    p.set_defaults(fn=main)
