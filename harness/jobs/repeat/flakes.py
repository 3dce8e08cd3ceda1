"""`gate --repeat N`: the gate run N times against one runtime, and how stable its verdicts were.

Each run is a whole gate in its own process and folder (`run-1` … `run-N`), so no state
carries from one to the next but the runtime's own caches; the stability page compares them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from harness.jobs.repeat.stability import build_stability, render_stability_table


def gate_argv(args: argparse.Namespace, report: Path, seed: int) -> list[str]:
    """The command line of one run of the repeat: the same gate, into its own folder."""
    argv = [sys.executable, "-m", "harness.cli", "gate", "--runtime", args.runtime,
            "--report", str(report), "--seed", str(seed), "-n", str(args.workers)]
    for name in args.scenario or ():
        argv += ["--scenario", name]
    if args.k:
        argv += ["-k", args.k]
    return argv


def repeat_gate(args: argparse.Namespace, folder: Path, seed: int) -> int:
    """Run the gate `args.repeat` times into `folder/run-K`, then write the stability page
    (stability.json, stability.html) and print its table. Returns 0 when every run was green
    and no verdict changed between runs, 1 otherwise. Every run uses `seed`."""
    runs = []
    for k in range(1, args.repeat + 1):
        run = folder / f"run-{k}"
        t0 = time.monotonic()
        print(f"boxlite-chaos gate --repeat: run {k} of {args.repeat} into {run}", flush=True)
        rc = subprocess.call(gate_argv(args, run, seed))
        print(f"boxlite-chaos gate --repeat: run {k} exit {rc} after "
              f"{time.monotonic() - t0:.0f}s", flush=True)
        runs.append(run)
        if rc not in (0, 1):
            # Not a verdict (usage, setup, interrupted): the runs after it would say the same.
            print(f"boxlite-chaos gate --repeat: run {k} did not judge (exit {rc}); stopping",
                  file=sys.stderr)
            return rc
    data = build_stability(folder, runs)
    print(render_stability_table(data))
    print(f"stability: {folder / 'stability.html'}")
    flakes = data.get("flakes") or []
    green = all(r.get("green") for r in data.get("runs", []))
    return 0 if green and not flakes else 1
