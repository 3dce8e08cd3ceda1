"""Longest-first scheduling of a parallel run: the long scenarios start at once, each on a
worker of its own, and the short ones fill in around them.

Why: most of a scenario's time is the runtime's own waiting (a 30 s guest-connect timeout, a
VM failing at ~17 s), so a parallel gate is only as short as its packing. In collection order
the longest scenarios (hostile families, the 25-failure host) came last and started a minute
or more in, and the gate took ~1.8 x its longest scenario.

How: pytest-xdist's worksteal scheduler hands worker k the k-th contiguous run of the
collection (sizes `remaining // workers_left`) and each worker runs its run in order, stealing
from the others' tails when done. So the collection is reordered on every worker, identically,
into those runs: items sorted longest first are dealt round-robin, so each run starts with
one of the longest scenarios and goes on shortest-last.

Estimates: seconds per test (setup + call + teardown) measured by earlier runs on this machine
and kept in the cache (`durations.json`), over a seed committed with the project
(`fixtures/durations.json`) so a fresh clone is ordered well too. The controller reads them
once and hands the same table to every worker (collections must be identical). An unknown
scenario counts as `UNKNOWN_SCENARIO_S`, anything else as 0.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from harness.common.paths import PROJECT, cache_root, locked

SEED = PROJECT / "fixtures" / "durations.json"
UNKNOWN_SCENARIO_S = 30.0
# A new measurement's weight against the kept estimate (smooths one loaded run).
BLEND = 0.5
# Tests shorter than this are not worth keeping: they order as 0 anyway.
KEEP_ABOVE_S = 0.5

T = TypeVar("T")


def cache_file() -> Path:
    return cache_root() / "durations.json"


def _read(path: Path) -> dict[str, float]:
    """A durations table; a missing or unreadable one is empty (it is only a hint)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items()
            if isinstance(k, str) and isinstance(v, int | float) and v >= 0}


def load_estimates() -> dict[str, float]:
    """The seed, overlaid by what this machine measured."""
    return {**_read(SEED), **_read(cache_file())}


def estimate(nodeid: str, table: Mapping[str, float]) -> float:
    if nodeid in table:
        return table[nodeid]
    return UNKNOWN_SCENARIO_S if nodeid.startswith("scenarios/") else 0.0


def run_sizes(n: int, workers: int) -> list[int]:
    """The contiguous run of the collection worksteal sends each worker first."""
    sizes, left = [], n
    for k in range(workers):
        size = left // (workers - k)
        sizes.append(size)
        left -= size
    return sizes


def longest_first(items: Sequence[T], ids: Sequence[str], table: Mapping[str, float],
                  workers: int) -> list[T]:
    """`items` (named by `ids`) reordered into the `workers` runs worksteal will send: each
    timed item, longest first, joins the run with room whose estimated total is least (so
    every run starts with one of the longest); untimed items (estimate 0) fill the room left,
    in collection order so modules stay together. Ties keep collection order."""
    if workers <= 1 or len(items) <= 1:
        return list(items)
    est = [estimate(i, table) for i in ids]
    sizes = run_sizes(len(items), workers)
    runs: list[list[int]] = [[] for _ in sizes]
    load = [0.0] * workers
    for i in sorted((i for i in range(len(items)) if est[i] > 0), key=lambda i: (-est[i], i)):
        k = min((k for k in range(workers) if len(runs[k]) < sizes[k]),
                key=lambda k: (load[k], k))
        runs[k].append(i)
        load[k] += est[i]
    k = 0
    for i in (i for i in range(len(items)) if est[i] <= 0):
        while len(runs[k]) >= sizes[k]:
            k += 1
        runs[k].append(i)
    return [items[i] for run in runs for i in run]


def record(durations: Mapping[str, float], path: Path | None = None) -> Path:
    """Blend measured `durations` (nodeid → seconds) into the cache, atomically."""
    path = path or cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):
        table = _read(path)
        for nodeid, secs in durations.items():
            if secs < KEEP_ABOVE_S and nodeid not in table:
                continue
            old = table.get(nodeid)
            table[nodeid] = round(secs if old is None else (1 - BLEND) * old + BLEND * secs, 2)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".durations-")
        with os.fdopen(fd, "w") as fh:
            json.dump(dict(sorted(table.items())), fh, indent=0)
        os.replace(tmp, path)
    return path
