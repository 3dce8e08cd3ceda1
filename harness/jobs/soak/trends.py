"""Trend verdicts: each metric's slope per step within a host's life, judged by no_growth.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from harness.judge import checks
from harness.judge.checks import Verdict

WARMUP_STEPS = 10           # first samples of each trend segment: the runtime warming up

# Trend metrics: the sample key that segments them (a host's metrics restart with it) and the
# largest slope per step that is not growth. A 4-minute pilot on 0.10.8 (13 hosts, ~7 steps per
# fault cycle) measured 0.046 fds, 0.009 threads and 0.011 MiB per step within host lives:
# these bounds sit well above that noise and below one descriptor (or thread, or 350 KiB)
# leaked per fault cycle. Disk is judged as what no held record owns (a started box's folder
# alone is ~48 MiB: the copied shim and libkrunfw), so the mix of boxes is not read as growth.
TRENDS: dict[str, tuple[str | None, float]] = {
    "host_rss_mib": ("host_gen", 0.05),
    "host_fds": ("host_gen", 0.1),
    "host_threads": ("host_gen", 0.05),
    # A runtime clears unowned box folders when it starts: what leaks, leaks within a host's
    # life (a daemon's), so the home is judged per host too.
    "home_unheld_mib": ("host_gen", 0.1),
    "leftover_dirs": ("host_gen", 0.01),
    "zombies": (None, 0.01),
}


def within_segments(samples: Sequence[Mapping[str, Any]], metric: str, segment: str | None,
                    warmup: int = WARMUP_STEPS) -> tuple[list[tuple[float, float]], int]:
    """The metric against the step, centred within each segment (a host's life, or the whole
    run), after each segment's first `warmup` samples. Regressing the pooled points gives the
    within-segment slope: a leak that restarts with every host is still a slope, while the drop
    at a restart is not read as shrinkage. Returns the points and how many segments gave some."""
    groups: dict[Any, list[tuple[float, float]]] = {}
    for s in samples:
        value = s.get(metric)
        key = s.get(segment) if segment else 0
        if value is None or key is None or "step" not in s:
            continue
        groups.setdefault(key, []).append((float(s["step"]), float(value)))
    pooled: list[tuple[float, float]] = []
    used = 0
    for pts in groups.values():
        pts = pts[warmup:]
        if len(pts) < 2:
            continue
        used += 1
        mx, my = statistics.fmean(x for x, _ in pts), statistics.fmean(y for _, y in pts)
        pooled += [(x - mx, y - my) for x, y in pts]
    return pooled, used


def trend_verdicts(samples: Sequence[Mapping[str, Any]],
                   trends: Mapping[str, tuple[str | None, float]] = TRENDS,
                   warmup: int = WARMUP_STEPS) -> list[Verdict]:
    """checks.no_growth for every trend metric, by the within-segment slope per step."""
    out = []
    for metric, (segment, max_slope) in trends.items():
        pts, used = within_segments(samples, metric, segment, warmup)
        v = checks.no_growth(metric, pts, max_slope)
        v.evidence.update(segments=used, segmented_by=segment or "the whole run",
                          warmup_samples=warmup, unit="per step, centred within each segment")
        out.append(v)
    return out
