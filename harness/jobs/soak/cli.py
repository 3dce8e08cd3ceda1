"""`boxlite-chaos soak`: a long stateful fault schedule with trend verdicts, from the command
line.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from harness.common.errors import HarnessError, SetupError
from harness.jobs.soak.driver import Budget, Progress
from harness.jobs.soak.model import MAX_BOXES, MAX_STARTING
from harness.jobs.soak.run import run_soak
from harness.runtime.spec import DEFAULT_SPEC


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '1.5h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--duration", type=parse_duration, help="run this long (90s, 30m, 2h)")
    how.add_argument("--cycles", type=int, help="run until this many fault cycles completed")
    how.add_argument("--replay", metavar="SCHEDULE",
                     help="take a recorded schedule.json's steps instead of generating")
    p.add_argument("--runtime", default=DEFAULT_SPEC,
                   help=f"runtime spec under test (default {DEFAULT_SPEC})")
    p.add_argument("--report", help="report folder (default reports/soak-<time>)")
    p.add_argument("--seed", type=int, help="seed of the driver's choices (default: random)")
    p.add_argument("--bench", action="store_true",
                   help="print fault cycles per hour and the harness's CPU share")
    p.add_argument("--max-boxes", type=int, default=MAX_BOXES)
    p.add_argument("--max-starting", type=int, default=MAX_STARTING)
    p.add_argument("--shrink-s", type=float, default=600.0,
                   help="seconds for shrinking failures, in all (0: do not shrink)")


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what no soak can run, here or on hosts: raises SetupError for --cycles below 1."""
    if args.cycles is not None and args.cycles < 1:
        raise SetupError("--cycles must be at least 1")


def cmd_soak(args: argparse.Namespace) -> int:
    """One soak on this machine (across hosts, the CLI hands it to harness.jobs.fleet.soak)."""
    check_arguments(args)
    res = run_soak(Budget(args.duration, args.cycles), args.runtime,
                   Path(args.report) if args.report else None, args.seed,
                   max_boxes=args.max_boxes, max_starting=args.max_starting,
                   shrink_s=args.shrink_s, replay=Path(args.replay) if args.replay else None,
                   progress=Progress())
    if args.bench:
        b = res.bench
        print(f"soak bench: {b['cycles']} fault cycles in {b['wall_s']:.0f} s = "
              f"{b['cycles_per_hour']} cycles/hour on {b['cores']} cores (load average "
              f"{b['load_average'][0]}); harness CPU {b['harness_cpu_s']} s = "
              f"{b['harness_cpu_pct_of_one_core']}% of one core, "
              f"{b['harness_cpu_pct_of_machine']}% of the machine")
    return 1 if res.failed else 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `boxlite-chaos soak --duration D | --cycles N | --replay SCHEDULE [...]`."""
    p = subparsers.add_parser("soak", help="a long stateful fault schedule with trend verdicts")
    add_arguments(p)
    p.set_defaults(fn=cmd_soak)
    return p


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.jobs.soak.cli",
                                description=__doc__.splitlines()[0])
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_soak(args)
    except HarnessError as exc:
        print(f"boxlite-chaos: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
