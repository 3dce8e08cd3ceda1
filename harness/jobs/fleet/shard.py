"""Shards for CI runners: the K-th of N shares of a run's tests, the same on every runner.

Shares are balanced by the committed per-test durations (fixtures/durations.json, not a
runner's own cache: every runner must choose alike), longest first onto the least loaded
share; ties go by node id, so the choice depends only on the test ids and that file.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence

from harness.session import schedule


def parse_shard(text: str) -> tuple[int, int]:
    """'2/3' -> (2, 3); argparse.ArgumentTypeError unless 1 <= K <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shard: expected K/N with 1 <= K <= N (e.g. 2/3)")
    return int(m.group(1)), int(m.group(2))


def committed_estimates() -> dict[str, float]:
    try:
        data = json.loads(schedule.SEED.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, int | float)} \
        if isinstance(data, dict) else {}


def shares(nodeids: Sequence[str], n: int,
           table: Mapping[str, float] | None = None) -> list[list[str]]:
    """The N shares of `nodeids`, each in collection order."""
    table = committed_estimates() if table is None else table
    order = {nid: i for i, nid in enumerate(nodeids)}
    loads = [0.0] * n
    out: list[list[str]] = [[] for _ in range(n)]
    for nid in sorted(nodeids, key=lambda x: (-schedule.estimate(x, table), x)):
        k = min(range(n), key=lambda i: (loads[i], i))
        out[k].append(nid)
        loads[k] += schedule.estimate(nid, table)
    return [sorted(s, key=order.__getitem__) for s in out]


def shard_of(nodeids: Sequence[str], k: int, n: int,
             table: Mapping[str, float] | None = None) -> list[str]:
    """The K-th (1-based) of N shares."""
    return shares(nodeids, n, table)[k - 1]
