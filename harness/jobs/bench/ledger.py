"""Benchmark of the process ledger: the CPU one sample costs, the sampler thread's CPU while
it samples N processes, and its detection latency from a zombie appearing to the ledger
seeing it. Prints figures; it is not a timed test. CPU is CPU time, not wall time, so a
loaded machine slows the figures less than it slows the clock.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from harness.common.wait import hold, wait_for
from harness.observe.processes import IDLE_INTERVAL_S, STABLE_AFTER_S, YOUNG_S, ProcessLedger

# A child with this many threads in all: the runtime's hosts and shims run 8 to 20, and the
# ledger reads the children list of each thread.
THREADED = ("import threading, time, sys\n"
            "for _ in range(int(sys.argv[1]) - 1):\n"
            "    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n"
            "time.sleep(600)\n")
# Samples timed while the processes are young: well inside YOUNG_S even with 100 processes.
YOUNG_SAMPLES = 10


@contextlib.contextmanager
def children(n_procs: int, threads: int) -> Iterator[list[subprocess.Popen]]:
    """N sleeping children of this process, each with `threads` threads (1: plain sleep)."""
    argv = (["sleep", "600"] if threads <= 1 else
            [sys.executable, "-c", THREADED, str(threads)])
    procs = [subprocess.Popen(argv) for _ in range(n_procs)]
    try:
        if threads > 1:
            wait_for(lambda: all(_threads(p.pid) >= threads for p in procs), 60,
                     f"{n_procs} children with {threads} threads each")
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def sample_cost(n_procs: int, threads: int, samples: int) -> tuple[float, float]:
    """CPU milliseconds of one ledger.sample(), called in this thread: while the processes
    are young (their command lines read again every sample, YOUNG_S) and once settled."""
    with children(n_procs, threads) as procs:
        ledger = ProcessLedger()
        ledger.own_children.update(p.pid for p in procs)
        ledger.sample()                 # the first sight reads command lines: not counted
        young = _cpu_ms_per_sample(ledger, YOUNG_SAMPLES)
        hold(YOUNG_S, "the processes to be settled in the ledger")
        return young, _cpu_ms_per_sample(ledger, samples)


def _cpu_ms_per_sample(ledger: ProcessLedger, samples: int) -> float:
    t_cpu = time.thread_time()
    for _ in range(samples):
        ledger.sample()
    return 1000 * (time.thread_time() - t_cpu) / samples


def overhead(n_procs: int, threads: int, seconds: float, interval_s: float,
             idle_s: float | None) -> dict[str, float]:
    """The sampler thread's CPU while it runs in the background."""
    with children(n_procs, threads) as procs:
        ledger = ProcessLedger(interval_s=interval_s, idle_interval_s=idle_s)
        ledger.own_children.update(p.pid for p in procs)
        t_wall = time.monotonic()
        ledger.start()
        sampler = ledger._thread
        clock = time.pthread_getcpuclockid(sampler.ident) if sampler and sampler.ident \
            else None
        hold(seconds, "the ledger sampling in the background")
        cpu = time.clock_gettime(clock) if clock is not None else float("nan")
        wall = time.monotonic() - t_wall
        n = len(ledger.samples)
        ledger.stop()
        return {"procs": n_procs, "threads": threads, "interval_s": interval_s,
                "samples": n, "cpu_s": cpu, "cpu_share_pct": 100 * cpu / wall,
                "core_s_per_min": 60 * cpu / wall, "ms_per_sample": 1000 * cpu / max(1, n)}


def detection_latency(trials: int, interval_s: float, idle_s: float | None) -> list[float]:
    """From a zombie appearing to the ledger seeing it, at a random phase of the sampler's
    cycle. With an idle interval, each zombie appears after a quiet spell (the sampler
    slowed down): the worst case."""
    out = []
    ledger = ProcessLedger(interval_s=interval_s, idle_interval_s=idle_s).start()
    try:
        for _ in range(trials):
            if idle_s is not None:
                # Quiet long enough to slow down, then at a random phase of its idle cycle.
                hold(STABLE_AFTER_S + idle_s * (2 + random.random()),
                     "a quiet tree, so the sampler has slowed")
            else:
                # Not right after the sample that saw the last zombie: a random phase.
                hold(interval_s * random.random(), "a random phase of the sampling cycle")
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


def _threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def main(args: argparse.Namespace) -> int:
    print(f"process ledger benchmark on {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"one sample() in this thread, CPU ms, median of {args.repeats} runs "
          f"({YOUNG_SAMPLES} samples young, {args.samples} settled):")
    for n in args.procs:
        young, settled = zip(*(sample_cost(n, args.threads, args.samples)
                               for _ in range(args.repeats)), strict=True)
        print(f"  {n:>4} procs x {max(1, args.threads)} threads: "
              f"young {statistics.median(young):.3f} ms, "
              f"settled {statistics.median(settled):.3f} ms "
              f"(min {min(settled):.3f}, max {max(settled):.3f})")
    modes = [("fixed", None), ("adaptive", args.idle_interval)]
    print(f"{'mode':>9} {'procs':>6} {'threads':>8} {'interval':>9} {'samples':>8} "
          f"{'cpu %':>7} {'core-s/min':>11} {'ms/sample':>10}")
    for label, idle in modes:
        for n in args.procs:
            r = overhead(n, args.threads, args.seconds, args.interval, idle)
            print(f"{label:>9} {r['procs']:>6} {max(1, r['threads']):>8} "
                  f"{r['interval_s']:>9.2f} {r['samples']:>8} {r['cpu_share_pct']:>7.2f} "
                  f"{r['core_s_per_min']:>11.3f} {r['ms_per_sample']:>10.3f}")
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
    p.add_argument("--threads", type=int, default=1,
                   help="threads in each child (above 1: a Python child, not sleep)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--samples", type=int, default=50,
                   help="sample() calls per measurement of one sample's CPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--idle-interval", type=float, default=IDLE_INTERVAL_S,
                   help="the adaptive sampler's interval once nothing has changed for a while")
    p.set_defaults(fn=main)
