"""How many scenarios a run overlaps: the gate's worker count, chosen from the machine's cores
and available memory when `-n` is not given (an explicit `-n` always wins).

Why two workers per core: a scenario's time is mostly the runtime's own waiting (a 30 s
guest-connect timeout, a VM failing at ~17 s), not CPU. On the 2-core machine this was
measured on (nested PVM /dev/kvm, where guests never boot), each VM spins a core until it dies
(~9 core-seconds each), yet four workers on two cores kept the gate green while it ran at a
fraction of its serial time: while one worker's VM spins, the others wait on timeouts. More
than two per core would pile the spinning VMs up and stretch the very bounds the checks judge.

Why memory: every worker holds its pytest process, its runtime hosts and their VMs at once.
One init-tier scenario (guest_hang at boot, one host and one VM) peaked at 153 MiB PSS summed
over the worker and its descendants (181 MiB RSS; the worker 88 MiB PSS, the host 35, the VM
29: its guest never ran, so its memory was never touched), sampled every 0.25 s from /proc on
2026-12-06; a hostile family (hostile_options[process-cmd_user], one box per case) peaked at
165 MiB PSS (194 MiB RSS). A guest that boots touches its memory, and some scenarios run two
hosts, so a worker is allowed MIB_PER_WORKER, about three times those peaks.

The rule: PER_CORE workers per usable core (os.sched_getaffinity), no more than the available
memory (psutil's `available`, less HEADROOM_MIB for the controller and the rest of the machine)
holds at MIB_PER_WORKER each, at least 1 and at most MAX_WORKERS. On 2 cores with ~23 GiB
available that is 4, the count the gate has run at.

`python -m harness.session.pace` prints the chosen count on stdout and why on stderr (the
`go` script's `./go test` asks it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import psutil

PER_CORE = 2
MIB_PER_WORKER = 512
HEADROOM_MIB = 1024
MAX_WORKERS = 16


def choose_workers(cores: int, available_mib: float) -> int:
    """Workers for a machine with `cores` usable cores and `available_mib` MiB of memory
    available: PER_CORE per core, capped by what the memory holds (less HEADROOM_MIB) at
    MIB_PER_WORKER each, at least 1 and at most MAX_WORKERS. Pure; raises nothing."""
    by_cores = PER_CORE * max(cores, 1)
    by_memory = int(max(available_mib - HEADROOM_MIB, 0) // MIB_PER_WORKER)
    return max(1, min(by_cores, by_memory, MAX_WORKERS))


@dataclass(frozen=True)
class Pace:
    """The chosen worker count and the machine figures it came from."""

    workers: int
    cores: int
    available_mib: int

    def describe(self) -> str:
        """One line: the count and why, e.g. '4 workers: 2 cores x 2 (memory: 23180 MiB
        available holds 43 at 512 MiB each)'."""
        by_memory = int(max(self.available_mib - HEADROOM_MIB, 0) // MIB_PER_WORKER)
        return (f"{self.workers} worker{'s' if self.workers != 1 else ''}: {self.cores} "
                f"core{'s' if self.cores != 1 else ''} x {PER_CORE} (memory: "
                f"{self.available_mib} MiB available holds {by_memory} at {MIB_PER_WORKER} MiB "
                f"each; at most {MAX_WORKERS}; an explicit -n wins)")


def machine_pace() -> Pace:
    """The pace for this machine: its usable cores (os.sched_getaffinity of this process)
    and its available memory now (psutil.virtual_memory().available)."""
    cores = len(os.sched_getaffinity(0))
    available_mib = int(psutil.virtual_memory().available // 2**20)
    return Pace(choose_workers(cores, available_mib), cores, available_mib)


def workers_or_chosen(given: str | None, say: Callable[[str], None] = print) -> str:
    """`given` (a `-n` value from the command line) when there is one; else the count chosen
    for this machine, said in one line."""
    if given is not None:
        return given
    pace = machine_pace()
    say(f"boxlite-chaos: {pace.describe()}")
    return str(pace.workers)


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


def main() -> int:
    pace = machine_pace()
    print(pace.workers)
    print(f"boxlite-chaos: {pace.describe()}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
